"""``trainer.loggers``: where the curves go, refused before anything is written when a package is
missing; the learning-rate monitor; a terminal that shows the run, not Lightning's chatter."""

import json
import logging
import sys
import warnings

import pandas as pd
import pytest

from cfcl import cli
from cfcl.config import build_config, config_hash
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.counterfactual.config import CFGenerateConfig
from cfcl.training import LOGGER_RUNS
from support.pretrain import TRAINER, Interrupted, interrupt_after, pretrain_config

TINY = [
    "--set",
    "batch_size=4",
    "--set",
    "trainer.progress_bar=false",
    "--set",
    "encoder.arch_kwargs={width: 4, blocks: [1]}",
    "--set",
    "projection=[8]",
]


def _pretrain(stores, out, *overrides):
    return cli.main(
        ["pretrain", "--method", "simclr", "--data", str(stores / "data"), "--out", str(out), *TINY, *overrides]
    )


def test_csv_is_always_kept_and_neither_loggers_nor_kept_checkpoints_nor_the_progress_bar_change_the_config_hash():
    config = build_config(PretrainConfig, base={"data": "store"})
    assert config.trainer.loggers == ["csv", "tensorboard"]
    other = build_config(
        PretrainConfig, base={"data": "store"}, overrides=["trainer.loggers=[tensorboard, tensorboard]"]
    )
    assert other.trainer.loggers == ["csv", "tensorboard"]
    assert config_hash(other) == config_hash(config)
    keeping = build_config(PretrainConfig, base={"data": "store"}, overrides=["trainer.keep_every_n_epochs=5"])
    assert config_hash(keeping) == config_hash(config)
    quiet = build_config(PretrainConfig, base={"data": "store"}, overrides=["trainer.progress_bar=false"])
    assert config_hash(quiet) == config_hash(config)
    generate = {"data": "store", "generator": "gen"}
    assert config_hash(build_config(CFGenerateConfig, base=generate, overrides=["progress_bar=false"])) == config_hash(
        build_config(CFGenerateConfig, base=generate)
    )
    longer = build_config(PretrainConfig, base={"data": "store"}, overrides=["trainer.max_epochs=3"])
    assert config_hash(longer) != config_hash(config)


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_is_refused_before_anything_is_written(
    stores, tmp_path, capsys, monkeypatch, name
):
    monkeypatch.setitem(sys.modules, name, None)  # import and find_spec now fail as for a package not installed
    assert _pretrain(stores, tmp_path / "run", "--set", f"trainer.loggers=[csv, {name}]") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'trainer.loggers'" in err and f"logger '{name}'" in err and f"pip install 'cfcl[{name}]'" in err
    assert not (tmp_path / "run").exists()


def test_the_terminal_shows_the_run_and_its_warnings_not_lightnings_chatter(stores, tmp_path, capfd):
    records = []
    recorder = logging.Handler()
    recorder.emit = records.append
    lightning_loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    for logger in lightning_loggers:
        logger.addHandler(recorder)
    try:
        with warnings.catch_warnings(record=True) as caught:
            code = _pretrain(stores, tmp_path / "run", "--set", "trainer.max_epochs=2")
    finally:
        for logger in lightning_loggers:
            logger.removeHandler(recorder)
    out, err = capfd.readouterr()
    assert code == 0 and f"pretrain: {tmp_path / 'run'} done in" in out
    shown = "\n".join([out, err, *(r.getMessage() for r in records), *(str(w.message) for w in caught)])
    for chatter in ("GPU available", "TPU available", "Seed set to", "litlogger", "LeafSpec"):
        assert chatter not in shown
    assert any("smaller than the logging interval" in str(w.message) for w in caught)  # about the run: kept
    # the learning-rate monitor's curve beside the losses, and TensorBoard's by default
    assert pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")["lr-Adam"].notna().any()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_wandb_logs_offline_under_the_stage_folder(stores, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no login stored anywhere
    assert _pretrain(stores, tmp_path / "run", "--set", "trainer.max_epochs=1", "--set", "trainer.loggers=[wandb]") == 0
    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert next(run.glob("run-*.wandb")).stat().st_size > 0
    assert not (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "logs" / "metrics.csv").is_file()


