"""benchmarks/run_time.py: stage times summed per kind and per draw from the manifests, unfinished stages and
draws told apart, and a folder without a finished draw refused in one line."""

from __future__ import annotations

import json
import sys

import pytest

from support.benchmarks import load_benchmark


def write_manifest(folder, seconds, status="complete"):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"status": status, "timings": {"total": seconds}}))


def run_script(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["run_time.py", *map(str, argv)])
    load_benchmark("run_time").main()
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_stage_times_are_summed_per_kind_and_draw(tmp_path, monkeypatch, capsys):
    one = tmp_path / "draw-1"
    for stage, seconds in {"data": 10, "cf_model": 100, "cf_store": 20, "pretrain/simclr-s0": 50,
                           "pretrain/cf-simclr-s0": 60, "eval": 30, "report": 1}.items():  # fmt: skip
        write_manifest(one / stage, seconds)
    two = tmp_path / "draw-2"
    write_manifest(two / "data", 12)
    write_manifest(two / "cf_model", 99, status="running")  # interrupted: not counted
    result = run_script(monkeypatch, capsys, tmp_path)
    first, second = result["folders"]["draw-1"], result["folders"]["draw-2"]
    kinds = ("data", "generator", "pretrain", "eval", "other")
    assert [first[k] for k in kinds] == [10, 120, 110, 30, 1]
    assert first["pretrain_runs"] == 2 and first["total"] == 271 and first["finished"]
    assert second["total"] == 12 and second["generator"] == 0 and not second["finished"]
    assert result["seconds"] == 283
    assert result["minutes_per_finished_folder"] == {"min": 4.5, "mean": 4.5, "max": 4.5}


def test_a_run_of_one_draw_is_its_own_folder(tmp_path, monkeypatch, capsys):
    write_manifest(tmp_path / "run" / "data", 6)
    write_manifest(tmp_path / "run" / "eval", 54)
    result = run_script(monkeypatch, capsys, tmp_path / "run")
    assert list(result["folders"]) == ["run"] and result["folders"]["run"]["total"] == 60


def test_a_folder_without_a_finished_draw_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    write_manifest(tmp_path / "draw-3" / "data", 6)
    with pytest.raises(SystemExit, match=r"no finished draw") as refused:
        run_script(monkeypatch, capsys, tmp_path)
    assert "\n" not in str(refused.value)
    with pytest.raises(SystemExit, match=r"is not a folder"):
        run_script(monkeypatch, capsys, tmp_path / "missing")
