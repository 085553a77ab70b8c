"""Report figures drawn from the evaluation tables, with matplotlib's object API (no pyplot state)."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfcl.evaluation.metrics import seed_interval
from cfcl.evaluation.results import INVARIANCE_MEASURES, MEAN_AUROC, whole_test_sets

LINESTYLE = {"linear": "-", "transfer": "-", "finetune": "--", "ceiling": ":"}
TRANSFER_COLUMN = "OOD (direct transfer)"  # the ID probe applied to the OOD test set (protocol ``transfer``)
TICK_CHARACTERS = 14  # a test set's name wraps to lines of at most this many characters under its tick


def metric_words(metric: str) -> str:
    """How the report names a metric: ``AUROC``, a multi-label store's ``AUROC (mean over findings)``."""
    return "AUROC (mean over findings)" if metric == MEAN_AUROC else metric.upper()


def method_colours(methods) -> dict[str, str]:
    """The same colour for a method in every panel."""
    return {m: f"C{i % 10}" for i, m in enumerate(sorted(set(methods)))}


def test_columns(metrics: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(column name, test_set, domain)`` of the headline test sets present, ID first, then the ID test
    patients as each scanner renders them (the synthetic benchmark's ``rendered`` test set).

    Domains keep their order in ``metrics`` (the evaluation writes them in store order).
    """
    present = metrics[["test_set", "domain"]].drop_duplicates()
    domains = {
        t: [d for d in present.loc[present["test_set"] == t, "domain"] if d != "all"] for t in ("id", "rendered")
    }
    columns = [
        ("ID", "id", "all"),
        *[(f"ID {d}", "id", d) for d in domains["id"]],
        ("OOD (own labels)", "ood", "all"),
        *[(f"ID patients as {d}", "rendered", d) for d in domains["rendered"]],
    ]
    return [c for c in columns if ((present["test_set"] == c[1]) & (present["domain"] == c[2])).any()]


def seed_summary(metrics: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Mean, std (over seeds; 0 for one seed) and seed count per method/protocol/fraction/test set/domain (whole test
    sets)."""
    keys = ["method", "protocol", "label_fraction", "test_set", "domain"]
    whole = whole_test_sets(metrics)
    values = whole[whole["metric"] == metric]
    summary = values.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    return summary


def panel_columns(rows: pd.DataFrame, protocol: str) -> list[tuple[str, str, str]]:
    """The headline test sets of ``rows`` of one protocol, named as in the tables: a ``transfer`` row is the
    ID probe on the OOD test set."""
    return [(TRANSFER_COLUMN, "ood", "all")] if protocol == "transfer" else test_columns(rows)


def auroc_vs_fraction(metrics: pd.DataFrame, metric: str = "auroc") -> Figure:
    """``metric`` (AUROC) against label fraction, one panel per test set: mean ± std over seeds, points alone with one
    seed."""
    summary = seed_summary(metrics, metric)
    panels = [(name, t, d, False) for name, t, d in test_columns(metrics)]
    if (summary["protocol"] == "transfer").any():
        panels.append((TRANSFER_COLUMN, "ood", "all", True))
    n, cols = len(panels), min(len(panels), 3)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = method_colours(summary["method"])
    fractions = sorted(summary["label_fraction"].unique() * 100)
    for ax, (name, test_set, domain, transfer) in zip(axes, panels):
        part = summary[(summary["test_set"] == test_set) & (summary["domain"] == domain)]
        part = part[(part["protocol"] == "transfer") == transfer]
        for (method, protocol), line in part.groupby(["method", "protocol"], sort=True):
            line = line.sort_values("label_fraction")
            spread = line["std"] if (line["count"] >= 2).all() else None
            ax.errorbar(
                line["label_fraction"] * 100,
                line["mean"],
                yerr=spread,
                marker="o",
                capsize=3,
                color=colours[method],
                ls=LINESTYLE.get(protocol, "-"),
                label=f"{method} ({protocol})",
            )
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.minorticks_off()
        ax.set_title(name)
        ax.set_xlabel("label fraction (%)")
        ax.set_ylabel(metric_words(metric))
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def gain_figure(
    gains: pd.DataFrame, colours: dict[str, str] | None = None, value: str = "gain", what: str | None = None
) -> Figure:
    """A difference per method and test set/domain with its interval; one panel per protocol x fraction.

    ``gains`` holds ``value`` (the AUROC gain over the reference of ``gains.csv``, or the subgroup gap of
    ``subgroup_gaps.csv``), ``ci_low`` and ``ci_high`` (NaN: no interval, a point alone); ``what`` names it
    (default: AUROC gain over the reference). ``colours``: method colours shared with the other figures.
    Test sets are named as in the headline tables, their names wrapped so that neighbours do not overlap.
    """
    panels = gains[["protocol", "label_fraction"]].drop_duplicates().sort_values(["protocol", "label_fraction"])
    n = len(panels)
    widest = max(len(panel_columns(gains[gains["protocol"] == p], p)) for p in panels["protocol"].unique())
    fig = Figure(figsize=(max(5.0, 1.15 * widest + 1.5), 3.0 * n))
    axes = fig.subplots(n, 1, squeeze=False).ravel()
    methods = sorted(gains["method"].unique())
    colours = colours or method_colours(methods)
    width = 0.8 / max(1, len(methods))
    for ax, (_, panel) in zip(axes, panels.iterrows()):
        part = gains[(gains["protocol"] == panel["protocol"]) & (gains["label_fraction"] == panel["label_fraction"])]
        groups = panel_columns(part, panel["protocol"])
        place = {(test_set, domain): g for g, (_, test_set, domain) in enumerate(groups)}
        part = part[[(r.test_set, r.domain) in place for r in part.itertuples()]]
        for i, method in enumerate(methods):
            rows = part[part["method"] == method]
            x = [place[(r.test_set, r.domain)] + (i - (len(methods) - 1) / 2) * width for r in rows.itertuples()]
            # The interval as it is: a percentile bootstrap's may not contain its point estimate.
            ax.vlines(x, rows["ci_low"], rows["ci_high"], color=colours[method], lw=1.5)
            ax.plot(x, rows[value], "o", color=colours[method], label=method)
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(range(len(groups)), [textwrap.fill(name, TICK_CHARACTERS) for name, _, _ in groups], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        reference = part["reference"].iloc[0] if len(part) else ""
        ax.set_title(
            f"{panel['protocol']}, {panel['label_fraction'] * 100:g}% labels: {what or f'AUROC gain over {reference}'}"
        )
        ax.set_ylabel(f"AUROC {value}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def measured(table: pd.DataFrame) -> list[str]:
    """The invariance measures of ``domain_predictability.csv`` with a value (``cf_invariance`` needs true
    counterfactuals)."""
    return [m for m in INVARIANCE_MEASURES if table[m].notna().any()]


def predictability_figure(table: pd.DataFrame) -> Figure:
    """Per method, each domain-invariance measure (lower is more invariant): mean and t-interval over seeds,
    a bar alone where there is no interval (one seed)."""
    measures = measured(table)
    methods = sorted(table["method"].unique())
    fig = Figure(figsize=(max(4.0, 0.9 * len(methods) + 2) * len(measures), 3.4))
    axes = fig.subplots(1, len(measures), squeeze=False).ravel()
    for ax, measure in zip(axes, measures):
        estimates = [seed_interval(table[table["method"] == m].set_index("seed")[measure]) for m in methods]
        means = np.array([e.mean for e in estimates])
        err = np.array([[e.mean - e.ci_low, e.ci_high - e.mean] for e in estimates]).T
        ax.bar(methods, means, color="tab:blue")
        shown = ~np.isnan(err).any(axis=0)
        if shown.any():
            ax.errorbar(np.flatnonzero(shown), means[shown], yerr=err[:, shown], fmt="none", capsize=4, color="black")
        err = np.nan_to_num(err)
        if measure == "balanced_accuracy":
            ax.axhline(float(table["chance"].iloc[0]), color="tab:red", ls="--", label="chance")
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.axhline(0, color="grey", lw=1)
        ax.set_ylim(min(0.0, float(np.nanmin(means - err[0]))) - 0.05, 1.08)
        ax.set_title(INVARIANCE_MEASURES[measure].replace("_", " "))
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    axes[0].set_ylabel("lower: more domain-invariant")
    fig.tight_layout()
    return fig