def test_mlflow_logs_the_curves_to_a_file_store_under_the_stage_folder(stores, tmp_path):
    from mlflow.tracking import MlflowClient

    overrides = [
        "--set",
        "trainer.max_epochs=1",
        "--set",
        "trainer.log_every_n_steps=1",
        "--set",
        "trainer.loggers=[mlflow]",
    ]
    assert _pretrain(stores, tmp_path / "run", *overrides) == 0
    client = MlflowClient(f"file:{tmp_path / 'run' / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cfcl").experiment_id])
    csv = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")] == csv["step"][
        csv["train/loss_step"].notna()
    ].tolist()
    assert client.get_metric_history(run.info.run_id, "lr-Adam")


def test_a_resumed_stage_logs_on_into_the_same_wandb_and_mlflow_runs_and_a_fresh_start_into_new_ones(
    stores, tmp_path, monkeypatch
):
    import wandb
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    config = pretrain_config(stores, trainer={**TRAINER, "loggers": ["wandb", "mlflow"]})
    out = tmp_path / "run"
    wandb.finish()  # a run an earlier test left open: each command below runs as if in a process of its own
    with monkeypatch.context() as patch:
        interrupt_after(patch, 4)  # mid-epoch 2 (3 steps an epoch)
        with pytest.raises(Interrupted):
            pretrain.run(config, out)
    wandb.finish()  # as the end of the command's process does (Lightning leaves the W&B run open)
    runs = json.loads((out / LOGGER_RUNS).read_text())
    assert set(runs) == {"wandb", "mlflow"}
    assert pretrain.run(config, out)["resumed_from"].endswith("last.ckpt")
    wandb.finish()
    assert json.loads((out / LOGGER_RUNS).read_text()) == runs
    # W&B offline: one folder per process, both of the one run (``wandb sync`` uploads them into it)
    assert sorted(f.name for f in out.glob("wandb/offline-run-*/run-*.wandb")) == [f"run-{runs['wandb']}.wandb"] * 2
    client = MlflowClient(f"file:{out / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cfcl").experiment_id])
    assert run.info.run_id == runs["mlflow"] and run.info.status == "FINISHED"
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step"))
    csv = pd.read_csv(out / "logs" / "metrics.csv")
    assert logged == csv["step"][csv["train/loss_step"].notna()].tolist()  # both sides of the interruption, once
    assert logged[0] < 4 and logged[-1] == 11  # 2 epochs of 6 steps
    # a fresh start (MLflow left out: its file store lives as long as the process, so a fresh start that clears
    # mlruns/ is a command of its own)
    pretrain.run(pretrain_config(stores, trainer={**TRAINER, "loggers": ["wandb"]}), out, force=True)
    wandb.finish()
    (fresh,) = out.glob("wandb/offline-run-*/run-*.wandb")
    assert (
        json.loads((out / LOGGER_RUNS).read_text()) == {"wandb": fresh.name[4:-6]} and fresh.name[4:-6] != runs["wandb"]
    )


def test_lightnings_notice_of_modules_in_eval_mode_is_not_shown_but_other_warnings_are(tmp_path):
    from lightning.pytorch.utilities import rank_zero_warn
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from cfcl.training import TrainerConfig, make_trainer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(TrainerConfig(accelerator="cpu"), tmp_path)
        rank_zero_warn(
            "Found 22 module(s) in eval mode at the start of training. This may lead to unexpected behavior during "
            "training. If this is intentional, you can ignore this warning.",
            category=PossibleUserWarning,
        )
        rank_zero_warn("about the run", category=PossibleUserWarning)
    shown = [str(w.message) for w in caught]
    assert "about the run" in shown and not any("eval mode" in message for message in shown)
