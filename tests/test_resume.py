"""A training stage stopped by Ctrl-C and by ``kill -9``, and run again each time, resumes from its
newest state and ends with the weights and the loss curve of an uninterrupted run; it keeps only the
checkpoints it promises."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from cfcl.cli import main
from cfcl.contrastive import pretrain
from cfcl.counterfactual.classifier import train as classifier_train
from cfcl.counterfactual.classifier.model import load_classifier
from cfcl.counterfactual.generator.checkpoint import load_generator
from support.cf_stores import make_store
from support.cli import TINY_GENERATOR, Cfcl, sets
from support.pretrain import pretrain_config

EPOCHS = 40  # long enough to be stopped mid-run, 3 steps an epoch


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def _wait_for(condition, run: Cfcl, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert run.process.poll() is None, f"the run ended before it could be stopped: {run.err[-2000:]}"
        assert time.time() < deadline, run.err[-2000:]
        time.sleep(0.01)


@pytest.mark.slow
def test_interrupt_rerun_kill_rerun_ends_as_an_uninterrupted_run(tmp_path):
    store = make_store(tmp_path / "store", true_cf=False)
    args = ["cf", "train", "--data", store.path, *sets([*TINY_GENERATOR, f"trainer.max_epochs={EPOCHS}"])]
    whole = Cfcl([*args, "--out", tmp_path / "whole"], tmp_path / "whole")
    assert whole.wait() == 0, whole.err[-3000:]

    out = tmp_path / "split"
    last = out / "checkpoints" / "last.ckpt"
    first = Cfcl([*args, "--out", out], tmp_path / "first")
    _wait_for(last.is_file, first)
    first.process.send_signal(signal.SIGINT)
    assert first.wait() == 130
    assert first.err.strip().splitlines()[-1] == "cfcl: interrupted; run the same command again to resume"
    assert "Traceback" not in first.err and "KeyboardInterrupt" not in first.err + first.out
    interrupted_at = _step(last)

    second = Cfcl([*args, "--out", out], tmp_path / "second")
    _wait_for(lambda: _step(last) > interrupted_at + 3, second)  # a newer epoch's end is written
    second.process.kill()
    second.wait()
    killed_at = _step(last)
    assert f"resumed from {last}: " in second.out and f"step {interrupted_at}\n" in second.out
    for warned in ("will be deleted", "not resumable"):
        assert warned not in second.err
    assert not list(out.glob("checkpoints/*-v*.ckpt")) and not list(out.glob("checkpoints/.*partial"))

    third = Cfcl([*args, "--out", out], tmp_path / "third")
    assert third.wait() == 0, third.err[-3000:]
    assert f"step {killed_at}\n" in third.out and killed_at > interrupted_at
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    (resumed, info), (uninterrupted, whole_info) = load_generator(out), load_generator(tmp_path / "whole")
    assert info["steps"] == whole_info["steps"] == EPOCHS * 3
    for (key, value), expected in zip(resumed.state_dict().items(), uninterrupted.state_dict().values(), strict=True):
        assert torch.equal(value, expected), key
    curves = [pd.read_csv(run / "logs" / "metrics.csv") for run in (out, tmp_path / "whole")]
    split_curve, whole_curve = (c.dropna(subset=["train/nelbo_step"])[["step", "train/nelbo_step"]] for c in curves)
    pd.testing.assert_frame_equal(split_curve.reset_index(drop=True), whole_curve.reset_index(drop=True))


@pytest.mark.parametrize(("keep", "kept"), [(None, []), (2, ["epoch001.ckpt", "epoch003.ckpt"])])
def test_a_five_epoch_run_keeps_the_resume_point_and_only_the_epochs_asked_for(stores, tmp_path, keep, kept):
    trainer = {"max_epochs": 5, "progress_bar": False, "accelerator": "cpu", "keep_every_n_epochs": keep}
    pretrain.run(pretrain_config(stores, trainer=trainer), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(["last.ckpt", *kept])
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 5 * 6  # the end of the run, 6 steps an epoch
    assert (tmp_path / "encoder.pt").is_file()


def test_a_stop_inside_validation_resumes_from_the_epoch_before_and_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    """Lightning cannot resume a validation: a checkpoint written inside one would resume as an epoch
    without its metrics, and early stopping would fail for want of its metric."""
    store = make_store(tmp_path / "store")
    args = ["cf", "classifier", "--config", "cf_judge", "--data", str(store.path)]
    args += sets(["trainer.max_epochs=3", "trainer.progress_bar=false", "batch_size=16", "arch_kwargs.width=4"])
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    class StopInSecondValidation(L.Callback):
        def on_validation_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    real = classifier_train.make_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            classifier_train,
            "make_trainer",
            lambda cfg, out, callbacks=(), **kw: real(cfg, out, callbacks=[*callbacks, StopInSecondValidation()], **kw),
        )
        assert main([*args, "--out", str(tmp_path / "split")]) == 130
    last = tmp_path / "split" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # the end of the first epoch

    assert main([*args, "--out", str(tmp_path / "split")]) == 0
    (resumed, info), (whole, whole_info) = load_classifier(tmp_path / "split"), load_classifier(tmp_path / "whole")
    assert info["val_balanced_accuracy"] == whole_info["val_balanced_accuracy"]
    for (key, value), expected in zip(resumed.state_dict().items(), whole.state_dict().values(), strict=True):
        assert torch.equal(value, expected), key
