"""``cfcl cf evaluate``: how good are the counterfactuals?

On ``n_per_domain`` images of each evaluated domain (test split by default) and every ordered
pair of distinct domains source -> target (the in-distribution ones unless ``include_ood``):

- effectiveness: the *judge* classifier (never the guide) on x* against the target domain:
  balanced accuracy, one-vs-rest ROC-AUC per target, confusion matrix;
- composition: MAE(x, x after 1 and after ``null_steps`` null interventions);
- reversibility: MAE(x, x taken to the target and back);
- on the synthetic benchmark (``DATA/true_cf``): MAE(x*, true x*) beside the identity baseline
  MAE(x, true x*), per pair, on average over pairs and with the rarest domain as source / target.

The generator is a generator folder (``cfcl cf train`` / fine-tuning) or a counterfactual store
(looked up by source image and target domain; the true counterfactual store is the perfect
generator, the ceiling of every number here).

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
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from cfcl import atomic
from cfcl.config import StrictModel
from cfcl.counterfactual.classifier import DomainClassifier, classifier_file, load_classifier
from cfcl.counterfactual.generator import generator_file, load_generator
from cfcl.counterfactual.inference import counterfactual
from cfcl.counterfactual.parents import intervene, parents_from_store
from cfcl.counterfactual.quality import (
    Parents,
    composition_mae,
    effectiveness,
    error_vs_truth,
    mae_ratio,
    reversibility_mae,
)
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.stage import Stage, fingerprint, read_manifest, run_stage

STAGE = "cf_quality"  # also the stage of cf_quality_base: the same measurement of the generator before fine-tuning


class QualityTargets(StrictModel):
    """The issue's pass marks."""

    effectiveness: float = Field(0.95, ge=0, le=1)
    mae_ratio: float = Field(0.5, gt=0)
    reversibility: float = Field(0.02, gt=0)


class EvaluateConfig(StrictModel):
    data: Path | None = None
    generator: Path | None = None
    judge: Path | None = None
    splits: list[str] = Field(default_factory=lambda: ["test"])
    n_per_domain: int = Field(32, ge=1)
    include_ood: bool = False
    null_steps: int = Field(10, ge=1)
    true_cf: Literal["auto", "none"] | Path = "auto"
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    grid_per_domain: int = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    targets: QualityTargets = Field(default_factory=QualityTargets)


CounterfactualFn = Callable[[torch.Tensor, Parents, Parents], torch.Tensor]


@dataclass
class Generator:
    """What evaluation needs of a generator: its counterfactual function, parents, domains and provenance."""

    cf_fn: CounterfactualFn
    parents: Callable[[np.ndarray], Parents]
    seen_domains: list[int]
    cycles: bool  # composition and reversibility measurable (a store needs every image's own-domain row)
    info: dict[str, Any]
    source: Path  # the file that identifies it (checkpoint or store.json), fingerprinted as a stage input


