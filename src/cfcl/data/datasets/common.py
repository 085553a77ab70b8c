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
    findings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in ROW_COLUMNS + [finding_column(f) for f in self.findings] if c not in self.rows.columns]
        if missing:
            raise ValueError(f"adapter table lacks column(s) {missing}")
        unknown = sorted(set(self.rows["label"]) - set(self.labels))
        if unknown:
            raise DatasetError(f"label value(s) {unknown} are not among the labels {self.labels}")


def findings_table(
    rows: pd.DataFrame, findings: dict[str, pd.Series], dropped: dict[str, int], domain_source: str
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
        labelled.assign(**columns), ANY_FINDING_LABELS, dropped, domain_source=domain_source, findings=list(findings)
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


def assign_splits(
    patients: pd.Series, is_ood: pd.Series, seed: int, val_fraction: float, test_fraction: float
) -> pd.Series:
    """Seeded patient-level splits: every image of a patient falls on the same side.

    Patients are shuffled with ``seed`` and the first ``test_fraction`` of them form the test group,
    the next ``val_fraction`` the validation group, the rest the training group. In-distribution
    rows get ``test``/``val``/``train``; out-of-distribution rows get ``ood_test`` (test group) or
    ``ood_train`` (the others), so no test patient is ever in a training split.
    """
    unique = np.array(sorted(set(patients.astype(str))), dtype=object)
    order = np.random.default_rng(seed).permutation(len(unique))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    n_val = int(round(val_fraction * len(unique)))
    group = np.where(rank < n_test, "test", np.where(rank < n_test + n_val, "val", "train"))
    by_patient = dict(zip(unique, group))
    split = patients.astype(str).map(by_patient)
    ood = is_ood.to_numpy(dtype=bool)
    split = split.where(~ood, np.where(split == "test", "ood_test", "ood_train"))
    return split


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
) -> Encoded:
    """Integer domain/label codes, the domain list (config order or sorted) and the splits."""
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
    split = assign_splits(rows["patient_id"], rows["domain"].isin(ood_domains), seed, val_fraction, test_fraction)
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
