"""The ``cf_quality`` stage (``cfcl cf evaluate``): how good are the counterfactuals?

On ``n_per_domain`` images of each evaluated domain (test split by default) and every ordered
pair of distinct domains source -> target (the in-distribution ones unless ``include_ood``):

- effectiveness: the *judge* classifier (never the guide) on x* against the target domain:
  balanced accuracy, one-vs-rest ROC-AUC per target, confusion matrix;
- composition: MAE(x, x after 1 and after ``null_steps`` null interventions);
- reversibility: MAE(x, x taken to the target and back);
- on the synthetic benchmark (``DATA/true_cf``): MAE(x*, true x*) beside the identity baseline
  MAE(x, true x*), per pair, on average over pairs and with the rarest domain as source / target.

The generator is a generator folder (``cfcl cf train`` / fine-tuning) or a counterfactual store
(:mod:`cfcl.counterfactual.quality_inputs`; the true counterfactual store is the perfect
generator, the ceiling of every number here). Measurement is in
:mod:`cfcl.counterfactual.quality_measure`, the summary in :mod:`cfcl.counterfactual.quality_summary`.

``cf_quality.json`` keys: ``domains``, ``evaluated_domains``, ``rare_domain``, ``splits``, ``n_images``
(per source domain), ``generator``/``judge`` (what was evaluated), ``effectiveness``
{balanced_accuracy, auroc_macro, auroc{target}, confusion{labels, matrix[target][predicted]}},
``composition`` {mae_1, mae_<null_steps>, per_source (after null_steps)}, ``reversibility`` {mae, rare_as_source,
rare_as_target}, ``truth`` (null without true counterfactuals) {mae_cf, mae_identity, ratio, and
the same under rare_as_source / rare_as_target}, ``pairs`` (one record per source -> target:
n, judge_accuracy, reversibility, mae_cf, mae_identity, ratio), ``targets`` {name: {value,
threshold, pass}} and ``passed``. Pair averages are means over pairs (each pair counts once);
a ``ratio`` is the mean of MAE(x*, true x*) over the mean of MAE(x, true x*) (target <= 0.5).
``pairs.csv`` holds the pair table, ``cf_grid.png`` originals, their counterfactuals and the true ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfcl import atomic, layout
from cfcl.counterfactual.classifier import DomainClassifier, classifier_file, load_classifier
from cfcl.counterfactual.config import QualityConfig
from cfcl.counterfactual.figures import quality_grid
from cfcl.counterfactual.quality_inputs import Generator, check_judge, load_any_generator
from cfcl.counterfactual.quality_measure import measure, select_images
from cfcl.counterfactual.quality_summary import summarise
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.stage import Stage, run_stage
from cfcl.training import resolve_device

STAGE = layout.CF_QUALITY  # also the stage of cf_quality_base: the same measurement before fine-tuning


@dataclass
class QualityInputs:
    """What is measured: the store and its evaluated domains, the generator, the judge, the truth."""

    store: ImageStore
    domains: list[int]
    generator: Generator
    judge: DomainClassifier
    judge_info: dict
    truth: ImageStore | None
    device: torch.device


def _true_cf_store(config: QualityConfig, store: ImageStore) -> ImageStore | None:
    if config.true_cf == "none":
        return None
    path = layout.true_cf(config.data) if config.true_cf == "auto" else Path(config.true_cf)
    if config.true_cf == "auto" and not (path / INFO).is_file():
        return None
    truth = ImageStore.open(path)
    truth.require_counterfactuals_of(store)
    return truth


def _rare_domain(store: ImageStore, domains: list[int]) -> int:
    """The evaluated domain with the fewest training images (all images if there is no train split)."""
    meta = store.meta[store.meta["split"] == "train"] if (store.meta["split"] == "train").any() else store.meta
    counts = meta["domain"].value_counts()
    return min(domains, key=lambda d: (int(counts.get(d, 0)), d))


def _require(config: QualityConfig) -> None:
    for key, flag in (("data", "--data STORE"), ("generator", "--generator DIR"), ("judge", "--judge DIR")):
        if getattr(config, key) is None:
            raise ConfigError(f"config key '{key}' is not set: pass {flag}")


def open_inputs(config: QualityConfig) -> QualityInputs:
    """Open and cross-check the store, generator, judge and true counterfactuals before anything runs."""
    _require(config)
    store = ImageStore.open(config.data)
    if store.kind != "images":
        raise StoreError(f"{store.path} is a {store.kind} store; counterfactuals are evaluated on real images")
    domains = list(range(len(store.domains))) if config.include_ood else store.id_domains
    device = resolve_device(config.device)
    generator_path, judge_path = Path(config.generator), Path(config.judge)
    generator = load_any_generator(generator_path, store, device)
    unseen = [store.domains[d] for d in domains if d not in generator.seen_domains]
    if unseen:
        raise CheckpointError(
            f"generator {generator_path} never saw domain(s) {', '.join(unseen)}; it cannot make counterfactuals to them"
        )
    judge, judge_info = load_classifier(judge_path)
    check_judge(judge_info, judge_path, generator_path, generator.info.get("guide"), store, domains)
    truth = _true_cf_store(config, store)
    return QualityInputs(store, domains, generator, judge.to(device), judge_info, truth, device)


def run(config: QualityConfig, out: Path, force: bool = False) -> dict:
    what = open_inputs(config)
    inputs = {"data": what.store.path / INFO, "generator": what.generator.source, "judge": classifier_file(config.judge)}
    if what.truth is not None:
        inputs["true_cf"] = what.truth.path / INFO
    return run_stage(STAGE, out, config, lambda stage: _evaluate(config, what, stage), force, inputs)


def _evaluate(config: QualityConfig, what: QualityInputs, stage: Stage) -> dict:
    store, domains = what.store, what.domains
    rows = select_images(store, config.splits, domains, config.n_per_domain, config.seed)
    sources = store.meta["domain"].to_numpy()[rows]
    started = time.time()
    table, logits, composition = measure(
        what.generator, what.judge, store, rows, domains, what.truth, config.null_steps, config.batch_size, what.device
    )
    stage.timed("measure", time.time() - started)
    rare = _rare_domain(store, domains)
    result = {
        "domains": store.domains,
        "evaluated_domains": [store.domains[d] for d in domains],
        "rare_domain": store.domains[rare],
        "splits": config.splits,
        "n_images": {store.domains[d]: int((sources == d).sum()) for d in domains},
        "generator": what.generator.info,
        "judge": {k: what.judge_info[k] for k in ("arch", "seed", "role", "val_balanced_accuracy") if k in what.judge_info}
        | {"path": str(classifier_file(config.judge))},
        **summarise(table, logits, composition, sources, store.domains, rare, config.null_steps, config.targets),
    }
    atomic.write_text(stage.out / layout.PAIRS, pd.DataFrame(result["pairs"]).to_csv(index=False))
    atomic.write_json(stage.out / layout.CF_QUALITY_JSON, result)
    artefacts = [layout.CF_QUALITY_JSON, layout.PAIRS]
    if config.grid_per_domain:
        grid_rows = np.concatenate([rows[sources == d][: config.grid_per_domain] for d in domains])
        quality_grid(what.generator, store, grid_rows, domains, what.truth, what.device, stage.out / layout.CF_GRID)
        artefacts.append(layout.CF_GRID)
    return dict(artefacts=artefacts, passed=result["passed"], targets=result["targets"])
