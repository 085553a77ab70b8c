"""benchmarks/gpu_suite.py: one JSON line per figure (its toy CPU mode), the estimate by hand, and a one-line stop
without a GPU."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from support.benchmarks import BENCHMARKS
from support.paths import REPO

SCRIPT = BENCHMARKS / "gpu_suite.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
FIGURES = [
    "pretrain_bare_views_per_s",
    "pretrain_cfcl_views_per_s",
    "pretrain_pil_views_per_s",
    "pretrain_cfcl_over_bare",
    "pretrain_cfcl_over_pil",
    "pretrain_cfcl_autotuned_over_bare",
    "pretrain_vit_dino_bare_views_per_s",
    "pretrain_vit_dino_cfcl_views_per_s",
    "pretrain_vit_dino_cfcl_over_bare",
    "pretrain_vit_dino_cfcl_autotuned_over_bare",
    "cf_train_peak_memory_gb",
    "cf_train_largest_batch",
    "cf_train_images_per_s",
    "cf_train_batch_images_per_s",
    "cf_train_batch_levers_images_per_s",
    "cf_train_skipped_update_rate",
    "cf_generate_images_per_s",
    "training_hours_estimate",
]
CPU_ONLY = {"cf_train_peak_memory_gb", "cf_train_largest_batch", "demo_seconds"}  # GPU or full-suite figures


@pytest.mark.slow
def test_the_tiny_cpu_mode_prints_one_json_line_per_figure():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny"], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["figure"] for line in lines] == FIGURES
    for line in lines:
        assert {"suite", "figure", "value", "unit", "device"} <= set(line) and line["suite"] == "gpu_suite", line
        if line["figure"] in CPU_ONLY:
            assert line["value"] is None and line["skipped"], line
        else:
            assert isinstance(line["value"], (int, float)) and line["value"] >= 0, line
    by_name = {line["figure"]: line for line in lines}
    rates = {k: by_name[k]["value"] for k in FIGURES[:3]}
    assert all(rate > 0 for rate in rates.values())
    assert by_name["pretrain_cfcl_over_bare"]["value"] == pytest.approx(
        rates["pretrain_cfcl_views_per_s"] / rates["pretrain_bare_views_per_s"], rel=0.01
    )
    dino = {
        k: by_name[f"pretrain_vit_dino_{k}"]["value"]
        for k in ("bare_views_per_s", "cfcl_views_per_s", "cfcl_over_bare")
    }
    assert dino["cfcl_over_bare"] == pytest.approx(dino["cfcl_views_per_s"] / dino["bare_views_per_s"], rel=0.01)
    assert by_name["pretrain_vit_dino_cfcl_views_per_s"]["views_per_step"] == 4 * 8  # 2 global + 2 local crops, batch 8
    for prefix in ("pretrain_", "pretrain_vit_dino_"):
        autotuned = by_name[f"{prefix}cfcl_autotuned_over_bare"]
        assert autotuned["deterministic"] is False
        assert autotuned["value"] == pytest.approx(
            autotuned["views_per_s"] / by_name[f"{prefix}bare_views_per_s"]["value"], rel=0.01
        )
    levers = by_name["cf_train_batch_levers_images_per_s"]
    assert (
        levers["batch_size"] == by_name["cf_train_batch_images_per_s"]["batch_size"] == 8 and levers["levers"] is True
    )
    assert (levers["channels_last"], levers["optimizer"], levers["lr_scaling"]) == (True, "fused", "linear")
    assert by_name["cf_train_batch_images_per_s"]["levers"] is False
    assert levers["over_levers_off"] == pytest.approx(
        levers["value"] / by_name["cf_train_batch_images_per_s"]["value"], rel=0.02
    )
    estimate = by_name["training_hours_estimate"]
    assert (estimate["images"], estimate["gpus"], estimate["generator_epochs"], estimate["pretrain_epochs"]) == (
        60_000,
        1,
        300,
        450,
    )
    generator_h = 300 * 60_000 / levers["value"] / 3600
    store_h = 60_000 / by_name["cf_generate_images_per_s"]["value"] / 3600
    pretrain_h = 450 * 2 * 60_000 / rates["pretrain_cfcl_views_per_s"] / 3600
    assert estimate["generator_hours"] == pytest.approx(generator_h, rel=0.02)
    assert estimate["pretrain_hours"] == pytest.approx(pretrain_h, rel=0.02)
    assert estimate["value"] == estimate["total_hours"] == pytest.approx(generator_h + store_h + pretrain_h, rel=0.02)
    assert 0 <= by_name["cf_train_skipped_update_rate"]["value"] <= 1


def test_training_hours_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling scripts
    suite = importlib.import_module("gpu_suite")
    hours = suite.training_hours(60_000, 2, 300, 250.0, 60_000, 500.0, 450, 4000.0)
    # 300 x 60,000 / (250 x 2) s = 10 h; 60,000 / 1,000 s; 450 x 2 views x 60,000 / (4,000 x 2) s = 1.875 h
    assert hours == pytest.approx(
        {"generator_hours": 10.0, "store_hours": 1 / 60, "pretrain_hours": 1.875, "total_hours": 10.0 + 1 / 60 + 1.875}
    )
    alone = suite.training_hours(60_000, 1, 300, 250.0, 60_000, 500.0, 450, None)
    assert (
        alone["pretrain_hours"] is None
        and alone["total_hours"] is None
        and alone["generator_hours"] == pytest.approx(20.0)
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_suite_stops_with_one_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip() == "gpu_suite: this machine has no CUDA GPU; the suite measures the GPU path only"


def test_only_measures_the_parts_named_and_profile_dir_writes_their_profiles(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--only",
            "demo",
            "vit",
            "--profile-dir",
            str(tmp_path),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = [json.loads(line)["figure"] for line in done.stdout.splitlines()]
    assert figures == [f for f in FIGURES if f.startswith("pretrain_vit_dino_")] + [
        "demo_seconds"
    ]  # the demo when named
    assert [p.name for p in tmp_path.iterdir()] == ["pretrain_vit_dino.txt"]  # the vit part only
    table = (tmp_path / "pretrain_vit_dino.txt").read_text()
    assert "Self CPU" in table and "aten::" in table
