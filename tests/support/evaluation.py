"""Builders shared by the evaluation and report tests: a tiny labelled multi-domain store, encoders, a reference
probe."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from cfcl.config import StrictModel
from cfcl.contrastive.encoders import build_encoder, load_encoder, save_encoder
from cfcl.data.store import ImageStore, write_store
from cfcl.evaluation.features import extract_features
from cfcl.evaluation.probe import class_probabilities, fit_probe
from cfcl.stage import start_stage

DOMAINS = ["major", "middle", "rare", "held_out"]
SPLITS = {"train": 180, "val": 60, "test": 120, "ood_train": 60, "ood_test": 60}


class FixtureConfig(StrictModel):
    what: str = "fixture"


def complete_stage(folder: Path, name: str) -> None:
    """Mark ``folder`` as a finished stage output, as the real stage would."""
    start_stage(name, folder, FixtureConfig(what=str(folder))).finish()


def tiny_store(path: Path, size: int = 16, n_labels: int = 2, seed: int = 0, sex: bool = False) -> ImageStore:
    """Label = brightness of a central square; domain = global intensity offset; domain 3 is OOD.

    ``sex``: a ``sex`` column, F/M in blocks of eight images (both labels and every domain in each sex),
    and male images a little noisier, so that the two sexes score differently."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in SPLITS.items():
        for i in range(n):
            domain = 3 if split.startswith("ood") else (0, 0, 1, 2)[i % 4]
            rows.append((split, domain, (i // 4) % n_labels))
    meta = pd.DataFrame(rows, columns=["split", "domain", "label"])
    n = len(meta)
    images = rng.normal(0.3, 0.08, size=(n, size, size))
    images += 0.12 * meta["domain"].to_numpy()[:, None, None]
    c = size // 4
    images[:, c:-c, c:-c] += 0.15 * meta["label"].to_numpy()[:, None, None] + rng.normal(0, 0.06, (n, 1, 1))
    meta.insert(0, "index", np.arange(n))
    meta.insert(1, "image_id", [f"img{i}" for i in range(n)])
    meta.insert(2, "patient_id", [f"p{i // 2}" for i in range(n)])
    if sex:
        meta["sex"] = np.where((np.arange(n) // 8) % 2 == 0, "F", "M")
        images += rng.normal(0, 0.1, images.shape) * (meta["sex"].to_numpy() == "M")[:, None, None]
    pixels = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    labels = ["A", "B", "C", "D"][:n_labels] if n_labels > 2 else ["healthy", "opacity"]
    store = write_store(path, pixels, meta, DOMAINS, labels, extra={"ood_domains": [3]})
    complete_stage(path, "data_synth")
    return store


def tiny_encoder(folder: Path, method: str, seed: int, size: int = 16) -> Path:
    """A small random ResNet saved as a pretrain folder's ``encoder.pt``."""
    torch.manual_seed(100 + seed + zlib.crc32(method.encode()) % 97)
    folder.mkdir(parents=True, exist_ok=True)
    save_encoder(
        folder,
        build_encoder("small", width=4, blocks=[1, 1]),
        {"image_size": [size, size], "method": method, "seed": seed},
    )
    complete_stage(folder, "pretrain")
    return folder


def probe_auroc(store: ImageStore, encoder: Path, train_split: str, test_split: str, **where) -> float:
    """Test AUROC (macro one-vs-rest beyond two classes) of a probe fitted here on every ``train_split`` image and
    nothing else: what the evaluate stage must report for label fraction 1 and this encoder; ``where``: only the
    test images with these metadata values (``sex="F"``, ``domain=0``)."""
    features = extract_features(load_encoder(encoder)[0], store.images, 256)
    labels = store.meta["label"].to_numpy()
    train, test = store.indices(train_split), store.indices(test_split)
    for column, value in where.items():
        test = test[store.meta[column].to_numpy()[test] == value]
    probe = fit_probe(features[train], labels[train])
    prob = class_probabilities(probe, features[test], len(store.labels))
    if len(store.labels) == 2:
        return float(roc_auc_score(labels[test], prob[:, 1]))
    return float(roc_auc_score(labels[test], prob, multi_class="ovr", average="macro"))
