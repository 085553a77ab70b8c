"""What an encoder's features hold: linear read-outs of the label, the scanner and the benchmark's causal factors.

The synthetic benchmark stores the factors that drew each image (age, anatomy traits, lesion
area, ...), so it can say not only whether an encoder learnt the lesion but what it learnt
instead. Linear models are fitted on the ID **training** split and scored on the ID
**validation** split (no test image is read):

- ``label_auroc``: a logistic probe on every training label (macro one-vs-rest beyond two classes);
- ``scanner_balanced_accuracy``: a logistic classifier of the scanner;
- ``r2_FACTOR`` for each of ``--factors``: a ridge regression (its penalty chosen by
  cross-validation on the training split), R² on validation (0: no better than the mean);
- ``effective_rank``: ``exp`` of the entropy of the normalised singular values of the centred
  validation features (1: every image on one line; the feature width: spread evenly).

Prints one JSON line per encoder, then a Markdown table.

    python benchmarks/factor_readout.py --data runs/benchmark/data \\
        runs/benchmark/pretrain/simclr-s0 runs/dino_budget/dino-s0-e10 random

``random``: the first encoder's architecture, initialised as the evaluation's random encoder (``--seed``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cfcl.api import embed, load_encoder
from cfcl.data.store import ImageStore
from cfcl.errors import CheckpointError
from cfcl.evaluation.evaluate import RANDOM, EncoderRef
from cfcl.evaluation.metrics import auroc, balanced_accuracy
from cfcl.evaluation.probe import class_probabilities, fit_probe

DEFAULT_FACTORS = ("age", "body_w", "heart_w", "bone_density", "lesion_area")
RIDGE_PENALTIES = np.logspace(-2, 4, 13)


def effective_rank(features: np.ndarray) -> float:
    """``exp(entropy)`` of the singular values of the centred ``features``, normalised to sum to 1."""
    singular = np.linalg.svd(features - features.mean(axis=0), compute_uv=False)
    share = singular / singular.sum()
    share = share[share > 0]
    return float(np.exp(-(share * np.log(share)).sum()))


def readout(
    train: np.ndarray, val: np.ndarray, meta_train, meta_val, n_labels: int, factors: tuple[str, ...]
) -> dict[str, float]:
    """Every read-out of the module docstring, from ``train``/``val`` features and their metadata rows."""
    label = fit_probe(train, meta_train["label"].to_numpy())
    scanner = fit_probe(train, meta_train["domain"].to_numpy())
    out = {
        "label_auroc": auroc(meta_val["label"].to_numpy(), class_probabilities(label, val, n_labels), "validation"),
        "scanner_balanced_accuracy": balanced_accuracy(meta_val["domain"].to_numpy(), scanner.predict(val)),
    }
    for factor in factors:
        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_PENALTIES))
        ridge.fit(train, meta_train[factor].to_numpy(dtype=float))
        out[f"r2_{factor}"] = float(r2_score(meta_val[factor].to_numpy(dtype=float), ridge.predict(val)))
    out["effective_rank"] = effective_rank(val)
    return out


def build(name: str, random_info: dict | None, seed: int):
    """The encoder at ``name`` (an ``encoder.pt`` or a pretrain folder), or ``random`` of ``random_info``'s
    architecture."""
    if name != RANDOM:
        return load_encoder(name)
    return EncoderRef(RANDOM, seed, random_info).build()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="+", help="encoder.pt files or pretrain folders; 'random' for a random one")
    parser.add_argument("--data", type=Path, required=True, help="the image store the encoders were trained on")
    parser.add_argument("--factors", nargs="+", default=list(DEFAULT_FACTORS), help="metadata columns to regress")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random encoder")
    args = parser.parse_args()

    store = ImageStore.open(args.data)
    missing = [f for f in args.factors if f not in store.meta.columns]
    if missing:
        raise SystemExit(
            f"factor_readout: {store.path / 'metadata.csv'} has no column {', '.join(missing)} "
            f"(expected the synthetic benchmark's factors, e.g. {', '.join(DEFAULT_FACTORS)})"
        )
    first = next((name for name in args.encoders if name != RANDOM), None)
    if first is None:
        raise SystemExit("factor_readout: 'random' needs a pretrained encoder among the encoders (its architecture)")
    try:  # every encoder before any work: a missing one is one line, not a traceback after the others
        random_info = load_encoder(first).info if RANDOM in args.encoders else None
        encoders = [(name, build(name, random_info, args.seed)) for name in args.encoders]
    except CheckpointError as exc:
        raise SystemExit(f"factor_readout: {exc}") from None
    train, val = store.indices("train"), store.indices("val")
    rows = []
    for name, encoder in encoders:
        features = embed(encoder, store.images[np.concatenate([train, val])])
        result = readout(
            features[: len(train)],
            features[len(train) :],
            store.meta.iloc[train],
            store.meta.iloc[val],
            len(store.labels),
            tuple(args.factors),
        )
        rows.append({"encoder": name, **{k: round(v, 4) for k, v in result.items()}})
        print(json.dumps(rows[-1]), flush=True)
    columns = [k for k in rows[0] if k != "encoder"]
    print("\n| encoder | " + " | ".join(columns) + " |\n|" + "---|" * (1 + len(columns)))
    for row in rows:
        print(f"| {row['encoder']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
