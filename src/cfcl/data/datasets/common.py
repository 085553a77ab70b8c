"""What every dataset adapter returns, and the shared steps after it: domain/label codes and splits.

An adapter reads its dataset's own metadata files and returns a :class:`Table` with one row per
image: ``path, image_id, patient_id, domain, label`` (domain and label as names), ``sex``
(``F``/``M``/empty), ``age`` (years, NaN when unknown), ``laterality`` (``L``/``R``/empty) and any
dataset extras. A multi-label adapter also names its binary ``findings`` and gives one column
``finding_<name>`` per finding (1 / 0 / NaN missing); its ``label`` is "any finding"
(:func:`findings_table`). The rest of ``cfcl data prepare`` is the same for every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AfterValidator

from cfcl.data.store import ANY_FINDING_LABELS, finding_column
from cfcl.errors import CfclError, ConfigError

ROW_COLUMNS = ["path", "image_id", "patient_id", "domain", "label", "sex", "age", "laterality"]
TRAIN_VAL = "train_val"  # an official split whose patients the validation split is drawn from


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"findings must be distinct, {repeated} repeated")
    return names


Findings = Annotated[list[str], AfterValidator(_distinct)]  # an adapter's ``findings`` option


class DatasetError(CfclError):
    """A dataset's metadata files are missing, lack a column or hold values cfcl cannot use."""


@dataclass
class Table:
    """Rows of one dataset after its filters, with the label names in code order (and, for a
    multi-label dataset, the finding names in column order)."""

    rows: pd.DataFrame
    labels: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)  # rows the adapter could not read: image_id, path, kind, error
    breast_mask: bool = False
    flip_right: bool = False
    domain_source: str = "domain"  # where the domain comes from, for error messages
    split_source: str = ""  # the file(s) holding the official split (column ``official_split``), for error messages
    findings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in ROW_COLUMNS + [finding_column(f) for f in self.findings] if c not in self.rows.columns]
        if missing:
            raise ValueError(f"adapter table lacks column(s) {missing}")
        unknown = sorted(set(self.rows["label"]) - set(self.labels))
        if unknown:
            raise DatasetError(f"label value(s) {unknown} are not among the labels {self.labels}")


def findings_table(
    rows: pd.DataFrame,
    findings: dict[str, pd.Series],
    dropped: dict[str, int],
    domain_source: str,
    split_source: str = "",
) -> Table:
    """A multi-label adapter's :class:`Table` (labels ``ANY_FINDING_LABELS``): ``rows`` with one
    ``finding_<name>`` column per finding (floats 1 / 0 / NaN missing) and ``label`` "any finding"
    when at least one finding is 1, else "negative" (a missing finding is not a positive one)."""
    columns = {finding_column(name): values.to_numpy(dtype=float) for name, values in findings.items()}
    positive = np.zeros(len(rows), dtype=bool)
    for values in columns.values():
        positive |= values == 1
    labelled = rows.assign(label=np.where(positive, ANY_FINDING_LABELS[1], ANY_FINDING_LABELS[0]))
    return Table(
        labelled.assign(**columns),
        ANY_FINDING_LABELS,
        dropped,
        domain_source=domain_source,
        split_source=split_source,
        findings=list(findings),
    )


def read_table(path: Path, required: list[str], **kwargs) -> pd.DataFrame:
    """Read a CSV that must exist and hold ``required`` columns; errors name the file and columns."""
    if not path.is_file():
        raise DatasetError(f"metadata file {path} does not exist")
    try:
        table = pd.read_csv(path, low_memory=False, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"metadata file {path} is not a readable CSV ({exc})") from None
    require_columns(table, required, path)
    return table


def require_columns(table: pd.DataFrame, required: list[str], source: Path | str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing)
        raise DatasetError(f"{source} lacks column(s) {shown} (has: {', '.join(map(str, table.columns[:30]))})")


def keep(table: pd.DataFrame, mask: pd.Series, reason: str, dropped: dict[str, int]) -> pd.DataFrame:
    """Apply one filter and count what it dropped under ``reason``."""
    mask = mask.fillna(False).astype(bool)
    count = int((~mask).sum())
    if count:
        dropped[reason] = dropped.get(reason, 0) + count
    return table[mask]


def normalise_sex(values: pd.Series) -> pd.Series:
    """``F``/``M`` from the many spellings datasets use; anything else becomes empty."""
    text = values.fillna("").astype(str).str.strip().str.upper()
    return text.map(lambda s: s[0] if s[:1] in ("F", "M") and s not in ("FM",) else "")


def parse_age(values: pd.Series) -> pd.Series:
    """Ages as years, also from DICOM age strings (``053Y`` -> 53.0); NaN when there is no number."""
    return pd.to_numeric(values.astype(str).str.extract(r"(\d+)", expand=False), errors="coerce")


