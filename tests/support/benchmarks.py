"""The scripts in benchmarks/ (not a package), for the tests that call their functions."""

from __future__ import annotations

import importlib.util

from support.paths import REPO

BENCHMARKS = REPO / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
