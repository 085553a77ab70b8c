"""Dataset adapters: each reads one public dataset as distributed and returns a :class:`Table`."""

from __future__ import annotations

from cfcl.data.datasets.common import DatasetError, Table

ADAPTERS = ("padchest", "chexpert", "rsna", "embed", "vindr", "csv")

__all__ = ["ADAPTERS", "DatasetError", "Table"]