def seeded_groups(patients: pd.Series, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Each row's patient group, ``test`` / ``val`` / ``train``, drawn with ``seed``: patients are
    shuffled and the first ``test_fraction`` of them form the test group, the next ``val_fraction``
    the validation group, the rest the training group."""
    unique = np.array(sorted(set(patients.astype(str))), dtype=object)
    order = np.random.default_rng(seed).permutation(len(unique))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    n_val = int(round(val_fraction * len(unique)))
    group = np.where(rank < n_test, "test", np.where(rank < n_test + n_val, "val", "train"))
    return patients.astype(str).map(dict(zip(unique, group)))


def with_ood(groups: pd.Series, is_ood: pd.Series) -> pd.Series:
    """In-distribution rows keep their group as split; out-of-distribution rows get ``ood_test``
    (test group) or ``ood_train`` (the others), so no test patient is ever in a training split."""
    ood = is_ood.to_numpy(dtype=bool)
    return groups.where(~ood, np.where(groups == "test", "ood_test", "ood_train"))


def assign_splits(
    patients: pd.Series, is_ood: pd.Series, seed: int, val_fraction: float, test_fraction: float
) -> pd.Series:
    """Seeded patient-level splits: every image of a patient falls on the same side."""
    return with_ood(seeded_groups(patients, seed, val_fraction, test_fraction), is_ood)


def official_groups(
    rows: pd.DataFrame, groups: dict[str, str], seed: int, val_fraction: float, source: str
) -> pd.Series:
    """Each row's patient group from its ``official_split`` value, as ``groups`` maps it: ``test``,
    ``val``, ``train``, or ``TRAIN_VAL``, whose patients are split into ``val`` (``val_fraction``
    of them, drawn with ``seed``) and ``train``. An image without a known official split, or a
    patient in two official splits, is an error naming ``source``."""
    official = rows["official_split"].astype(str)
    unknown = ~official.isin(groups)
    if unknown.any():
        value = official[unknown].iat[0]
        what = f"official split {value!r}" if value else "no official split"
        raise DatasetError(
            f"{source}: image {rows['image_id'][unknown].iat[0]} has {what} ({int(unknown.sum())} image(s) "
            f"without one of {sorted(groups)}); split: official needs every image in one"
        )
    patients = rows["patient_id"].astype(str)
    per_patient = official.groupby(patients).unique()
    shared = per_patient[per_patient.map(len) > 1]
    if len(shared):
        raise DatasetError(
            f"{source}: patient {shared.index[0]} is in official splits {sorted(shared.iat[0])} "
            f"({len(shared)} patient(s) in more than one); split: official needs splits that share no patient"
        )
    group = official.map(groups)
    pooled = group == TRAIN_VAL
    group[pooled] = seeded_groups(patients[pooled], seed, val_fraction, 0.0)
    return group


@dataclass
class Encoded:
    meta: pd.DataFrame
    domains: list[str]
    ood_ids: list[int]


def encode(
    table: Table,
    domains: list[str] | None,
    other_domains: str,
    ood_domains: list[str],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    dropped: dict[str, int],
    official: dict[str, str] | None = None,
) -> Encoded:
    """Integer domain/label codes, the domain list (config order or sorted) and the splits: seeded,
    or with ``official`` (the dataset's official split values -> groups) the dataset's own."""
    rows = table.rows.reset_index(drop=True)
    present = sorted(set(rows["domain"].astype(str)))
    if domains is not None:
        unknown = [d for d in present if d not in domains]
        if unknown and other_domains == "error":
            raise DatasetError(
                f"column {table.domain_source!r} holds value(s) {unknown} that are not in the configured domains "
                f"{domains} (add them to 'domains' or set other_domains=drop)"
            )
        rows = keep(rows, rows["domain"].astype(str).isin(domains), "domain not in configured domains", dropped)
        names = list(domains)
    else:
        names = present
    missing_ood = [d for d in ood_domains if d not in names]
    if missing_ood:
        raise ConfigError(f"ood_domains {missing_ood} are not among the dataset's domains {names}")
    if rows.empty:
        raise DatasetError("no image is left after the dataset's filters and domain selection")
    rows = rows.reset_index(drop=True)
    domain_code = rows["domain"].astype(str).map({d: i for i, d in enumerate(names)}).astype(int)
    label_code = rows["label"].map({name: i for i, name in enumerate(table.labels)}).astype(int)
    is_ood = rows["domain"].isin(ood_domains)
    if official is None:
        split = assign_splits(rows["patient_id"], is_ood, seed, val_fraction, test_fraction)
    else:
        split = with_ood(official_groups(rows, official, seed, val_fraction, table.split_source), is_ood)
    extras = [c for c in rows.columns if c not in ROW_COLUMNS]
    meta = pd.DataFrame(
        {
            "index": np.arange(len(rows)),
            "image_id": rows["image_id"].astype(str),
            "patient_id": rows["patient_id"].astype(str),
            "split": split.to_numpy(),
            "domain": domain_code.to_numpy(),
            "label": label_code.to_numpy(),
            "domain_name": rows["domain"].astype(str),
            "label_name": rows["label"].astype(str),
            "sex": rows["sex"].astype(str),
            "age": pd.to_numeric(rows["age"], errors="coerce"),
            "laterality": rows["laterality"].astype(str),
            **{c: rows[c] for c in extras},
            "path": rows["path"].astype(str),
        }
    )
    return Encoded(meta, names, [names.index(d) for d in ood_domains])
