"""Generated versus true counterfactuals under a fixed encoder: how far each moves an image's features.

Reads a finished synthetic run: ``RUN/data`` with its true counterfactuals (``data/true_cf``), the
generated ones (``RUN/cf_store``, or ``--cf-store``) and the pretrained encoders
(``RUN/pretrain/<method>-s<seed>``; default: every one). For each encoder, over the training
images that have both a generated and a true counterfactual to the same target scanner, it reports

- ``x_to_generated``: mean ||f(x) - f(x_gen)||,
- ``x_to_true``: mean ||f(x) - f(x_true)||,
- ``generated_to_true``: mean ||f(x_gen) - f(x_true)||,

each over the median distance between different patients' images (those training images), the
normalisation of the evaluation's ``cf_invariance`` (``cfcl.evaluation.embeddings.counterfactual_invariance``),
per target scanner and overall. Prints a table, then one JSON line.

    python benchmarks/cf_feature_distance.py runs/benchmark [--encoder cf-simclr-s0 simclr-s0]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfcl import layout
from cfcl.contrastive.encoders import load_encoder
from cfcl.contrastive.methods import names
from cfcl.data.store import ImageStore
from cfcl.errors import CfclError
from cfcl.evaluation.embeddings import counterfactual_invariance
from cfcl.evaluation.features import extract_features
from cfcl.training import resolve_device

OVERALL = "all"


@dataclass(frozen=True)
class Pairs:
    """Every (training image, target scanner) with both counterfactuals: ``sources`` (data-store rows, each once),
    and per pair its ``position`` in ``sources``, its ``target`` scanner and its ``generated`` / ``true`` rows."""

    sources: np.ndarray
    position: np.ndarray
    target: np.ndarray
    generated: np.ndarray
    true: np.ndarray


def fail(message: str) -> SystemExit:
    """The one-line exit of a run this script cannot read."""
    return SystemExit(f"cf_feature_distance: {message}")


def open_stores(run: layout.RunLayout, cf_store: str) -> tuple[ImageStore, ImageStore, ImageStore]:
    """The data store, its generated and its true counterfactual stores; one line naming what is missing."""
    if not run.data.is_dir():
        raise fail(f"{run.data} does not exist; pass a finished `cfcl run` folder")
    if not run.true_cf.is_dir():
        raise fail(
            f"{run.true_cf} does not exist: not a synthetic run (only the synthetic benchmark has true counterfactuals)"
        )
    generated = run.stage(cf_store)
    if not generated.is_dir():
        writers = names(lambda m: m.needs_generator and layout.cf_store_name(m.parents, m.store_variant) == cf_store)
        raise fail(
            f"{generated} does not exist; run a method that needs a generator and reads it ({writers}) so that the "
            "run writes it"
            if writers
            else f"{generated} does not exist, and no method reads a store of that name"
        )
    return ImageStore.open(run.data), ImageStore.open(generated), ImageStore.open(run.true_cf)


def paired_counterfactuals(data: ImageStore, generated: ImageStore, true: ImageStore) -> Pairs:
    """The training images' (image, other scanner) pairs present in both counterfactual stores."""
    gen_table = generated.intervention_table(data, ("domain",), "generated counterfactual store")
    true_table = true.intervention_table(data, ("domain",), "true counterfactual store")
    train = data.indices("train")
    own = data.meta["domain"].to_numpy()[train]
    both = (gen_table[train] >= 0) & (true_table[train] >= 0)
    both[np.arange(len(train)), own] = False  # an image under its own scanner is no counterfactual
    rows, target = np.nonzero(both)
    if len(rows) == 0:
        raise fail(
            f"no training image of {data.path} has both a counterfactual in {generated.path} and one in "
            f"{true.path} to the same other scanner"
        )
    sources, position = np.unique(train[rows], return_inverse=True)
    return Pairs(sources, position, target, gen_table[train[rows], target], true_table[train[rows], target])


