"""NIH ChestX-ray14 (Wang et al. 2017): ``Data_Entry_2017.csv``, PNGs in the ``images*/`` folders
of the unpacked archives, and the official ``train_val_list.txt`` / ``test_list.txt``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import Field

from cfcl.config import StrictModel
from cfcl.data.datasets.common import (
    TRAIN_VAL,
    DatasetError,
    Findings,
    Table,
    findings_table,
    keep,
    normalise_sex,
    parse_age,
    read_table,
)

COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
]
FINDINGS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
]
NO_FINDING = "No Finding"
# ``split: official``: validation patients come from train_val_list.txt
OFFICIAL_SPLITS = {TRAIN_VAL: TRAIN_VAL, "test": "test"}


class NihOptions(StrictModel):
    """Findings: names in ``Finding Labels`` (joined by ``|``), 1 when listed, else 0 (none is
    missing). Reference filter: none (``views`` AP and PA). ChestX-ray14 records no scanner: the
    domain is a column of the table (default ``View Position``). ``images`` is a glob of the
    folders holding the PNGs, directly or one level down (``images_001/images/``)."""

    csv: str = "Data_Entry_2017.csv"
    images: str = "images*"
    train_val_list: str = "train_val_list.txt"
    test_list: str = "test_list.txt"
    findings: Findings = Field(default_factory=lambda: list(FINDINGS), min_length=1)
    views: list[str] = ["PA", "AP"]
    domain_column: str = "View Position"


def parse_findings(cells: pd.Series, source: Path) -> pd.Series:
    """Each ``Finding Labels`` cell as a set of names; a name outside ChestX-ray14's is an error."""
    names = cells.fillna("").astype(str).map(lambda text: {n.strip() for n in text.split("|") if n.strip()})
    known = set(FINDINGS) | {NO_FINDING}
    unknown = names.map(lambda found: sorted(found - known))
    if unknown.map(bool).any():
        row = int(unknown.map(bool).to_numpy().argmax())
        raise DatasetError(
            f"{source}: column 'Finding Labels' holds {unknown.iat[row][0]!r} in row {row + 2}; "
            f"expected {NO_FINDING!r} or names among {', '.join(FINDINGS)} joined by '|'"
        )
    return names


def image_files(root: Path, pattern: str) -> dict[str, Path]:
    """Every PNG in the folders matching ``pattern``, by file name."""
    folders = [f for f in sorted(root.glob(pattern)) if f.is_dir()]
    return {p.name: p for folder in folders for p in sorted(folder.rglob("*.png"))}


def official_split(root: Path, options: NihOptions, images: pd.Series) -> pd.Series:
    """``train_val`` / ``test`` by the official lists (empty names: not read), else empty."""
    split = pd.Series("", index=images.index, dtype=object)
    for key, value in (("train_val_list", TRAIN_VAL), ("test_list", "test")):
        name = getattr(options, key)
        if not name:
            continue
        if not (root / name).is_file():
            raise DatasetError(f"official split list {root / name} does not exist (nih.{key}; '' does without it)")
        split[images.isin(set((root / name).read_text().split()))] = value
    return split


def load(root: Path, options: NihOptions) -> Table:
    source = root / options.csv
    table = read_table(source, COLUMNS + [options.domain_column], dtype={"Image Index": str, "Patient ID": str})
    absent = [f for f in options.findings if f not in FINDINGS]
    if absent:
        raise DatasetError(
            f"{source}: column 'Finding Labels' has no finding {absent[0]!r} (nih.findings); "
            f"its findings are {', '.join(FINDINGS)}"
        )
    names = parse_findings(table["Finding Labels"], source)
    dropped: dict[str, int] = {}
    table = keep(table, table["View Position"].isin(options.views), f"View Position not in {options.views}", dropped)
    table = keep(table, table[options.domain_column].notna(), f"{options.domain_column} missing", dropped)
    names = names[table.index]
    files = image_files(root, options.images)
    rows = pd.DataFrame(
        {
            "path": [str(files.get(name, root / "images" / name)) for name in table["Image Index"]],
            "image_id": table["Image Index"],
            "patient_id": table["Patient ID"],
            "domain": table[options.domain_column].astype(str),
            "sex": normalise_sex(table["Patient Gender"]),
            "age": parse_age(table["Patient Age"]),
            "laterality": "",
            "view": table["View Position"],
            "follow_up": pd.to_numeric(table["Follow-up #"], errors="coerce"),
            "official_split": official_split(root, options, table["Image Index"]),
        }
    )
    findings = {name: names.map(lambda found, name=name: float(name in found)) for name in options.findings}
    lists = " / ".join(str(root / name) for name in (options.train_val_list, options.test_list) if name)
    return findings_table(rows, findings, dropped, options.domain_column, lists)
