"""benchmarks/factor_readout.py: read-outs recover factors the features hold and not those they lack; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from support.benchmarks import BENCHMARKS, load_benchmark
from support.evaluation import tiny_encoder, tiny_store
from support.paths import REPO

SCRIPT = BENCHMARKS / "factor_readout.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def load_script():
    return load_benchmark("factor_readout")


def test_effective_rank_of_hand_made_features():
    script = load_script()
    even = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # two equal singular values
    line = np.array([[1.0, 2.0], [2.0, 4.0], [-3.0, -6.0]])  # rank one
    assert script.effective_rank(even) == pytest.approx(2.0)
    assert script.effective_rank(line) == pytest.approx(1.0)


def test_readout_recovers_what_the_features_hold_and_not_what_they_lack():
    script = load_script()
    rng = np.random.default_rng(0)
    n = 400
    meta = pd.DataFrame(
        {
            "label": rng.integers(0, 2, n),
            "domain": rng.integers(0, 3, n),
            "age": rng.uniform(20, 80, n),
            "bone_density": rng.uniform(0, 1, n),
        }
    )
    held = np.column_stack(
        [
            meta["age"] + rng.normal(0, 1, n),
            np.eye(3)[meta["domain"]],
            meta["label"] + rng.normal(0, 0.3, n),
            rng.normal(size=(n, 3)),
        ]
    )
    train, val = slice(0, 300), slice(300, n)
    out = script.readout(held[train], held[val], meta.iloc[train], meta.iloc[val], 2, ("age", "bone_density"))
    assert out["r2_age"] > 0.95 and out["r2_bone_density"] < 0.05
    assert out["scanner_balanced_accuracy"] == pytest.approx(1.0)
    assert out["label_auroc"] > 0.9
    noise = rng.normal(size=(n, 8))
    blind = script.readout(noise[train], noise[val], meta.iloc[train], meta.iloc[val], 2, ("age",))
    assert blind["r2_age"] < 0.05 and abs(blind["label_auroc"] - 0.5) < 0.15
    assert blind["scanner_balanced_accuracy"] < 0.5  # chance: 1/3


@pytest.mark.slow
def test_cli_prints_a_line_per_encoder_and_names_a_missing_factor(tmp_path):
    store = tiny_store(tmp_path / "store")
    encoder = tiny_encoder(tmp_path / "enc", "simclr", 0)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(store.path), str(encoder), "random", "--factors", "domain"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["encoder"] for line in lines] == [str(encoder), "random"]
    for line in lines:
        assert set(line) == {"encoder", "label_auroc", "scanner_balanced_accuracy", "r2_domain", "effective_rank"}
        assert 0 <= line["label_auroc"] <= 1 and 1 <= line["effective_rank"] <= 16
    assert lines[0] != lines[1]  # the random encoder is not the pretrained one
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(store.path), str(encoder)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith(f"factor_readout: {store.path / 'metadata.csv'} has no column age")
    )
    absent = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--data",
            str(store.path),
            str(encoder),
            str(tmp_path / "none"),
            "--factors",
            "domain",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert absent.returncode != 0 and absent.stdout == ""  # refused before the first encoder is read out
    assert absent.stderr.strip().splitlines()[-1] == (
        f"factor_readout: encoder checkpoint {tmp_path / 'none'} does not exist"
    )
    alone = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(store.path), "random", "--factors", "domain"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode != 0
    assert alone.stderr.strip().splitlines()[-1] == (
        "factor_readout: 'random' needs a pretrained encoder among the encoders (its architecture)"
    )
