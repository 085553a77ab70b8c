"""Beside other busy processes cfcl lets OpenMP's idle threads sleep; alone, or where the user
chose, it changes nothing; the thread count never changes (the results would)."""

from __future__ import annotations

import os
import sys

import pytest

from cfcl import training


@pytest.fixture
def fresh_process(monkeypatch):
    """As before torch is loaded, with no thread settings of the user's."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(key, raising=False)


def _settings() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("OMP_WAIT_POLICY")


@pytest.mark.parametrize(("busy", "policy"), [(0.2, None), (0.6, "PASSIVE"), (3.9, "PASSIVE"), (None, None)])
def test_idle_threads_sleep_only_beside_busy_cores(fresh_process, monkeypatch, busy, policy):
    monkeypatch.setattr(training, "busy_cores", lambda: busy)
    training.share_busy_cpus()
    assert _settings() == (None, policy)


def test_what_the_user_set_is_kept_and_a_loaded_torch_is_left_alone(fresh_process, monkeypatch):
    monkeypatch.setattr(training, "busy_cores", lambda: 3.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    training.share_busy_cpus()
    assert _settings() == (None, "ACTIVE")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setitem(sys.modules, "torch", object())
    training.share_busy_cpus()
    assert _settings() == (None, None)


def test_busy_cores_reads_the_whole_machine():
    busy = training.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= os.cpu_count()
