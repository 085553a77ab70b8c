"""Beside other busy processes cfcl takes the cores they leave free and lets idle threads sleep;
alone, or where the user chose, it changes nothing."""

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
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


def _settings() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("OMP_WAIT_POLICY")


@pytest.mark.parametrize(("busy", "expected"), [
    (0.2, (None, None)),  # alone: every core, spinning waits
    (1.6, ("2", "PASSIVE")),
    (3.9, ("1", "PASSIVE")),  # never fewer than one thread
    (None, (None, None)),  # no /proc/stat
])
def test_threads_follow_the_cores_other_processes_leave_free(fresh_process, monkeypatch, busy, expected):
    monkeypatch.setattr(training, "busy_cores", lambda: busy)
    training.share_busy_cpus()
    assert _settings() == expected


def test_what_the_user_set_is_kept_and_a_loaded_torch_is_left_alone(fresh_process, monkeypatch):
    monkeypatch.setattr(training, "busy_cores", lambda: 3.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    training.share_busy_cpus()
    assert _settings() == ("3", "PASSIVE")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setitem(sys.modules, "torch", object())
    training.share_busy_cpus()
    assert _settings() == (None, None)


def test_busy_cores_reads_the_whole_machine():
    busy = training.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= os.cpu_count()
