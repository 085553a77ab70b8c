"""Any dataset given as one CSV plus an image folder: the user names the columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cfcl.config import StrictModel
from cfcl.data.datasets.common import DatasetError, Table, normalise_sex, read_table


class CsvOptions(StrictModel):
    """``file`` is relative to ``root``; image paths in ``path_column`` are relative to ``images``
    (itself relative to ``root``; empty = root) unless absolute. Labels are coded in ``labels``
    order when given, else sorted. Empty column names mean "not in this table"."""

    file: str = "metadata.csv"
    images: str = ""
    path_column: str = "path"
    domain_column: str = "domain"
    label_column: str = "label"
    patient_column: str = "patient_id"
    image_id_column: str = ""
    sex_column: str = ""
    age_column: str = ""
    laterality_column: str = ""
    extra_columns: list[str] = []
    labels: list[str] | None = None
    breast_mask: bool = False
    flip_right: bool = False


def load(root: Path, options: CsvOptions) -> Table:
    named = [options.path_column, options.domain_column, options.label_column, options.patient_column]
    optional = [options.image_id_column, options.sex_column, options.age_column, options.laterality_column]
    source = root / options.file
    table = read_table(
        source, named + [c for c in optional if c] + options.extra_columns, dtype=str, keep_default_na=False
    )
    empty = table[named].eq("").any(axis=1)
    if empty.any():
        column = next(c for c in named if table.loc[empty, c].eq("").any())
        raise DatasetError(
            f"{source}: column {column!r} is empty in row {int(empty.idxmax()) + 2} (every row needs a value)"
        )
    base = root / options.images
    labels = options.labels if options.labels is not None else sorted(set(table[options.label_column]))
    unknown = sorted(set(table[options.label_column]) - set(labels))
    if unknown:
        raise DatasetError(f"{source}: column {options.label_column!r} holds {unknown}, expected one of {labels}")
    rows = pd.DataFrame(
        {
            "path": [str(p if Path(p).is_absolute() else base / p) for p in table[options.path_column]],
            "image_id": table[options.image_id_column] if options.image_id_column else table[options.path_column],
            "patient_id": table[options.patient_column],
            "domain": table[options.domain_column],
            "label": table[options.label_column],
            "sex": normalise_sex(table[options.sex_column]) if options.sex_column else "",
            "age": pd.to_numeric(table[options.age_column], errors="coerce") if options.age_column else float("nan"),
            "laterality": table[options.laterality_column] if options.laterality_column else "",
            **{c: table[c] for c in options.extra_columns},
        }
    )
    return Table(
        rows,
        list(labels),
        breast_mask=options.breast_mask,
        flip_right=options.flip_right,
        domain_source=options.domain_column,
    )
