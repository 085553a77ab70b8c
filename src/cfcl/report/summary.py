"""The headline tables as text and markdown: method x test set, AUROC mean ± std over seeds, and each
method's gain over the reference with its t-interval over seeds; the verdict in words; the domain-invariance tables;
for a multi-label store, whose headline AUROC is the mean over its findings, each finding's AUROC."""

from __future__ import annotations

import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from cfcl import layout
from cfcl.errors import CfclError
from cfcl.evaluation.evaluate import COVARIATES, RANDOM, SUPERVISED
from cfcl.evaluation.metrics import seed_interval
from cfcl.evaluation.results import (
    INVARIANCE_MEASURES,
    MEAN_AUROC,
    auroc_metric,
    finding_metric,
    metric_parts,
)
from cfcl.report.figures import TRANSFER_COLUMN, measured, metric_words, seed_summary, test_columns

TERMINAL_WIDTH = 100  # the headline printed by `cfcl demo` / `cfcl run` fits a terminal this wide
SMALLEST = 1e-4  # a nonzero value below this prints as "< 0.0001": its digits are noise to a reader
# The whole test sets the verdict judges: (column name, protocol, test set), all on domain "all".
VERDICT_COLUMNS = (("ID", "linear", "id"), ("OOD (own labels)", "linear", "ood"), (TRANSFER_COLUMN, "transfer", "ood"))
BASELINES = (RANDOM, COVARIATES, SUPERVISED)
MORE_SEEDS = (
    "run `cfcl run benchmark` (20 seeds x 10 label draws), or list more `seeds` and `evaluate.seeds` in "
    "the run config, for 95% intervals"
)


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


def gain_cell(row: pd.Series, value: str = "gain", note: bool = True) -> str:
    """``+0.110 [+0.021, +0.199], 3/3 > 0, supported``: mean, t-interval over seeds, sign count, verdict.

    ``value``: the column of the mean, ``gain`` (``seed_gains.csv``) or ``gap`` (``subgroup_gaps.csv``); one
    seed's cell is its value and, with ``note``, why it has no interval (without: the caption says so).
    """
    if row["n_seeds"] < 2:
        return f"{row[value]:+.3f}" + (f" ({row['note']})" if note else "")
    verdict = "supported" if row["supported"] else "not resolved"
    return (
        f"{row[value]:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], {row['n_positive']}/{row['n_seeds']} > 0, "
        f"{verdict}"
    )


def _one_seed(rows: pd.DataFrame) -> bool:
    """Whether every difference of ``rows`` comes from one seed (the table's caption then says so, once)."""
    return bool(rows["n_seeds"].max() < 2)


def headline_gain_table(seed_gains: pd.DataFrame, fraction: float, metric: str = "auroc") -> pd.DataFrame:
    """Each method's gain over the reference (``seed_gains.csv``) per test set, in the headline table's layout."""
    rows = seed_gains[(seed_gains["label_fraction"] == fraction) & (seed_gains["metric"] == metric)]
    return _method_rows(rows, test_columns(rows), lambda row: gain_cell(row, note=not _one_seed(rows)))


def gain_caption(
    seed_gains: pd.DataFrame, fraction: float, metric: str = "auroc", difference: str = "AUROC gain over {reference}"
) -> str:
    """What a headline gain table of ``metric`` shows, with the reference (``difference`` names the gain) and the
    interval's level it was computed with."""
    what = difference.format(reference=", ".join(sorted(set(seed_gains["reference"]))))
    level = float(seed_gains["level"].iloc[0]) * 100
    if _one_seed(seed_gains[(seed_gains["label_fraction"] == fraction) & (seed_gains["metric"] == metric)]):
        return f"{what} at {fraction * 100:g}% labels, one seed: no interval; {MORE_SEEDS}"
    return (
        f"{what} at {fraction * 100:g}% labels, paired by seed: mean [{level:g}% t-interval over "
        f"seeds], seeds with a gain > 0 / seeds; supported = the interval excludes 0"
    )


def subgroup_gap_table(gaps: pd.DataFrame, fraction: float, subgroup: str, metric: str = "auroc") -> pd.DataFrame:
    """Each method's gap of ``subgroup`` over its reference (``subgroup_gaps.csv``) per test set, in the headline
    layout."""
    rows = gaps[(gaps["label_fraction"] == fraction) & (gaps["metric"] == metric) & (gaps["subgroup"] == subgroup)]
    return _method_rows(rows, test_columns(rows), lambda row: gain_cell(row, "gap", note=not _one_seed(rows)))


