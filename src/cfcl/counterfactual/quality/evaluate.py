"""The ``cf_quality`` stage (``cfcl cf evaluate``): how good are the counterfactuals?

The counterfactuals change the ``intervene`` parents (the scanner, ``domain``, by default; ``sex``;
or several jointly), as ``cfcl cf generate`` makes them: a *cell* is one combination of their
values (with the domain alone, a domain). On ``n_per_domain`` images of each evaluated domain
(test split by default; the in-distribution domains unless ``include_ood``) and every ordered pair
of distinct cells source -> target:

- effectiveness: the *judge* of each intervened parent (a classifier of it, never the guide) on x*
  against the parent's target value: balanced accuracy, one-vs-rest ROC-AUC per target, confusion
  matrix (jointly: every parent's judge on the joint counterfactual);
- composition: MAE(x, x after 1 and after ``null_steps`` null interventions, each parent kept);
- reversibility: MAE(x, x taken to the target cell and back);
- on the synthetic benchmark (``DATA/true_cf`` for the scanner, ``DATA/true_cf_sex`` for sex;
  there is no true store of a joint intervention): MAE(x*, true x*) beside the identity baseline
  MAE(x, true x*), per pair, on average over pairs and with the rarest cell as source / target.

The generator is a generator folder (``cfcl cf train`` / fine-tuning) or a counterfactual store
(:mod:`cfcl.counterfactual.quality.inputs`; the true counterfactual store is the perfect
generator, the ceiling of every number here). Measurement is in
:mod:`cfcl.counterfactual.quality.measure`, the summary in :mod:`cfcl.counterfactual.quality.summary`.

``cf_quality.json`` keys: ``domains``, ``evaluated_domains``, ``rare_domain`` (the intervention's rarest
cell; another intervention than the domain alone names it ``rare_cell`` and adds ``intervened``
{parent: value names} and ``true_cf``, the true store or null), ``splits``, ``n_images``
(per source domain), ``generator``/``judge`` (what was evaluated), ``effectiveness``
{balanced_accuracy, auroc_macro, auroc{target}, confusion{labels, matrix[target][predicted]}},
``composition`` {mae_1, mae_<null_steps>, per_source (after null_steps)}, ``reversibility`` {mae, rare_as_source,
rare_as_target}, ``truth`` (null without true counterfactuals) {mae_cf, mae_identity, ratio, and
the same under rare_as_source / rare_as_target}, ``pairs`` (one record per source -> target:
n, judge_accuracy, reversibility, mae_cf, mae_identity, ratio), ``targets`` {name: {value,
threshold, pass}} and ``passed``. Pair averages are means over pairs (each pair counts once);
a ``ratio`` is the mean of MAE(x*, true x*) over the mean of MAE(x, true x*) (target <= 0.5).
``pairs.csv`` holds the pair table, ``cf_grid.png`` originals, their counterfactuals and the true ones.
With several parents each judge has its ``judge_accuracy_<parent>``, ``effectiveness`` {parent: ...}
and target ``effectiveness_<parent>`` (:mod:`cfcl.counterfactual.quality.summary`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfcl import atomic, layout
from cfcl.counterfactual.classifier.model import ParentClassifier, classifier_file, load_classifier
from cfcl.counterfactual.config import QualityConfig
from cfcl.counterfactual.generator.figures import quality_grid
from cfcl.counterfactual.quality.inputs import (
    Generator,
    Intervention,
    check_judge,
    intervened_table,
    load_any_generator,
    open_intervention,
    values_noun,
)
from cfcl.counterfactual.quality.measure import measure, select_images
from cfcl.counterfactual.quality.summary import per_parent, summarise
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.stage import Stage, run_stage
from cfcl.training import resolve_device

STAGE = layout.CF_QUALITY  # also the stage of cf_quality_base: the same measurement before fine-tuning


@dataclass
class QualityInputs:
    """What is measured: the store and its evaluated domains, the intervention, the generator, the judge of
    each intervened parent (in parent order) with its info and file, the truth."""

    store: ImageStore
    domains: list[int]
    intervention: Intervention
    generator: Generator
    judges: dict[str, ParentClassifier]
    judge_infos: dict[str, dict]
    judge_files: dict[str, Path]
    truth: ImageStore | None
    device: torch.device


def _true_cf_store(config: QualityConfig, store: ImageStore, intervention: Intervention) -> ImageStore | None:
    """The true counterfactuals of the intervention: ``true_cf`` (auto: the synthetic benchmark's store of
    these parents, when there is one; none of a joint intervention exists)."""
    if config.true_cf == "none":
        return None
    path = (
        layout.true_cf(config.data, tuple(intervention.parents)) if config.true_cf == "auto" else Path(config.true_cf)
    )
    if config.true_cf == "auto" and not (path / INFO).is_file():
        return None
    truth = ImageStore.open(path)
    intervened_table(truth, store, intervention, "true counterfactual store")
    return truth


def _rare_cell(store: ImageStore, intervention: Intervention) -> int:
    """The target cell with the fewest training images (all images if there is no train split)."""
    train = store.meta["split"].to_numpy() == "train"
    rows = np.flatnonzero(train) if train.any() else np.arange(len(store))
    counts = pd.Series(intervention.own_cells(store, rows)).value_counts()
    return min(intervention.target_cells(), key=lambda c: (int(counts.get(c, 0)), c))


def _judges(config: QualityConfig, intervention: Intervention) -> dict[str, tuple[ParentClassifier, dict, Path]]:
    """Each intervened parent's judge, in parent order: exactly one of the ``judge`` classifiers classifies it."""
    paths = [config.judge] if isinstance(config.judge, Path) else config.judge
    found: dict[str, tuple[ParentClassifier, dict, Path]] = {}
    for path in paths:
        model, info = load_classifier(path)
        parent = info["parent"]
        if parent not in intervention.parents or parent in found:
            why = "a second judge of" if parent in found else "a judge of"
            raise ConfigError(
                f"classifier {classifier_file(path)} is {why} '{parent}'; config key 'judge' needs one judge of "
                f"each of {', '.join(intervention.parents)}"
            )
        found[parent] = (model, info, Path(path))
    missing = [p for p in intervention.parents if p not in found]
    if missing:
        raise ConfigError(
            f"config key 'judge' has no judge of parent '{missing[0]}': "
            f"train one with --config cf_judge --set parent={missing[0]}"
        )
    return {p: found[p] for p in intervention.parents}


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
    intervention = open_intervention(store, config.intervene, domains)
    device = resolve_device(config.device)
    generator_path = Path(config.generator)
    generator = load_any_generator(generator_path, store, intervention, device)
    for parent, targets in intervention.targets.items():
        unseen = [intervention.values[parent][v] for v in targets if v not in generator.seen[parent]]
        if unseen:
            raise CheckpointError(
                f"generator {generator_path} never saw {values_noun(parent)} {', '.join(unseen)}; "
                "it cannot make counterfactuals to them"
            )
    judges = _judges(config, intervention)
    for _, info, path in judges.values():
        check_judge(info, path, generator_path, generator.info.get("guide"), store, intervention)
    truth = _true_cf_store(config, store, intervention)
    return QualityInputs(
        store,
        domains,
        intervention,
        generator,
        {p: j[0].to(device) for p, j in judges.items()},
        {p: j[1] for p, j in judges.items()},
        {p: classifier_file(j[2]) for p, j in judges.items()},
        truth,
        device,
    )


