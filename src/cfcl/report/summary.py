"""The headline table (method x test set, AUROC mean ± std over seeds) as text and markdown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from cfcl import layout
from cfcl.errors import CfclError
from cfcl.report.figures import seed_summary, test_columns

TRANSFER_COLUMN = "OOD (direct transfer)"


class ReportError(CfclError):
    """A run folder or one of its stage outputs is missing or unreadable."""


def headline_fractions(metrics: pd.DataFrame) -> list[float]:
    """The lowest label fraction and the highest (100 % when evaluated)."""
    fractions = sorted(metrics["label_fraction"].unique())
    return list(dict.fromkeys([fractions[0], fractions[-1]])) if fractions else []


def _cell(row: pd.Series) -> str:
    return f"{row['mean']:.3f} ± {row['std']:.3f}"


def headline_table(metrics: pd.DataFrame, fraction: float, metric: str = "auroc") -> pd.DataFrame:
    """Rows ``method (protocol)``, columns the test sets; the direct-transfer column belongs to linear rows."""
    summary = seed_summary(metrics[metrics["label_fraction"] == fraction], metric)
    columns = test_columns(metrics)
    table: dict[str, dict[str, str]] = {}
    for (method, protocol), part in summary.groupby(["method", "protocol"], sort=True):
        if protocol == "transfer":
            continue
        cells = {}
        for name, test_set, domain in columns:
            hit = part[(part["test_set"] == test_set) & (part["domain"] == domain)]
            cells[name] = _cell(hit.iloc[0]) if len(hit) else "–"
        if protocol == "linear":
            hit = summary[(summary["method"] == method) & (summary["protocol"] == "transfer") & (summary["domain"] == "all")]
            cells[TRANSFER_COLUMN] = _cell(hit.iloc[0]) if len(hit) else "–"
        table[f"{method} ({protocol})"] = cells
    frame = pd.DataFrame.from_dict(table, orient="index")
    order = [c[0] for c in columns] + ([TRANSFER_COLUMN] if TRANSFER_COLUMN in frame.columns else [])
    return frame.reindex(columns=order).fillna("–")


def _caption(metrics: pd.DataFrame, fraction: float) -> str:
    n_seeds = metrics.loc[metrics["label_fraction"] == fraction, "seed"].nunique()
    return f"AUROC at {fraction * 100:g}% labels (mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''})"


def headline_text(metrics: pd.DataFrame) -> str:
    """Plain-text headline tables, one per headline label fraction."""
    blocks = [f"{_caption(metrics, f)}\n{headline_table(metrics, f).to_string()}" for f in headline_fractions(metrics)]
    return "\n\n".join(blocks) if blocks else "no metrics"


def markdown_table(frame: pd.DataFrame, index_name: str = "") -> str:
    """A GitHub-flavoured markdown table of ``frame`` (index as first column)."""
    header = [index_name, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index), *(str(v) for v in row)]) + " |")
    return "\n".join(lines)


def metrics_path(path: str | Path) -> Path:
    """``metrics.csv`` given a run folder, an eval folder or the file itself."""
    path = Path(path)
    expected = layout.RunLayout(path).metrics
    for candidate in (path, path / layout.METRICS, expected):
        if candidate.is_file():
            return candidate
    raise ReportError(f"no evaluation metrics at {path} (expected {expected}; run `cfcl evaluate`)")


def print_headline(path: str | Path, file: TextIO | None = None) -> None:
    """Print the headline tables of a run folder (or eval folder) to the terminal; used by ``cfcl demo``."""
    metrics = pd.read_csv(metrics_path(path))
    print(headline_text(metrics), file=file or sys.stdout)
