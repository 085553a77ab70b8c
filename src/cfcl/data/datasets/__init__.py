"""Dataset adapters: each reads one public dataset as distributed and returns a :class:`Table`."""

from __future__ import annotations

from cfcl.data.datasets.common import DatasetError, Table

__all__ = ["DatasetError", "Table"]
