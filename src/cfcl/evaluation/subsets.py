"""Label-fraction subsets of a training split, stratified by domain and label, seeded.

A multi-label store's subsets are drawn the same way (its ``label`` is "any finding"); a subset must then also hold
every finding present and absent (:func:`require_findings`)."""

from __future__ import annotations

import numpy as np
import pandas as pd


class SubsetTooSmall(Exception):
    """The requested fraction leaves out a class; the caller skips it and records why."""


def labelled_subset(
    meta: pd.DataFrame, rows: np.ndarray, fraction: float, seed: int, split: str = "train", draw: int = 0
) -> np.ndarray:
    """Sorted rows: ``round(fraction * n)`` random images of every (domain, label) group.

    The same seed, draw and fraction always give the same subset, whatever encoder is evaluated,
    so methods are compared on identical labels; ``draw`` 1, 2, ... are further independent
    subsets of the same seed. Raises :class:`SubsetTooSmall` when the subset lacks a class that
    ``rows`` holds.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, round(fraction * 1_000_000), *([draw] if draw else [])])
    table = meta.iloc[rows][["domain", "label"]].assign(row=rows)
    chosen = []
    for _, group in table.groupby(["domain", "label"], sort=True):
        take = int(round(fraction * len(group)))
        chosen.append(rng.choice(group["row"].to_numpy(), size=take, replace=False))
    subset = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)
    missing = sorted(set(table["label"]) - set(meta["label"].to_numpy()[subset]))
    if missing:
        raise SubsetTooSmall(
            f"label fraction {fraction:g} of split '{split}' ({len(rows)} images) holds no image of label(s) {missing}"
        )
    return subset


def require_findings(findings: np.ndarray, names: list[str], rows: np.ndarray, what: str) -> None:
    """Raise :class:`SubsetTooSmall` unless every finding (a column of ``findings``: 1 / 0 / NaN missing) is both
    present and absent among ``rows``, which ``what`` names."""
    chosen = findings[rows]
    lacking = [n for n, c in zip(names, chosen.T) if not ((c == 1).any() and (c == 0).any())]
    if lacking:
        raise SubsetTooSmall(f"{what} ({len(rows)} images) holds finding(s) {lacking} not both present and absent")


def patient_holdout(meta: pd.DataFrame, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` rows: about ``fraction`` held out for validation, no patient in both.

    Folds are stratified by label as far as the patient grouping allows. Raises
    :class:`SubsetTooSmall` when the validation rows would hold a single class.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = meta["label"].to_numpy()[rows]
    groups = meta["patient_id"].astype(str).to_numpy()[rows]
    n_splits = max(2, round(1 / fraction))
    if len(np.unique(labels)) < 2 or len(np.unique(groups)) < n_splits:
        raise SubsetTooSmall(f"{len(rows)} images are too few to hold out a validation part holding every class")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(folds.split(rows, labels, groups))
    if len(np.unique(labels[val])) < 2:
        raise SubsetTooSmall(f"the validation part held out of {len(rows)} images holds a single class")
    return np.sort(rows[train]), np.sort(rows[val])