def encoder_folders(run: layout.RunLayout, chosen: list[str] | None) -> list[Path]:
    """The chosen ``METHOD-sSEED`` folders of ``RUN/pretrain`` (default: every one holding an encoder)."""
    found = sorted(p.parent.name for p in run.pretrain.glob(f"*/{layout.ENCODER_FILE}"))
    missing = [name for name in chosen or () if name not in found]
    if missing or not found:
        raise fail(
            f"{run.pretrain} has no {layout.ENCODER_FILE} of {', '.join(missing) or 'any encoder'} "
            f"(it has {', '.join(found) or 'none'})"
        )
    return [run.pretrain / name for name in chosen or found]


def distances(features: dict[str, np.ndarray], patients: np.ndarray, pairs: Pairs, where: np.ndarray) -> dict:
    """The three normalised distances over the pairs ``where``; ``generated_to_true`` is measured by the same helper
    from f(x) + (f(x_gen) - f(x_true)), whose distance to f(x) is ||f(x_gen) - f(x_true)||."""
    x, gen, true = features["x"], features["generated"][where], features["true"][where]
    at = pairs.position[where]
    return {
        "n": int(where.sum()),
        "x_to_generated": counterfactual_invariance(x, patients, gen, at),
        "x_to_true": counterfactual_invariance(x, patients, true, at),
        "generated_to_true": counterfactual_invariance(x, patients, x[at] + (gen - true), at),
    }


def measure(
    folder: Path, stores: tuple[ImageStore, ImageStore, ImageStore], pairs: Pairs, batch_size: int, device: torch.device
) -> dict[str, dict]:
    """Per target scanner (by name) and overall: the three distances under the encoder in ``folder``."""
    data, generated, true = stores
    encoder, info = load_encoder(folder)
    if list(info["image_size"]) != list(data.size):
        raise fail(
            f"{folder / layout.ENCODER_FILE} was trained on {info['image_size'][0]}x{info['image_size'][1]} images, "
            f"{data.path} holds {data.size[0]}x{data.size[1]}"
        )
    features = {
        name: extract_features(encoder, store.images[rows], batch_size, device).astype(np.float64)
        for name, store, rows in (
            ("x", data, pairs.sources),
            ("generated", generated, pairs.generated),
            ("true", true, pairs.true),
        )
    }
    patients = data.meta["patient_id"].to_numpy()[pairs.sources]
    if len(np.unique(patients)) < 2:
        raise fail(f"the paired training images of {data.path} show a single patient; no distance between patients")
    result = {data.domains[d]: distances(features, patients, pairs, pairs.target == d) for d in np.unique(pairs.target)}
    result[OVERALL] = distances(features, patients, pairs, np.ones(len(pairs.target), dtype=bool))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `cfcl run` folder of the synthetic benchmark")
    parser.add_argument("--encoder", nargs="+", metavar="METHOD-sSEED", help="default: every encoder of RUN/pretrain")
    parser.add_argument(
        "--cf-store", default=layout.CF_STORE, help=f"the generated store's folder in RUN (default {layout.CF_STORE})"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda:0...")
    args = parser.parse_args(argv)
    run = layout.RunLayout(args.run)
    try:
        stores = open_stores(run, args.cf_store)
        pairs = paired_counterfactuals(*stores)
        device = resolve_device(args.device)
        results = {
            folder.name: measure(folder, stores, pairs, args.batch_size, device)
            for folder in encoder_folders(run, args.encoder)
        }
    except CfclError as exc:
        raise fail(str(exc)) from exc
    table = pd.DataFrame(
        [{"encoder": name, "target": target, **values} for name, by in results.items() for target, values in by.items()]
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    rounded = {
        name: {target: {k: v if k == "n" else round(v, 4) for k, v in values.items()} for target, values in by.items()}
        for name, by in results.items()
    }
    print(
        json.dumps(
            {
                "benchmark": "cf_feature_distance",
                "run": str(args.run),
                "cf_store": str(run.stage(args.cf_store)),
                "images": len(pairs.sources),
                "encoders": rounded,
            }
        )
    )


if __name__ == "__main__":
    main()
