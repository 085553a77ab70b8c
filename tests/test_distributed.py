"""Several processes: which rank a process is, the machine checks, one writer per stage folder, and
``cfcl run`` on two CPU processes (gloo), started by cfcl itself and the way a cluster starts them
(evaluation's features extracted in a shard per rank: tests/evaluation/test_feature_shards.py)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cfcl.distributed import Ranks, check_machine, ranks_from_environment, session
from cfcl.errors import ConfigError
from cfcl.lock import FolderBusyError, folder_lock, lock_path
from cfcl.training import TrainerConfig
from support.cli import RANK_VARIABLES, SRC, Cfcl
from support.pipeline import TINY_RUN


@pytest.fixture
def no_launcher(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_more_devices_than_the_machine_has_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"trainer.devices=\d+ CPU processes but this machine has"):
        check_machine(TrainerConfig(accelerator="cpu", devices=(os.cpu_count() or 1) + 1))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no CUDA GPU"):
            check_machine(TrainerConfig(accelerator="gpu"))


def _a_gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")


def test_bf16_on_a_gpu_without_it_is_refused_naming_the_key_and_the_gpu(monkeypatch):
    _a_gpu_without_bf16(monkeypatch)
    for accelerator in ("gpu", "auto"):
        with pytest.raises(
            ConfigError,
            match=r"^trainer.precision=bf16-mixed but this machine's GPU \(Tesla V100-SXM2-16GB\) "
            r"has no bfloat16 support; use trainer.precision=16-mixed or auto$",
        ):
            check_machine(TrainerConfig(accelerator=accelerator, precision="bf16-mixed"))
    check_machine(TrainerConfig(accelerator="gpu", precision="16-mixed"))
    check_machine(TrainerConfig(accelerator="cpu", precision="bf16-mixed"))  # CPU autocast has bf16


def test_a_stage_command_asking_bf16_on_such_a_gpu_stops_before_writing(monkeypatch, no_launcher, tmp_path, capsys):
    from cfcl import cli

    _a_gpu_without_bf16(monkeypatch)
    (tmp_path / "data").mkdir()
    code = cli.main(
        [
            "pretrain",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--set",
            "trainer.precision=bf16-mixed",
        ]
    )
    assert code == 2 and "trainer.precision=bf16-mixed but this machine's GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_loader_workers_none_on_cpu_and_up_to_8_per_gpu(monkeypatch):
    from cfcl.training import loader_workers

    assert loader_workers(TrainerConfig(accelerator="cpu")) == 0
    assert loader_workers(TrainerConfig(accelerator="cpu", num_workers=3)) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert loader_workers(TrainerConfig(accelerator="gpu")) == 8
    assert loader_workers(TrainerConfig(accelerator="gpu", devices=4)) == 4


def test_several_nodes_without_a_cluster_launcher_is_refused(no_launcher):
    with pytest.raises(ConfigError, match=r"num_nodes=2 needs a cluster launcher.*srun.*torchrun"):
        with session(TrainerConfig(accelerator="cpu", num_nodes=2), []):
            pass


def test_ranks_come_from_the_launchers_environment(no_launcher):
    trainer = TrainerConfig(accelerator="cpu", devices=2, num_nodes=2)
    assert ranks_from_environment(trainer) is None
    no_launcher.setenv("LOCAL_RANK", "1")
    no_launcher.setenv("NODE_RANK", "1")
    assert ranks_from_environment(trainer) == Ranks(rank=3, world_size=4, local_rank=1, node_rank=1)
    for name, value in {
        "RANK": "2",
        "GROUP_RANK": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "2",
        "WORLD_SIZE": "4",
        "TORCHELASTIC_RUN_ID": "x",
    }.items():
        no_launcher.setenv(name, value)
    assert ranks_from_environment(trainer) == Ranks(rank=2, world_size=4, local_rank=0, node_rank=1)


def test_a_launcher_with_another_world_size_is_refused(no_launcher):
    no_launcher.setenv("LOCAL_RANK", "0")
    for name, value in {
        "RANK": "0",
        "GROUP_RANK": "0",
        "LOCAL_WORLD_SIZE": "3",
        "WORLD_SIZE": "3",
        "TORCHELASTIC_RUN_ID": "x",
    }.items():
        no_launcher.setenv(name, value)
    with pytest.raises(ConfigError, match=r"devices x trainer.num_nodes = 2 but the launcher started 3 processes"):
        with session(TrainerConfig(accelerator="cpu", devices=2), []):
            pass


HOLD = """
import sys, time
from cfcl.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_stops_at_once_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "stage"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.time()
        with pytest.raises(FolderBusyError) as err:
            with folder_lock(folder):
                pass
        assert time.time() - began < 5
        message = str(err.value)
        assert "\n" not in message and str(folder) in message
        assert f"pid {holder.pid} on {socket.gethostname()} since " in message
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(folder).exists()  # killed: it could not clean up
    with folder_lock(folder):
        assert f"taking over the lock of {folder}, left by pid {holder.pid}" in capsys.readouterr().out
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    assert not lock_path(folder).exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with folder_lock(tmp_path / "a"):
        with folder_lock(tmp_path / "a"):
            pass
        assert lock_path(tmp_path / "a").exists()