class TableCounterfactuals:
    """A counterfactual store as a generator: ``pa["row"]`` names the source image, ``pa_star["domain"]`` the target."""

    def __init__(self, cf_store: ImageStore, table: np.ndarray):
        self.cf_store, self.table = cf_store, table

    def __call__(self, x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        rows = self.table[pa["row"].cpu().numpy(), pa_star["domain"].cpu().numpy()]
        if (rows < 0).any():
            raise StoreError(f"counterfactual store {self.cf_store.path} lacks some (image, target domain) pairs")
        return _images(self.cf_store, rows, x.device)


def _model_generator(path: Path, store: ImageStore, device: torch.device) -> Generator:
    model, info = load_generator(path)
    if tuple(store.size) != (info["image_size"], info["image_size"]):
        raise CheckpointError(
            f"generator {generator_file(path)} makes {info['image_size']} px images, "
            f"the store {store.path} holds {store.size}"
        )
    model = model.to(device)
    domain = next((s for s in model.specs if s.name == "domain"), None)
    if domain is None:
        raise CheckpointError(f"generator {generator_file(path)} has no 'domain' parent; it cannot change the scanner")

    def cf_fn(x: torch.Tensor, pa: Parents, pa_star: Parents) -> torch.Tensor:
        return counterfactual(model, x, pa, pa_star)

    def parents(indices: np.ndarray) -> Parents:
        return parents_from_store(store, indices, model.specs)

    provenance = {"kind": "model", "path": str(generator_file(path)), "guide": info.get("guide")}
    return Generator(cf_fn, parents, list(domain.seen), True, provenance, generator_file(path))


def _table_generator(path: Path, store: ImageStore) -> Generator:
    cf_store = ImageStore.open(path)
    cf_store.require_counterfactuals_of(store)
    table = cf_store.counterfactual_table(len(store), len(store.domains))
    domains = store.meta["domain"].to_numpy()
    present = table >= 0
    seen = [d for d in range(len(store.domains)) if present[:, d].any()]
    own = present[np.arange(len(store)), domains]

    def parents(indices: np.ndarray) -> Parents:
        return {
            "domain": torch.as_tensor(domains[indices], dtype=torch.long),
            "row": torch.as_tensor(indices, dtype=torch.long),
        }

    provenance = {"kind": "counterfactual_store", "path": str(path)}
    return Generator(TableCounterfactuals(cf_store, table), parents, seen, bool(own.all()), provenance, path / INFO)


def load_any_generator(path: Path, store: ImageStore, device: torch.device) -> Generator:
    """A generator folder / checkpoint, or a counterfactual store."""
    if (path / INFO).is_file():
        return _table_generator(path, store)
    return _model_generator(path, store, device)


def _judge_identity(path: Path) -> set[str]:
    """Fingerprints under which a classifier can be recorded as an input: its file and its stage folder."""
    file = classifier_file(path)
    ids = {fingerprint(file)}
    manifest = read_manifest(file.parent)
    if manifest is not None and manifest.get("status") == "complete":
        ids.add(manifest["fingerprint"])
    return ids


def _recorded_guides(generator_path: Path, info_guide: Any) -> set[str]:
    """Guide fingerprints recorded by fine-tuning: the generator folder's manifest inputs and its checkpoint info."""
    folder = generator_path if generator_path.is_dir() else generator_path.parent
    recorded = [((read_manifest(folder) or {}).get("inputs") or {}).get("guide"), info_guide]
    return {r["fingerprint"] if isinstance(r, dict) else r for r in recorded if r}


def check_judge(
    judge_info: dict, judge_path: Path, generator_path: Path, info_guide: Any, store: ImageStore, domains: list[int]
) -> None:
    """The judge must be a judge, not the guide the generator was fine-tuned with, and know the store's domains."""
    file = classifier_file(judge_path)
    if judge_info["role"] != "judge":
        raise ConfigError(
            f"classifier {file} has role '{judge_info['role']}'; the judge never guides: train one with --config cf_judge"
        )
    if _recorded_guides(generator_path, info_guide) & _judge_identity(judge_path):
        raise ConfigError(f"classifier {file} guided the fine-tuning of generator {generator_path}; it cannot judge it")
    if list(judge_info["domains"]) != store.domains or list(judge_info["image_size"]) != list(store.size):
        raise CheckpointError(
            f"judge {file} was trained on domains {judge_info['domains']} at {judge_info['image_size']} px; "
            f"the store {store.path} has {store.domains} at {list(store.size)}"
        )
    unseen = [store.domains[d] for d in domains if d not in judge_info["trained_domains"]]
    if unseen:
        raise CheckpointError(
            f"judge {file} never saw domain(s) {', '.join(unseen)}; it cannot judge counterfactuals to them"
        )


def select_images(store: ImageStore, splits: list[str], domains: list[int], n_per_domain: int, seed: int) -> np.ndarray:
    """Up to ``n_per_domain`` random images of each domain from ``splits`` (sorted store rows)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for d in domains:
        rows = store.indices(splits, [d])
        if len(rows) == 0:
            raise StoreError(
                f"image store {store.path} has no images of domain {store.domains[d]} in split(s) {', '.join(splits)}"
            )
        chosen.append(np.sort(rng.choice(rows, min(n_per_domain, len(rows)), replace=False)))
    return np.concatenate(chosen)


def _true_cf_store(config: EvaluateConfig, store: ImageStore) -> ImageStore | None:
    if config.true_cf == "none":
        return None
    path = Path(config.data) / "true_cf" if config.true_cf == "auto" else Path(config.true_cf)
    if config.true_cf == "auto" and not (path / INFO).is_file():
        return None
    truth = ImageStore.open(path)
    truth.require_counterfactuals_of(store)
    return truth


def _images(store: ImageStore, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Store rows as float images ``[B, 1, H, W]`` in [0, 1]."""
    return (torch.from_numpy(np.ascontiguousarray(store.images[rows])).float() / 255).unsqueeze(1).to(device)


def _select(pa: Parents, mask: torch.Tensor) -> Parents:
    return {k: v[mask] for k, v in pa.items()}


def _to(pa: Parents, device: torch.device) -> Parents:
    return {k: v.to(device) for k, v in pa.items()}


@torch.no_grad()
def measure(
    generator: Generator,
    judge: DomainClassifier,
    store: ImageStore,
    rows: np.ndarray,
    domains: list[int],
    truth: ImageStore | None,
    null_steps: int,
    batch_size: int,
    device: torch.device,
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor | None]:
    """Per (image, target) records, the judge's logits on every x* (same order), composition ``[steps, N]``."""
    truth_table = truth.counterfactual_table(len(store), len(store.domains)) if truth is not None else None
    records, logits, composition = [], [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        x = _images(store, batch, device)
        pa = _to(generator.parents(batch), device)
        source = pa["domain"]
        if generator.cycles:
            composition.append(composition_mae(generator.cf_fn, x, pa, null_steps).cpu())
        for t in domains:
            mask = source != t
            if not mask.any():
                continue
            xs, pas = x[mask], _select(pa, mask)
            pa_star = intervene(pas, domain=t)
            x_star = generator.cf_fn(xs, pas, pa_star)
            logits.append(judge(x_star).cpu())
            record = {
                "row": batch[mask.cpu().numpy()],
                "source": pas["domain"].cpu().numpy(),
                "target": t,
            }
            if generator.cycles:
                record["reversibility"] = reversibility_mae(generator.cf_fn, xs, pas, pa_star).cpu().numpy()
            if truth_table is not None:
                true_rows = truth_table[record["row"], t]
                if (true_rows < 0).any():
                    raise StoreError(f"true counterfactual store {truth.path} lacks images for target {store.domains[t]}")
                errors = error_vs_truth(xs, x_star, _images(truth, true_rows, device))
                record["mae_cf"], record["mae_identity"] = errors["cf"].cpu().numpy(), errors["identity"].cpu().numpy()
            records.append(pd.DataFrame(record))
    table = pd.concat(records, ignore_index=True)
    return table, torch.cat(logits), torch.cat(composition, dim=1) if composition else None


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def summarise(
    table: pd.DataFrame,
    logits: torch.Tensor,
    composition: torch.Tensor | None,
    sources: np.ndarray,
    names: list[str],
    rare: int,
    null_steps: int,
    targets: QualityTargets,
) -> dict[str, Any]:
    """The ``cf_quality.json`` numbers from the per-image records (see the module docstring)."""
    table = table.assign(correct=(logits.argmax(dim=1).numpy() == table["target"].to_numpy()).astype(float))
    metrics = [c for c in ("correct", "reversibility", "mae_cf", "mae_identity") if c in table]
    pairs = table.groupby(["source", "target"])[metrics].mean().reset_index()
    pairs.insert(2, "n", table.groupby(["source", "target"]).size().to_numpy())
    pairs = pairs.rename(columns={"correct": "judge_accuracy"})
    if "mae_cf" in pairs:
        pairs["ratio"] = [mae_ratio(a, b) for a, b in zip(pairs["mae_cf"], pairs["mae_identity"])]
    pairs.insert(0, "pair", [f"{names[s]}->{names[t]}" for s, t in zip(pairs["source"], pairs["target"])])

    eff = effectiveness(logits, torch.tensor(table["target"].to_numpy()), len(names))
    result: dict[str, Any] = {
        "effectiveness": {
            "balanced_accuracy": eff["balanced_accuracy"],
            "auroc_macro": eff["auroc_macro"],
            "auroc": {names[d]: v for d, v in eff["auroc"].items()},
            "confusion": {"labels": names, "matrix": eff["confusion"]},
        },
        "pairs": pairs.to_dict(orient="records"),
    }
    subsets = {
        "all": pairs,
        "rare_as_source": pairs[pairs["source"] == rare],
        "rare_as_target": pairs[pairs["target"] == rare],
    }
    if composition is not None:
        per_source = {
            names[d]: float(composition[-1, torch.as_tensor(sources == d)].mean()) for d in np.unique(sources)
        }
        result["composition"] = {
            "mae_1": float(composition[0].mean()),
            f"mae_{null_steps}": float(composition[-1].mean()),
            "per_source": per_source,
        }
        result["reversibility"] = {
            "mae": _mean(pairs["reversibility"]),
            "rare_as_source": _mean(subsets["rare_as_source"]["reversibility"]),
            "rare_as_target": _mean(subsets["rare_as_target"]["reversibility"]),
        }
    else:
        result["composition"] = result["reversibility"] = None
    if "mae_cf" in pairs:
        summaries = {
            name: {
                "mae_cf": _mean(subset["mae_cf"]),
                "mae_identity": _mean(subset["mae_identity"]),
                "ratio": mae_ratio(
                    torch.tensor(subset["mae_cf"].to_numpy()), torch.tensor(subset["mae_identity"].to_numpy())
                ),
            }
            for name, subset in subsets.items()
        }
        result["truth"] = {**summaries.pop("all"), **summaries}
    else:
        result["truth"] = None
    result["targets"] = _targets(result, targets)
    result["passed"] = all(t["pass"] for t in result["targets"].values())
    return result


def _targets(result: dict[str, Any], targets: QualityTargets) -> dict[str, dict]:
    """``{name: {value, threshold, pass}}`` for every target that could be measured."""
    checks = {"effectiveness": (result["effectiveness"]["balanced_accuracy"], targets.effectiveness, True)}
    if result["truth"] is not None:
        checks["mae_ratio"] = (result["truth"]["ratio"], targets.mae_ratio, False)
        checks["mae_ratio_rare_as_source"] = (result["truth"]["rare_as_source"]["ratio"], targets.mae_ratio, False)
        checks["mae_ratio_rare_as_target"] = (result["truth"]["rare_as_target"]["ratio"], targets.mae_ratio, False)
    if result["reversibility"] is not None:
        checks["reversibility"] = (result["reversibility"]["mae"], targets.reversibility, False)
    return {
        name: {
            "value": value,
            "threshold": threshold,
            "pass": bool(value is not None and (value >= threshold if higher else value <= threshold)),
        }
        for name, (value, threshold, higher) in checks.items()
    }


@torch.no_grad()
def grid_figure(
    generator: Generator,
    store: ImageStore,
    rows: np.ndarray,
    domains: list[int],
    truth: ImageStore | None,
    device: torch.device,
) -> bytes:
    """PNG: one row per image; columns the image, its counterfactual to each domain, the true ones."""
    from cfcl.counterfactual.figures import image_grid, png_bytes

    x = _images(store, rows, device)
    pa = _to(generator.parents(rows), device)
    columns = [("image", x)]
    for d in domains:
        columns.append((f"do({store.domains[d]})", generator.cf_fn(x, pa, intervene(pa, domain=d))))
    if truth is not None:
        table = truth.counterfactual_table(len(store), len(store.domains))
        columns += [(f"true {store.domains[d]}", _images(truth, table[rows, d], device)) for d in domains]
    cells = [[images[r, 0] for _, images in columns] for r in range(len(rows))]
    row_labels = [store.domains[int(d)] for d in pa["domain"]]
    return png_bytes(image_grid(cells, row_labels, [title for title, _ in columns]))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _rare_domain(store: ImageStore, domains: list[int]) -> int:
    """The evaluated domain with the fewest training images (all images if there is no train split)."""
    meta = store.meta[store.meta["split"] == "train"] if (store.meta["split"] == "train").any() else store.meta
    counts = meta["domain"].value_counts()
    return min(domains, key=lambda d: (int(counts.get(d, 0)), d))


def _require(config: EvaluateConfig) -> None:
    for key, flag in (("data", "--data STORE"), ("generator", "--generator DIR"), ("judge", "--judge DIR")):
        if getattr(config, key) is None:
            raise ConfigError(f"config key '{key}' is not set: pass {flag}")


def run(config: EvaluateConfig, out: Path, force: bool = False) -> dict:
    _require(config)
    store = ImageStore.open(config.data)
    if store.kind != "images":
        raise StoreError(f"{store.path} is a {store.kind} store; counterfactuals are evaluated on real images")
    ood = set(store.info.get("ood_domains", []))
    domains = [d for d in range(len(store.domains)) if config.include_ood or d not in ood]
    device = _device(config.device)

    generator_path, judge_path = Path(config.generator), Path(config.judge)
    generator = load_any_generator(generator_path, store, device)
    unseen = [store.domains[d] for d in domains if d not in generator.seen_domains]
    if unseen:
        raise CheckpointError(
            f"generator {generator_path} never saw domain(s) {', '.join(unseen)}; it cannot make counterfactuals to them"
        )
    judge, judge_info = load_classifier(judge_path)
    check_judge(judge_info, judge_path, generator_path, generator.info.get("guide"), store, domains)
    judge = judge.to(device)
    truth = _true_cf_store(config, store)

    inputs = {"data": store.path / INFO, "generator": generator.source, "judge": classifier_file(judge_path)}
    if truth is not None:
        inputs["true_cf"] = truth.path / INFO
    measured = Measured(store, domains, generator, judge, judge_info, truth, device)
    return run_stage(STAGE, out, config, lambda stage: _evaluate(config, measured, stage), force, inputs)


@dataclass
class Measured:
    """What the quality stage measures: the store's evaluated domains, the generator, the judge and the truth."""

    store: ImageStore
    domains: list[int]
    generator: Generator
    judge: DomainClassifier
    judge_info: dict
    truth: ImageStore | None
    device: torch.device


def _evaluate(config: EvaluateConfig, measured: Measured, stage: Stage) -> dict:
    out = stage.out
    store, domains, generator, truth, device = measured.store, measured.domains, measured.generator, measured.truth, measured.device
    judge, judge_info, judge_path = measured.judge, measured.judge_info, Path(config.judge)
    rows = select_images(store, config.splits, domains, config.n_per_domain, config.seed)
    sources = store.meta["domain"].to_numpy()[rows]
    started = time.time()
    table, logits, composition = measure(
        generator, judge, store, rows, domains, truth, config.null_steps, config.batch_size, device
    )
    stage.timed("measure", time.time() - started)
    rare = _rare_domain(store, domains)
    result = summarise(table, logits, composition, sources, store.domains, rare, config.null_steps, config.targets)
    result = {
        "domains": store.domains,
        "evaluated_domains": [store.domains[d] for d in domains],
        "rare_domain": store.domains[rare],
        "splits": config.splits,
        "n_images": {store.domains[d]: int((sources == d).sum()) for d in domains},
        "generator": generator.info,
        "judge": {k: judge_info[k] for k in ("arch", "seed", "role", "val_balanced_accuracy") if k in judge_info}
        | {"path": str(classifier_file(judge_path))},
        **result,
    }
    pairs = pd.DataFrame(result["pairs"])
    atomic.write_text(out / "pairs.csv", pairs.to_csv(index=False))
    atomic.write_json(out / "cf_quality.json", result)
    if config.grid_per_domain:
        grid_rows = np.concatenate([rows[sources == d][: config.grid_per_domain] for d in domains])
        atomic.write_bytes(out / "cf_grid.png", grid_figure(generator, store, grid_rows, domains, truth, device))
    return dict(
        artefacts=["cf_quality.json", "pairs.csv", *(["cf_grid.png"] if config.grid_per_domain else [])],
        passed=result["passed"],
        targets=result["targets"],
    )
