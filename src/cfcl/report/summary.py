"""The headline tables as text and markdown: method x test set, AUROC mean ± std over seeds, and each
method's gain over the reference with its t-interval over seeds; the domain-invariance tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from cfcl import layout
from cfcl.errors import CfclError
from cfcl.evaluation.metrics import seed_interval
from cfcl.evaluation.results import INVARIANCE_MEASURES
from cfcl.report.figures import seed_summary, test_columns

TRANSFER_COLUMN = "OOD (direct transfer)"


class ReportError(CfclError):
    """A run folder or one of its stage outputs is missing or unreadable."""


def headline_fractions(metrics: pd.DataFrame) -> list[float]:
    """The lowest label fraction and the highest (100 % when evaluated)."""
    fractions = sorted(metrics["label_fraction"].unique())
    return list(dict.fromkeys([fractions[0], fractions[-1]])) if fractions else []


def _cell(row: pd.Series) -> str:
    """Mean ± std over seeds; one seed has no spread, so its cell is the value alone."""
    return f"{row['mean']:.3f}" if row["count"] < 2 else f"{row['mean']:.3f} ± {row['std']:.3f}"


def _method_rows(frame: pd.DataFrame, columns: list[tuple[str, str, str]], cell) -> pd.DataFrame:
    """Rows ``method (protocol)``, columns the test sets; the direct-transfer column belongs to linear rows."""
    table: dict[str, dict[str, str]] = {}
    for (method, protocol), part in frame.groupby(["method", "protocol"], sort=True):
        if protocol == "transfer":
            continue
        cells = {}
        for name, test_set, domain in columns:
            hit = part[(part["test_set"] == test_set) & (part["domain"] == domain)]
            cells[name] = cell(hit.iloc[0]) if len(hit) else "–"
        if protocol == "linear":
            hit = frame[(frame["method"] == method) & (frame["protocol"] == "transfer") & (frame["domain"] == "all")]
            cells[TRANSFER_COLUMN] = cell(hit.iloc[0]) if len(hit) else "–"
        table[f"{method} ({protocol})"] = cells
    result = pd.DataFrame.from_dict(table, orient="index")
    order = [c[0] for c in columns] + ([TRANSFER_COLUMN] if TRANSFER_COLUMN in result.columns else [])
    return result.reindex(columns=order).fillna("–")


def headline_table(metrics: pd.DataFrame, fraction: float, metric: str = "auroc") -> pd.DataFrame:
    """Mean ± std over seeds of ``metric`` per method (protocol) and test set."""
    summary = seed_summary(metrics[metrics["label_fraction"] == fraction], metric)
    return _method_rows(summary, test_columns(metrics), _cell)


def gain_cell(row: pd.Series, value: str = "gain") -> str:
    """``+0.110 [+0.021, +0.199], 3/3 > 0, supported``: mean, t-interval over seeds, sign count, verdict.

    ``value``: the column of the mean, ``gain`` (``seed_gains.csv``) or ``gap`` (``subgroup_gaps.csv``).
    """
    if row["n_seeds"] < 2:
        return f"{row[value]:+.3f} ({row['note']})"
    verdict = "supported" if row["supported"] else "not supported"
    return f"{row[value]:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], {row['n_positive']}/{row['n_seeds']} > 0, {verdict}"


def headline_gain_table(seed_gains: pd.DataFrame, fraction: float, metric: str = "auroc") -> pd.DataFrame:
    """Each method's gain over the reference (``seed_gains.csv``) per test set, in the headline table's layout."""
    rows = seed_gains[(seed_gains["label_fraction"] == fraction) & (seed_gains["metric"] == metric)]
    return _method_rows(rows, test_columns(rows), gain_cell)


def gain_caption(seed_gains: pd.DataFrame, fraction: float) -> str:
    """What the headline gain table shows, with the reference and the interval's level it was computed with."""
    reference = ", ".join(sorted(set(seed_gains["reference"])))
    level = float(seed_gains["level"].iloc[0]) * 100
    return (
        f"AUROC gain over {reference} at {fraction * 100:g}% labels, paired by seed: mean [{level:g}% t-interval over "
        f"seeds], seeds with a gain > 0 / seeds; supported = the interval excludes 0"
    )


def subgroup_gap_table(gaps: pd.DataFrame, fraction: float, subgroup: str, metric: str = "auroc") -> pd.DataFrame:
    """Each method's gap of ``subgroup`` over its reference (``subgroup_gaps.csv``) per test set, in the headline layout."""
    rows = gaps[(gaps["label_fraction"] == fraction) & (gaps["metric"] == metric) & (gaps["subgroup"] == subgroup)]
    return _method_rows(rows, test_columns(rows), lambda row: gain_cell(row, "gap"))


def gap_caption(gaps: pd.DataFrame, fraction: float, subgroup: str) -> str:
    """What a subgroup gap table shows: which subgroup minus which, and the interval's level."""
    reference = gaps.loc[gaps["subgroup"] == subgroup, "reference"].iloc[0]
    level = float(gaps["level"].iloc[0]) * 100
    return (
        f"AUROC gap {subgroup} minus {reference} at {fraction * 100:g}% labels, paired by seed: mean [{level:g}% "
        f"t-interval over seeds], seeds with a gap > 0 / seeds; supported = the interval excludes 0"
    )


def interval_cell(values: pd.Series, level: float = 0.95) -> str:
    """``0.812 [0.770, 0.854]``: mean and t-interval over seeds of ``values`` (indexed by seed)."""
    estimate = seed_interval(values, level)
    if estimate.n_seeds < 2:
        return f"{estimate.mean:.3f} ({estimate.note})"
    return f"{estimate.mean:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"


def invariance_table(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per method, each domain-invariance measure of ``domain_predictability.csv``: mean [t-interval] over seeds."""
    measures = [c for c in INVARIANCE_MEASURES if c in table.columns]
    rows = {
        method: {INVARIANCE_MEASURES[m]: interval_cell(part.set_index("seed")[m], level) for m in measures}
        | {"seeds": str(part["seed"].nunique())}
        for method, part in table.groupby("method", sort=True)
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def invariance_gain_table(seed_gains: pd.DataFrame) -> pd.DataFrame:
    """Each method minus the reference per invariance measure (``seed_gains.csv``, protocol ``embedding``)."""
    rows = seed_gains[seed_gains["protocol"] == "embedding"]
    cells = rows.assign(cell=[gain_cell(row) for _, row in rows.iterrows()]).pivot(index="method", columns="metric", values="cell")
    return cells.reindex(columns=[m for m in INVARIANCE_MEASURES.values() if m in cells.columns])


def _caption(metrics: pd.DataFrame, fraction: float) -> str:
    n_seeds = metrics.loc[metrics["label_fraction"] == fraction, "seed"].nunique()
    if n_seeds < 2:
        return f"AUROC at {fraction * 100:g}% labels ({n_seeds} seed: no spread)"
    return f"AUROC at {fraction * 100:g}% labels (mean ± std over {n_seeds} seeds)"


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
