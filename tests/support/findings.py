"""A tiny multi-label store: several binary findings per image, some of them missing, as CheXpert's are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfcl.data.store import ANY_FINDING_LABELS, FINDINGS, ImageStore, finding_column, write_store
from support.evaluation import DOMAINS, SPLITS, complete_stage

FINDING_NAMES = ["Pleural Effusion", "Edema", "Nodule"]
MISSING = {"Pleural Effusion": 0.0, "Edema": 0.25, "Nodule": 0.15}  # share of images whose finding is missing


def findings_store(path: Path, size: int = 16, seed: int = 0, sex: bool = False) -> ImageStore:
    """Each finding brightens its own patch of the image (a third of the width each, in the middle rows); domain =
    global intensity offset, domain 3 is OOD (the splits and domains of :func:`support.evaluation.tiny_store`).

    Findings are independent, present in about 40% of the images; ``MISSING`` of them are missing (NaN), at random.
    ``label`` is "any finding"; ``sex``: a ``sex`` column, F/M in blocks of eight images."""
    rng = np.random.default_rng(seed)
    split = [s for s, n in SPLITS.items() for _ in range(n)]
    domain = np.array([3 if s.startswith("ood") else (0, 0, 1, 2)[i % 4] for i, s in enumerate(split)])
    n = len(split)
    present = rng.random((n, len(FINDING_NAMES))) < 0.4
    images = rng.normal(0.3, 0.06, size=(n, size, size)) + 0.12 * domain[:, None, None]
    third, rows = size // 3, slice(size // 4, size - size // 4)
    for f in range(len(FINDING_NAMES)):
        images[:, rows, f * third : (f + 1) * third] += 0.15 * present[:, f, None, None] + rng.normal(
            0, 0.05, (n, 1, 1)
        )
    findings = present.astype(float)
    for f, name in enumerate(FINDING_NAMES):
        findings[rng.random(n) < MISSING[name], f] = np.nan
    meta = pd.DataFrame(
        {
            "index": np.arange(n),
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "split": split,
            "domain": domain,
            "label": (findings == 1).any(axis=1).astype(int),
            **{finding_column(name): findings[:, f] for f, name in enumerate(FINDING_NAMES)},
        }
    )
    if sex:
        meta["sex"] = np.where((np.arange(n) // 8) % 2 == 0, "F", "M")
    pixels = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    extra = {"ood_domains": [3], FINDINGS: FINDING_NAMES}
    store = write_store(path, pixels, meta, DOMAINS, ANY_FINDING_LABELS, extra=extra)
    complete_stage(path, "data_prepare")
    return store
