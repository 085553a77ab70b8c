"""The scripts in benchmarks/ (not a package), for the tests that call their functions."""

from __future__ import annotations

import contextlib
import importlib.util
import sys

from support.paths import REPO

BENCHMARKS = REPO / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def sibling_importing_benchmark(name: str):
    """``benchmarks/<name>.py`` imported with benchmarks/ on ``sys.path``, as when run as a script, for a
    script that imports a sibling script."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield load_benchmark(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
