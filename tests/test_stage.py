import json
import shutil
from pathlib import Path

import pytest

from cfcl.config import StrictModel
from cfcl.errors import StoreError
from cfcl.stage import fingerprint, is_up_to_date, start_stage


class Cfg(StrictModel):
    value: int = 1


def test_stage_writes_config_and_manifest(tmp_path):
    out = tmp_path / "stage"
    stage = start_stage("demo", out, Cfg(value=3))
    running = json.loads((out / "manifest.json").read_text())
    assert running["status"] == "running"
    assert "value: 3" in (out / "config.yaml").read_text()
    assert not is_up_to_date(out, Cfg(value=3), "demo")
    stage.finish(outputs={"x": 1})
    done = json.loads((out / "manifest.json").read_text())
    assert done["status"] == "complete" and done["timings"]["total"] >= 0
    assert is_up_to_date(out, Cfg(value=3), "demo")
    assert not is_up_to_date(out, Cfg(value=4), "demo")
    assert not is_up_to_date(out, Cfg(value=3), "other")


class Downstream(StrictModel):
    data: Path
    weights: Path | None = None


def test_inputs_come_from_config_paths_and_changes_make_stage_stale(tmp_path):
    upstream = tmp_path / "up"
    start_stage("up", upstream, Cfg()).finish()
    down = tmp_path / "down"
    cfg = Downstream(data=upstream, weights=tmp_path / "absent.pt")
    manifest = start_stage("down", down, cfg).finish()
    assert list(manifest["inputs"]) == ["data"]
    assert is_up_to_date(down, cfg, "down")
    start_stage("up", upstream, Cfg(value=2), force=True).finish()
    assert not is_up_to_date(down, cfg, "down")


def test_a_copied_run_is_checked_against_its_own_inputs(tmp_path):
    original, copy = tmp_path / "run", tmp_path / "copy"
    start_stage("up", original / "up", Cfg()).finish()
    start_stage("down", original / "down", Downstream(data=original / "up")).finish()
    shutil.copytree(original, copy)
    assert is_up_to_date(copy / "down", Downstream(data=copy / "up"), "down")
    start_stage("up", copy / "up", Cfg(value=2), force=True).finish()
    assert not is_up_to_date(copy / "down", Downstream(data=copy / "up"), "down")
    assert is_up_to_date(original / "down", Downstream(data=original / "up"), "down")


def test_different_complete_output_needs_force(tmp_path):
    out = tmp_path / "s"
    start_stage("demo", out, Cfg(value=1)).finish()
    with pytest.raises(StoreError, match="--force"):
        start_stage("demo", out, Cfg(value=2))
    start_stage("demo", out, Cfg(value=2), force=True).finish()
    assert is_up_to_date(out, Cfg(value=2), "demo")


def test_fingerprint_of_files_and_missing_inputs(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = fingerprint(f)
    f.write_bytes(b"abd")
    assert fingerprint(f) != first
    with pytest.raises(StoreError, match="does not exist"):
        fingerprint(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match="not a complete"):
        fingerprint(tmp_path / "half")


def test_stage_state_tells_interrupted_from_stale(tmp_path):
    from cfcl.stage import stage_state

    out = tmp_path / "s"
    assert stage_state(out, Cfg()) == "absent"
    start_stage("demo", out, Cfg(value=1))
    assert stage_state(out, Cfg(value=1)) == "interrupted"
    assert stage_state(out, Cfg(value=2)) == "stale"
    assert stage_state(out, Cfg(value=1), "other") == "stale"


def test_checkpoints_survive_only_an_interrupted_run_of_the_same_config(tmp_path):
    out = tmp_path / "s"
    start_stage("demo", out, Cfg(value=1))
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    start_stage("demo", out, Cfg(value=1))
    assert (out / "checkpoints" / "last.ckpt").is_file()
    start_stage("demo", out, Cfg(value=2))
    assert not (out / "checkpoints").exists()


def test_store_folders_are_fingerprinted_by_content_hash(tmp_path):
    import numpy as np
    import pandas as pd

    from cfcl.data.store import write_store

    meta = pd.DataFrame(
        {"index": [0], "image_id": ["a"], "patient_id": ["p"], "split": ["train"], "domain": [0], "label": [0]}
    )
    store = write_store(tmp_path / "store", np.zeros((1, 2, 2), np.uint8), meta, ["A"], ["n"])
    assert fingerprint(tmp_path / "store") == store.content_hash


class Resumable(StrictModel):
    value: int = 1
    resume: str = "auto"


def interrupted_with_checkpoint(out: Path, config: StrictModel) -> None:
    start_stage("train", out, config)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (out / "logs").mkdir()


def test_run_stage_skips_an_up_to_date_folder_and_returns_its_manifest(tmp_path, capsys):
    from cfcl.stage import run_stage

    calls = []
    out = tmp_path / "s"
    first = run_stage("demo", out, Cfg(), lambda stage: calls.append(stage) or {"answer": 42})
    assert first["status"] == "complete" and first["answer"] == 42 and len(calls) == 1
    assert run_stage("demo", out, Cfg(), lambda stage: calls.append(stage)) == first and len(calls) == 1
    assert "up to date" in capsys.readouterr().out
    assert run_stage("demo", out, Cfg(), lambda stage: calls.append(stage), force=True)["status"] == "complete"
    assert len(calls) == 2


def test_the_resume_policy_lives_in_the_stage(tmp_path):
    from cfcl.errors import ConfigError
    from cfcl.stage import run_stage

    seen = []
    out = tmp_path / "s"
    interrupted_with_checkpoint(out, Resumable())
    run_stage("train", out, Resumable(), lambda stage: seen.append(stage.resume_from))
    assert seen[-1] == out / "checkpoints" / "last.ckpt"
    interrupted_with_checkpoint(tmp_path / "f", Resumable())
    run_stage("train", tmp_path / "f", Resumable(), lambda stage: seen.append(stage.resume_from), force=True)
    assert seen[-1] is None and not (tmp_path / "f" / "checkpoints").exists() and not (tmp_path / "f" / "logs").exists()
    interrupted_with_checkpoint(tmp_path / "n", Resumable(resume="never"))
    run_stage("train", tmp_path / "n", Resumable(resume="never"), lambda stage: seen.append(stage.resume_from))
    assert seen[-1] is None
    with pytest.raises(ConfigError, match="no unfinished run"):
        run_stage("train", tmp_path / "empty", Resumable(resume="require"), lambda stage: seen.append(stage))
    assert not (tmp_path / "empty").exists() and len(seen) == 3
