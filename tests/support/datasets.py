"""A tiny dataset for the generic ``csv`` adapter, for the data preparation and ``cfcl run`` tests."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def csv_root(tmp_path: Path, n: int = 12) -> Path:
    """A dataset as a CSV and a folder of PNGs, its columns named as no adapter names them (``CSV_OPTIONS`` does)."""
    root = tmp_path / "any"
    rows = []
    for i in range(n):
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20), 10 * i, dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        rows.append(
            {
                "file": f"{i}.png",
                "scanner": ["a", "b", "c"][i % 3],
                "finding": ["no", "yes"][i % 2],
                "subject": f"s{i // 3}",
                "age_years": str(20 + i),
                "site": "x",
            }
        )
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    return root


CSV_OPTIONS = {
    "file": "table.csv",
    "images": "imgs",
    "path_column": "file",
    "domain_column": "scanner",
    "label_column": "finding",
    "patient_column": "subject",
    "age_column": "age_years",
    "extra_columns": ["site"],
    "labels": ["no", "yes"],
}