def _one_line_error(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "Traceback" not in stderr and lines[-1].startswith("cfcl: error: ")


@pytest.mark.slow
def test_two_writers_of_one_store_started_together(tmp_path):
    args = ["data", "synth", "--out", tmp_path / "data", "--set", "image_size=48", "--set", "n_train=400"]
    runs = [Cfcl(args, tmp_path / f"writer{i}") for i in range(2)]
    codes = sorted(run.wait(300) for run in runs)
    assert codes in ([0, 0], [0, 2])
    for run in runs:
        assert "Traceback" not in run.err
        if run.process.returncode == 2:
            assert _one_line_error(run.err) and "is being written by another process (pid" in run.err
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert not lock_path(tmp_path / "data").exists()


def _tiny_config(tmp_path: Path, **changes) -> Path:
    config = {**json.loads(json.dumps(TINY_RUN)), **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


DDP = ["--set", "trainer.accelerator=cpu", "--set", "trainer.strategy=ddp"]
NO_AUGMENT = {"crop_scale": [1, 1], "crop_ratio": [1, 1], "rotation_p": 0, "color_p": 0, "sharpness_p": 0}


def _encoder_update(path: Path, config: Path) -> torch.Tensor:
    """Trained minus initial weights of an encoder (BatchNorm running statistics left out)."""
    import lightning as L

    from cfcl.config import build_config
    from cfcl.contrastive.config import PretrainConfig
    from cfcl.contrastive.encoders import load_encoder
    from cfcl.contrastive.pretrain import build_module

    cfg = build_config(PretrainConfig, config)
    L.seed_everything(cfg.seed, verbose=False)
    initial = build_module(cfg, (32, 32), 2).encoder.state_dict()
    trained = load_encoder(path)[0].state_dict()
    keys = [k for k, v in sorted(initial.items()) if v.is_floating_point() and "running" not in k]
    return torch.cat([(trained[k] - initial[k]).flatten() for k in keys])


def _features_equal_one_process_extraction(run: Path) -> None:
    """Evaluation's features, extracted in a shard per rank, are merged into the array one process extracts."""
    from cfcl.data.store import ImageStore
    from cfcl.evaluation.evaluate import load_encoders
    from cfcl.evaluation.features import extract_features

    store = ImageStore.open(run / "data")
    ref = load_encoders([run / "pretrain" / "simclr-s0"], store)["simclr"][0]
    features = run / "eval" / "features"
    assert not list(features.glob("*.rows*.npy"))  # every shard merged and removed
    np.testing.assert_allclose(
        np.load(features / f"{ref.key(store)}.npy"), extract_features(ref.build(), store.images), rtol=1e-6, atol=1e-7
    )


@pytest.mark.slow
def test_cfcl_run_on_two_processes_started_by_cfcl(tmp_path):
    pretrain = {**TINY_RUN["pretrain"], "augment": NO_AUGMENT}
    config = _tiny_config(tmp_path, methods=["simclr", "cf-simclr"], pretrain=pretrain)
    run = Cfcl(
        ["run", config, "--out", tmp_path / "ddp", *DDP, "--set", "trainer.devices=2"], tmp_path / "ddp", cwd=tmp_path
    )
    assert run.wait() == 0, run.err[-3000:]
    assert "(2 processes)" in run.out
    stages = [
        "data",
        "cf_model",
        "cf_guide",
        "cf_judge",
        "cf_quality_base",
        "cf_finetune",
        "cf_store",
        "cf_quality",
        "pretrain/simclr-s0",
        "pretrain/cf-simclr-s0",
        "eval",
    ]
    for stage in stages:
        assert json.loads((tmp_path / "ddp" / stage / "manifest.json").read_text())["status"] == "complete", stage
        assert sum(f"{tmp_path / 'ddp' / stage} done in " in line for line in run.out.splitlines()) == 1, stage
        assert not lock_path(tmp_path / "ddp" / stage).exists()
    assert (tmp_path / "ddp" / "report" / "index.html").is_file()
    _features_equal_one_process_extraction(tmp_path / "ddp")
    # One process with the same global batch (2 x 16) draws the same batches, unaugmented here
    # (augmentation draws depend on the rank layout); BatchNorm statistics stay per rank on CPU.
    ddp = tmp_path / "ddp" / "pretrain" / "simclr-s0"
    single = Cfcl(
        [
            "pretrain",
            "--config",
            ddp / "config.yaml",
            "--out",
            tmp_path / "single",
            "--set",
            "batch_size=32",
            "--set",
            "trainer.devices=1",
            "--set",
            "trainer.strategy=auto",
        ],
        tmp_path / "single",
    )
    assert single.wait() == 0, single.err[-3000:]
    ddp_manifest = json.loads((ddp / "manifest.json").read_text())
    single_manifest = json.loads((tmp_path / "single" / "manifest.json").read_text())
    assert (
        ddp_manifest["steps"] == single_manifest["steps"]
        and ddp_manifest["images_seen"] == single_manifest["images_seen"]
    )
    ddp_update = _encoder_update(ddp / "encoder.pt", ddp / "config.yaml")
    single_update = _encoder_update(tmp_path / "single" / "encoder.pt", ddp / "config.yaml")
    assert torch.nn.functional.cosine_similarity(ddp_update, single_update, dim=0) > 0.95
    assert (ddp_update - single_update).norm() < 0.3 * single_update.norm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_ranks(config: Path, out: Path, log: Path) -> list[Cfcl]:
    """Two nodes of one process each, started as srun or torchrun would: the rank in the environment."""
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    args = ["run", config, "--out", out, *DDP, "--set", "trainer.num_nodes=2", "--set", "trainer.devices=1"]
    return [
        Cfcl(args, log.with_name(f"{log.name}-rank{r}"), env={**shared, "RANK": str(r), "NODE_RANK": str(r)})
        for r in (0, 1)
    ]


@pytest.mark.slow
def test_cfcl_run_started_by_a_cluster_launcher_resumes_after_a_rank_is_killed(tmp_path):
    pretrain = {**TINY_RUN["pretrain"], "trainer": {"max_epochs": 8}}
    config = _tiny_config(tmp_path, methods=["simclr"], pretrain=pretrain)
    out = tmp_path / "run"
    ranks = _cluster_ranks(config, out, tmp_path / "first")
    first_epoch = out / "pretrain" / "simclr-s0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not first_epoch.exists():
        assert time.time() < deadline and all(r.process.poll() is None for r in ranks), ranks[0].err[-3000:]
        time.sleep(0.02)
    ranks[1].process.kill()
    assert ranks[0].wait(300) == 2
    assert _one_line_error(ranks[0].err) and "another rank stopped" in ranks[0].err
    assert json.loads((out / "pretrain" / "simclr-s0" / "manifest.json").read_text())["status"] == "running"

    again = _cluster_ranks(config, out, tmp_path / "again")
    assert [r.wait() for r in again] == [0, 0], again[0].err[-3000:] + again[1].err[-3000:]
    assert re.search(r"pretrain/simclr-s0 +resume", again[0].out) and again[1].out.count("done in") == 0
    manifest = json.loads((out / "pretrain" / "simclr-s0" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_from"].endswith("last.ckpt")
    assert json.loads((out / "eval" / "manifest.json").read_text())["status"] == "complete"