def run(config: QualityConfig, out: Path, force: bool = False) -> dict:
    what = open_inputs(config)
    judge_keys = per_parent("judge", what.intervention.parents)
    inputs = {
        "data": what.store.path / INFO,
        "generator": what.generator.source,
        **{judge_keys[p]: file for p, file in what.judge_files.items()},
    }
    if what.truth is not None:
        inputs["true_cf"] = what.truth.path / INFO
    return run_stage(STAGE, out, config, lambda stage: _evaluate(config, what, stage), force, inputs)


def _evaluate(config: QualityConfig, what: QualityInputs, stage: Stage) -> dict:
    store, domains, intervention = what.store, what.domains, what.intervention
    rows = select_images(store, config.splits, domains, config.n_per_domain, config.seed)
    rows = rows[intervention.own_cells(store, rows) >= 0]
    sources = intervention.own_cells(store, rows)
    domain_of = store.meta["domain"].to_numpy()[rows]
    started = time.time()
    table, logits, composition = measure(
        what.generator,
        what.judges,
        store,
        rows,
        intervention,
        what.truth,
        config.null_steps,
        config.batch_size,
        what.device,
    )
    stage.timed("measure", time.time() - started)
    rare = _rare_cell(store, intervention)
    if intervention.parents == ["domain"]:
        about = {"rare_domain": intervention.name(rare)}
    else:
        truth = str(what.truth.path) if what.truth is not None else None
        about = {"intervened": intervention.values, "rare_cell": intervention.name(rare), "true_cf": truth}
    judges = {
        p: {k: info[k] for k in ("arch", "seed", "role", "val_balanced_accuracy") if k in info}
        | {"path": str(what.judge_files[p])}
        for p, info in what.judge_infos.items()
    }
    result = {
        "domains": store.domains,
        "evaluated_domains": [store.domains[d] for d in domains],
        **about,
        "splits": config.splits,
        "n_images": {store.domains[d]: int((domain_of == d).sum()) for d in domains},
        "generator": what.generator.info,
        "judge": next(iter(judges.values())) if len(judges) == 1 else judges,
        **summarise(table, logits, composition, sources, intervention, rare, config.null_steps, config.targets),
    }
    atomic.write_text(stage.out / layout.PAIRS, pd.DataFrame(result["pairs"]).to_csv(index=False))
    atomic.write_json(stage.out / layout.CF_QUALITY_JSON, result)
    artefacts = [layout.CF_QUALITY_JSON, layout.PAIRS]
    if config.grid_per_domain:
        grid_rows = np.concatenate([rows[domain_of == d][: config.grid_per_domain] for d in domains])
        quality_grid(
            what.generator, store, grid_rows, intervention, what.truth, what.device, stage.out / layout.CF_GRID
        )
        artefacts.append(layout.CF_GRID)
    missed = [name for name, target in result["targets"].items() if not target["pass"]]
    met = f"{len(result['targets']) - len(missed)} of {len(result['targets'])} quality targets met" + (
        f" (missed: {', '.join(missed)})" if missed else ""
    )
    return dict(
        artefacts=artefacts,
        passed=result["passed"],
        targets=result["targets"],
        summary=f"{met}; {layout.CF_QUALITY_JSON}",
    )
