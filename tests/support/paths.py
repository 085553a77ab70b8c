"""The repository's root, whose benchmarks/, docs/, src/ and pyproject.toml the tests read."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
