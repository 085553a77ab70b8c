"""Does a method learn, and from which pretraining budget? Validation-split probes over epochs.

For each budget in ``--epochs`` the method is pretrained from scratch (its schedules span that
many epochs) with the run config's ``pretrain`` section, then frozen features are probed: a
logistic regression on ``--fractions`` of the ID training labels (several label draws), scored
by AUROC on the ID **validation** split, beside the random encoder of the same architecture.
No test image is read, so the budget chosen here can be used on the test sets without bias.
Prints one JSON line per budget and a Markdown table. Each run is kept in
``OUT/<method>-s<seed>-e<epochs>``, so seeds and budgets share one ``--out``; a variant (``--set``) needs
its own.

    python benchmarks/pretrain_budget.py benchmark_dino --data runs/benchmark_dino/data \\
        --method dino --epochs 2 5 10 20 --out runs/dino_budget

Counterfactual methods also need ``--cf-store`` (the run's ``cf_store`` folder). ``--curve``
also probes the saved encoder (DINO's teacher) at every epoch checkpoint of each run: a learning
curve within one run, whose learning-rate and momentum schedules span the whole run, so its
epoch ``k`` is not a run of ``k`` epochs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cfcl.api import embed, load_encoder
from cfcl.checkpoint import read_checkpoint
from cfcl.config import build_config, config_dict
from cfcl.contrastive import pretrain
from cfcl.contrastive.config import PretrainConfig
from cfcl.data.store import ImageStore
from cfcl.evaluation.evaluate import RANDOM, EncoderRef
from cfcl.evaluation.probe import class_probabilities, fit_probe
from cfcl.evaluation.subsets import labelled_subset
from cfcl.pipeline.config import RunConfig
from cfcl.pipeline.plan import plan
from cfcl.presets import resolve_config_path


def pretrain_config(
    run_config: str,
    method: str,
    seed: int,
    data: Path,
    cf_store: Path | None,
    epochs: int | None,
    overrides: list[str] = (),
) -> PretrainConfig:
    """The run config's pretraining of ``method`` with ``seed``, for ``epochs`` epochs (None: the run config's), with
    ``overrides``."""
    run = build_config(RunConfig, resolve_config_path(run_config), [f"methods=[{method}]", f"seeds=[{seed}]"])
    node = next(n for n in plan(run) if n.group == "pretrain")
    base = config_dict(node.config)
    base.update(data=str(data), cf_store=str(cf_store) if cf_store else None)
    return build_config(
        PretrainConfig,
        base=base,
        overrides=[*([f"trainer.max_epochs={epochs}"] if epochs else []), "trainer.progress_bar=false", *overrides],
    )


def val_auroc(features: np.ndarray, store: ImageStore, fraction: float, draws: int) -> list[float]:
    """AUROC on the ID validation split of probes fitted on ``fraction`` of the ID training labels, one per draw."""
    labels, train, val = store.meta["label"].to_numpy(), store.indices("train"), store.indices("val")
    scores = []
    for draw in range(draws):
        rows = labelled_subset(store.meta, train, fraction, draw)
        probe = fit_probe(features[rows], labels[rows], seed=draw)
        prob = class_probabilities(probe, features[val], len(store.labels))
        scores.append(float(roc_auc_score(labels[val], prob[:, 1])))
    return scores


def epoch_encoders(run: Path, method: str):
    """``(epoch, encoder)`` for every ``checkpoints/epochNNN.ckpt`` of a pretraining run, in epoch order: the
    run's final encoder (DINO: its teacher) with the weights it had at the end of that epoch."""
    encoder = load_encoder(run)
    prefix = pretrain.saved_encoder(method) + "."
    for path in sorted((run / "checkpoints").glob("epoch[0-9][0-9][0-9].ckpt")):
        _, checkpoint = read_checkpoint(path, path.name, "pretraining", ("state_dict",))
        state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        encoder.load_state_dict(state, strict=True)
        yield int(path.stem[len("epoch") :]) + 1, encoder


def summary(scores: list[float]) -> dict:
    return {
        "mean": round(float(np.mean(scores)), 4),
        "sd": round(float(np.std(scores, ddof=1)), 4) if len(scores) > 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="run config file or preset whose pretrain section is used (e.g. benchmark_dino)")
    parser.add_argument("--data", type=Path, required=True, help="the run's image store (its data folder)")
    parser.add_argument("--cf-store", type=Path, help="counterfactual store, for the counterfactual methods")
    parser.add_argument("--method", default="dino")
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed (a development seed)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 1.0])
    parser.add_argument("--draws", type=int, default=5, help="label draws per fraction")
    parser.add_argument("--out", type=Path, required=True, help="folder of the pretraining runs (one per budget)")
    parser.add_argument("--curve", action="store_true", help="also probe every epoch checkpoint of each run")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="pretrain config override, e.g. dino.teacher_momentum=[0.9,1.0]",
    )
    args = parser.parse_args()

    store = ImageStore.open(args.data)
    rows = []
    config = pretrain_config(
        args.config, args.method, args.seed, args.data, args.cf_store, args.epochs[0], args.overrides
    )
    architecture = {"arch": config.encoder.arch, "arch_kwargs": config.encoder.arch_kwargs}
    random_features = embed(EncoderRef(RANDOM, args.seed, architecture).build(), store)
    rows.append(
        {
            "epochs": 0,
            "encoder": "random",
            "seconds": 0.0,
            **{f"val_auroc_{f:g}": summary(val_auroc(random_features, store, f, args.draws)) for f in args.fractions},
        }
    )
    print(json.dumps(rows[-1]), flush=True)
    for epochs in args.epochs:
        keep = ["trainer.keep_every_n_epochs=1"] if args.curve else []
        config = pretrain_config(
            args.config, args.method, args.seed, args.data, args.cf_store, epochs, [*keep, *args.overrides]
        )
        run = args.out / f"{args.method}-s{args.seed}-e{epochs}"
        tic = time.time()
        pretrain.run(config, run)
        seconds = time.time() - tic
        probed = epoch_encoders(run, args.method) if args.curve else [(epochs, load_encoder(run))]
        for epoch, encoder in probed:
            features = embed(encoder, store)
            label = args.method if epoch == epochs else f"{args.method}, epoch {epoch} of {epochs}"
            rows.append(
                {
                    "epochs": epochs,
                    "encoder": label,
                    "seconds": round(seconds, 1),
                    **{f"val_auroc_{f:g}": summary(val_auroc(features, store, f, args.draws)) for f in args.fractions},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    header = (
        "| encoder | epochs | pretraining s | "
        + " | ".join(f"val AUROC, {f:g} of labels" for f in args.fractions)
        + " |"
    )
    print(f"\n{header}\n|{'---|' * (3 + len(args.fractions))}")
    for row in rows:
        cells = [
            f"{row[f'val_auroc_{f:g}']['mean']:.3f} ± {row[f'val_auroc_{f:g}']['sd'] or 0:.3f}" for f in args.fractions
        ]
        print(f"| {row['encoder']} | {row['epochs']} | {row['seconds']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