def gap_caption(gaps: pd.DataFrame, fraction: float, subgroup: str, metric: str = "auroc") -> str:
    """What a subgroup gap table shows: which subgroup minus which, and the interval's level."""
    reference = gaps.loc[gaps["subgroup"] == subgroup, "reference"].iloc[0]
    level = float(gaps["level"].iloc[0]) * 100
    rows = gaps[(gaps["label_fraction"] == fraction) & (gaps["metric"] == metric) & (gaps["subgroup"] == subgroup)]
    what = f"{metric_words(metric)} gap {subgroup} minus {reference} at {fraction * 100:g}% labels"
    if _one_seed(rows):
        return f"{what}, one seed: no interval; {MORE_SEEDS}"
    return (
        f"{what}, paired by seed: mean [{level:g}% "
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
    rows = {
        method: {INVARIANCE_MEASURES[m]: interval_cell(part.set_index("seed")[m], level) for m in measured(table)}
        | {"seeds": str(part["seed"].nunique())}
        for method, part in table.groupby("method", sort=True)
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def invariance_gain_table(seed_gains: pd.DataFrame) -> pd.DataFrame:
    """Each method minus the reference per invariance measure (``seed_gains.csv``, protocol ``embedding``)."""
    rows = seed_gains[seed_gains["protocol"] == "embedding"]
    cells = rows.assign(cell=[gain_cell(row) for _, row in rows.iterrows()]).pivot(
        index="method", columns="metric", values="cell"
    )
    return cells.reindex(
        columns=[m for m in INVARIANCE_MEASURES.values() if m in cells.columns]
    )  # cf_invariance: synthetic only


def finding_table(metrics: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """A multi-label store's AUROC of each finding and their mean (columns) per method, protocol and whole test set
    (rows), mean ± std over seeds at label ``fraction``."""
    shown = metrics[(metrics["label_fraction"] == fraction) & (metrics["domain"] == "all")]
    findings = dict.fromkeys(f for m, f in map(metric_parts, shown["metric"]) if m == "auroc" and f is not None)
    columns = {**{name: finding_metric("auroc", name) for name in findings}, "mean": MEAN_AUROC}
    table: dict[str, dict[str, str]] = {}
    for column, metric in columns.items():
        for _, row in seed_summary(shown, metric).iterrows():
            table.setdefault(f"{row['method']} ({row['protocol']}, {row['test_set']})", {})[column] = _cell(row)
    return pd.DataFrame.from_dict(table, orient="index").reindex(columns=list(columns)).fillna("–")


def headline_caption(metrics: pd.DataFrame, fraction: float, what: str = "AUROC") -> str:
    """What a headline table of ``what`` shows: mean ± std over several seeds, or one seed's values."""
    n_seeds = metrics.loc[metrics["label_fraction"] == fraction, "seed"].nunique()
    if n_seeds < 2:
        return f"{what} at {fraction * 100:g}% labels ({n_seeds} seed: no spread)"
    return f"{what} at {fraction * 100:g}% labels (mean ± std over {n_seeds} seeds)"


def readable(value) -> str:
    """A value for people: a number to 3 significant digits in plain decimals, yes/no, a list joined by commas."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < SMALLEST:
            return f"< {SMALLEST:.4f}" if value > 0 else f"> -{SMALLEST:.4f}"
        return np.format_float_positional(value, precision=3, unique=True, fractional=False, trim="-")
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(
            f"{k}: ({readable(v)})" if isinstance(v, dict) else f"{k}: {readable(v)}" for k, v in value.items()
        )
    return "–" if value is None else str(value)


@dataclass
class Verdict:
    """The verdict in words: what was compared and how (``lead``), then one line per method, each ``(method, what)``."""

    lead: str
    lines: list[tuple[str, str]]

    def text(self, width: int = TERMINAL_WIDTH) -> str:
        """The verdict as plain text wrapped to ``width`` columns."""
        items = [
            textwrap.fill(f"{who} {what}", width, initial_indent="- ", subsequent_indent="  ")
            for who, what in self.lines
        ]
        return "\n".join([textwrap.fill(self.lead, width), *items])


def _verdict_cell(name: str, row: pd.Series) -> tuple[str, str]:
    """``(cell, call)``: the test set's name and gain with its interval and verdict (one seed: the gain alone), and
    "beats"/"trails" for a supported gain or loss, else ""."""
    if row["n_seeds"] < 2:
        return f"{name} {row['gain']:+.3f}", ""
    word = "supported" if row["supported"] else "not resolved"
    signs = f"{row['n_positive']}/{row['n_seeds']} seeds > 0"
    cell = f"{name} {row['gain']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], {word} ({signs})"
    return cell, ("beats" if row["gain"] > 0 else "trails") if row["supported"] else ""


def verdict(seed_gains: pd.DataFrame, metric: str = "auroc") -> Verdict | None:
    """Each method against the reference at the lowest label fraction on the whole ID and OOD test sets, in words:
    the paired gain over seeds with its t-interval and "supported" (the interval excludes 0), "not resolved" (it
    includes 0) or "one seed: no interval"; None when ``seed_gains.csv`` holds none of these gains."""
    rows = seed_gains[
        (seed_gains["metric"] == metric)
        & (seed_gains["domain"] == "all")
        & seed_gains["protocol"].isin([protocol for _, protocol, _ in VERDICT_COLUMNS])
    ]
    if rows.empty:
        return None
    fraction = float(rows["label_fraction"].min())
    rows = rows[rows["label_fraction"] == fraction]
    reference = ", ".join(sorted(set(rows["reference"])))
    n_seeds, level = int(rows["n_seeds"].max()), float(rows["level"].iloc[0]) * 100
    what = (
        f"{metric_words(metric)} gain of each method over {reference} (the reference) at {fraction * 100:g}% of the "
        "labels, the lowest fraction evaluated; ID: the in-distribution test set, OOD: the held-out scanner with a "
        "probe of its own labels or the ID probe transferred (direct transfer)."
    )
    if n_seeds < 2:
        lead = f"{what} One seed: no interval, so no gain here is supported or ruled out; {MORE_SEEDS}."
    else:
        lead = (
            f"{what} Mean over {n_seeds} seeds paired by seed, with its {level:g}% t-interval over seeds: supported "
            "when the interval excludes 0, not resolved when it includes 0 (this run cannot tell the two apart)."
        )
    lines = []
    for method in sorted(set(rows["method"]), key=lambda m: (m in BASELINES, m)):
        cells, calls, one_seed = [], {"beats": [], "trails": []}, False
        for name, protocol, test_set in VERDICT_COLUMNS:
            hit = rows[(rows["method"] == method) & (rows["protocol"] == protocol) & (rows["test_set"] == test_set)]
            if len(hit):
                cell, call = _verdict_cell(name, hit.iloc[0])
                cells.append(cell)
                one_seed |= bool(hit.iloc[0]["n_seeds"] < 2)
                if call:
                    calls[call].append(name)
        said = " and ".join(f"{call} {reference} on {_listed(names)}" for call, names in calls.items() if names)
        if n_seeds < 2:
            said = f"minus {reference}"
        label = f"{method} (baseline)" if method in BASELINES else method
        end = " (one seed: no interval)." if one_seed else "."
        lines.append((label, f"{said or f'is not told apart from {reference}'}: " + "; ".join(cells) + end))
    return Verdict(lead, lines)


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]


def fit_columns(frame: pd.DataFrame, width: int = TERMINAL_WIDTH) -> str:
    """``frame`` as text in blocks of whole columns, each block at most ``width`` characters wide where one
    column allows it (the row names repeat in every block)."""
    blocks, columns, start = [], list(frame.columns), 0
    while start < len(columns):
        end = start + 1
        while end < len(columns) and _text_width(frame[columns[start : end + 1]]) <= width:
            end += 1
        blocks.append(frame[columns[start:end]].to_string())
        start = end
    return "\n\n".join(blocks) if blocks else frame.to_string()


def _text_width(frame: pd.DataFrame) -> int:
    return max(len(line) for line in frame.to_string().splitlines())


def headline_text(metrics: pd.DataFrame, seed_gains: pd.DataFrame | None = None) -> str:
    """Plain-text headline for a terminal of :data:`TERMINAL_WIDTH` columns: the verdict (with ``seed_gains``),
    then one table per headline label fraction."""
    metric = auroc_metric(metrics)
    found = verdict(seed_gains, metric) if seed_gains is not None else None
    blocks = [found.text()] if found is not None else []
    blocks += [
        f"{headline_caption(metrics, f, metric_words(metric))}\n{fit_columns(headline_table(metrics, f, metric))}"
        for f in headline_fractions(metrics)
    ]
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
    """Print the verdict and the headline tables of a run folder (or eval folder) to the terminal; used by
    ``cfcl demo``."""
    found = metrics_path(path)
    seed_gains = found.parent / layout.SEED_GAINS
    gains = pd.read_csv(seed_gains) if seed_gains.is_file() and seed_gains.read_text().strip() else None
    print(headline_text(pd.read_csv(found), gains), file=file or sys.stdout)
