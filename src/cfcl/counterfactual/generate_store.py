"""``cfcl cf generate``: the counterfactual store of every source image x every other target cell.

A cell is one combination of target values of the intervened parents (``intervene``: the scanner
``domain`` by default, ``sex``, or several jointly; docs/architecture.md, "Intervened parents");
the OOD domain is never a target unless asked for. Rows are ordered source-major. They are written
in chunks through :class:`StoreWriter`, keyed by the generator checkpoint's hash, so an
interrupted run resumes and a new generator starts afresh; within a chunk each source image is
abducted once and decoded under every target. With ``source`` (a store of counterfactuals of the
same images, e.g. the synthetic benchmark's true ones) the store holds that store's rows for the
same pairs, each image reconstructed by the generator (the method ``oracle-recon``'s store).
Under several processes every rank generates its share of the chunks on its own device and rank 0
finishes the store (docs/architecture.md, "Several processes"); a chunk's images do not depend on
the rank that made it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cfcl import layout
from cfcl.counterfactual.config import CFGenerateConfig
from cfcl.counterfactual.generator.checkpoint import generator_file, load_generator
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.inference import Abduction, abduct, predict
from cfcl.counterfactual.generator.train import open_image_store
from cfcl.counterfactual.parents import (
    ParentError,
    ParentSpec,
    intervened_specs,
    known_values,
    parents_from_store,
    parents_to,
    value_names,
)
from cfcl.data.store import FINDINGS, INFO, ImageStore, StoreWriter, finding_column
from cfcl.distributed import current
from cfcl.errors import CheckpointError, StoreError
from cfcl.stage import Stage, run_stage
from cfcl.training import resolve_device

STAGE = layout.CF_STORE


def target_domains(spec: ParentSpec, store: ImageStore, requested: list[int] | None, include_ood: bool) -> list[int]:
    """Requested targets (checked against the domains the generator saw) or every seen ID domain."""
    ood = set(store.ood_domains)
    if requested is None:
        return [d for d in spec.seen if include_ood or d not in ood]
    unseen = [d for d in requested if d not in spec.seen]
    if unseen:
        names = [store.domains[d] if 0 <= d < len(store.domains) else str(d) for d in unseen]
        raise ParentError(f"target domain(s) {', '.join(names)} never seen by the generator (seen: {list(spec.seen)})")
    if ood & set(requested) and not include_ood:
        raise ParentError(
            f"target domain(s) {sorted(ood & set(requested))} are out-of-distribution; set include_ood: true"
        )
    return list(requested)


def target_values(specs: list[ParentSpec], store: ImageStore, config: CFGenerateConfig) -> dict[str, list[int]]:
    """The target codes of each intervened parent: the domains as :func:`target_domains` says, any other its known
    values."""
    return {
        s.name: target_domains(s, store, config.target_domains, config.include_ood)
        if s.name == "domain"
        else known_values(s)
        for s in specs
    }


def counterfactual_rows(
    store: ImageStore, sources: np.ndarray, targets: dict[str, list[int]], specs: list[ParentSpec]
) -> pd.DataFrame:
    """One row per (source image, combination of target values other than its own), source-major.

    ``target_<parent>`` holds each intervened parent's target code; ``domain`` is the image's
    domain after the intervention; ``label`` and a multi-label store's ``finding_<name>`` columns are the source
    image's."""
    combos = np.array(np.meshgrid(*targets.values(), indexing="ij")).reshape(len(targets), -1)
    source_index = np.repeat(sources, combos.shape[1])
    target = {p: np.tile(combos[i], len(sources)).astype(np.int64) for i, p in enumerate(targets)}
    own = parents_from_store(store, source_index, specs)
    keep = np.zeros(len(source_index), dtype=bool)
    for p in targets:
        keep |= own[p].numpy() != target[p]
    source_index, target = source_index[keep], {p: t[keep] for p, t in target.items()}
    src = store.meta.iloc[source_index]
    names = {s.name: value_names(s) for s in specs}
    label = [
        "_".join(str(t) if p == "domain" else names[p][t] for p, t in zip(target, values))
        for values in zip(*target.values())
    ]
    return pd.DataFrame(
        {
            "index": np.arange(len(source_index)),
            "source_index": source_index,
            **{f"target_{p}": t for p, t in target.items()},
            "split": src["split"].to_numpy(),
            "domain": target.get("domain", src["domain"].to_numpy()),
            "label": src["label"].to_numpy(),
            "patient_id": src["patient_id"].to_numpy(),
            "image_id": [f"{i}_cf{t}" for i, t in zip(src["image_id"], label)],
            **{finding_column(f): src[finding_column(f)].to_numpy() for f in store.findings},
        }
    )


def row_parents(
    store: ImageStore, rows: pd.DataFrame, specs: list[ParentSpec], targets: bool
) -> dict[str, torch.Tensor]:
    """The parents of each row's source image, with the row's target values (``target_<parent>``) if ``targets``."""
    pa = parents_from_store(store, rows["source_index"].to_numpy(), specs)
    if targets:
        pa.update(
            {c.removeprefix("target_"): torch.tensor(rows[c].to_numpy()) for c in rows if c.startswith("target_")}
        )
    return pa


def _batch(pa: dict[str, torch.Tensor], start: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    return parents_to({k: v[start : start + size] for k, v in pa.items()}, device)


@torch.inference_mode()
def generate_chunk(
    model: HVAE,
    store: ImageStore,
    rows: pd.DataFrame,
    batch_size: int,
    device: torch.device,
    source: ImageStore | None = None,
) -> np.ndarray:
    """uint8 counterfactuals ``[len(rows), H, W]``: each distinct source abducted once.

    ``source``: ``rows`` are rows of this counterfactual store of ``store`` (``index``), reconstructed:
    each of its images is abducted with its own parents (its source image's, with the row's targets)
    and decoded under the same parents without its pixel noise, with which it would be the image itself.
    """
    key = "source_index" if source is None else "index"
    units, first, position = np.unique(rows[key].to_numpy(), return_index=True, return_inverse=True)
    images = store.images if source is None else source.images
    abducted_parents = row_parents(store, rows.iloc[first], model.specs, targets=source is not None)
    latents: list[list[torch.Tensor]] = []
    noise: list[torch.Tensor] = []
    for start in range(0, len(units), batch_size):
        batch = np.ascontiguousarray(images[units[start : start + batch_size]])
        x = torch.from_numpy(batch).to(device)[:, None].float() / 255.0
        ab = abduct(model, x, _batch(abducted_parents, start, batch_size, device))
        latents.append(ab.latents)
        noise.append(ab.u if source is None else torch.zeros_like(ab.u))
    all_latents = [torch.cat(parts) for parts in zip(*latents)]
    all_noise = torch.cat(noise)
    out = np.empty((len(rows), *store.size), dtype=np.uint8)
    predicted_parents = row_parents(store, rows, model.specs, targets=True)
    for start in range(0, len(rows), batch_size):
        take = torch.as_tensor(position[start : start + batch_size], device=device)
        ab = Abduction([z[take] for z in all_latents], all_noise[take])
        x_star = predict(model, ab, _batch(predicted_parents, start, batch_size, device))
        out[start : start + len(take)] = (x_star[:, 0] * 255).round().to(torch.uint8).cpu().numpy()
    return out


def reconstructed_rows(source: ImageStore, store: ImageStore, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of counterfactual store ``source`` (of ``store``) for the (image, target cell) pairs of ``rows``, as
    they are."""
    intervened = [c.removeprefix("target_") for c in rows if c.startswith("target_")]
    table = source.intervention_table(store, intervened, "cf generate: source")
    cells = np.ravel_multi_index(
        [rows[f"target_{p}"].to_numpy() for p in intervened], source.cell_shape(len(store.domains))
    )
    found = table[rows["source_index"].to_numpy(), cells]
    if (found < 0).any():
        missing = int((found < 0).sum())
        raise StoreError(
            f"cf generate: source {source.path} lacks {missing} of the {len(rows)} counterfactuals to reconstruct"
        )
    return source.meta.iloc[found].reset_index(drop=True)


def run(config: CFGenerateConfig, out: Path, force: bool = False) -> dict:
    store = open_image_store(config.data)
    gen_path = generator_file(config.generator)
    model, info = load_generator(gen_path)
    if info.get("domains") != store.domains:
        raise CheckpointError(
            f"generator {gen_path} was trained on domains {info.get('domains')}, store {store.path} has {store.domains}"
        )
    specs = intervened_specs(model.specs, config.intervene, gen_path)
    targets = target_values(specs, store, config)
    rows = counterfactual_rows(store, store.indices(config.splits), targets, model.specs)
    inputs = {"data": store.path / INFO, "generator": gen_path}
    source = None
    if config.source is not None:
        source = ImageStore.open(config.source)
        rows = reconstructed_rows(source, store, rows)
        inputs["source"] = source.path / INFO
    return run_stage(
        STAGE,
        out,
        config,
        lambda stage: _generate(config, store, model, rows, targets, stage, source),
        force,
        inputs,
        every_rank=True,
    )


def _generate(
    config: CFGenerateConfig,
    store: ImageStore,
    model: HVAE,
    rows: pd.DataFrame,
    targets: dict[str, list[int]],
    stage: Stage,
    source: ImageStore | None,
) -> dict | None:
    """The store of ``rows``: counterfactuals, or with ``source`` its rows reconstructed (renumbered, the metadata
    kept)."""
    out = stage.out
    coordinator = current()
    device = resolve_device(config.device, coordinator.ranks.local_rank)
    model.to(device)
    h, w = store.size
    generator_hash, key = None, None
    if stage.primary:  # rank 0 fingerprinted the inputs when it claimed the folder
        generator_hash = stage.inputs["generator"]["fingerprint"]
        key = json.dumps({"generator": generator_hash, "store": store.content_hash, "rows": stage.fingerprint})
    key = coordinator.agree(key, f"{STAGE}: store key")
    writer = StoreWriter(out, len(rows), h, w, key=key, chunk=config.chunk, coordinator=coordinator)
    started = time.time()
    pending = writer.pending()
    with tqdm(
        total=sum(b - a for a, b in pending),
        desc="counterfactuals",
        unit="img",
        disable=not (config.progress_bar and stage.primary),
    ) as bar:
        for a, b in pending:
            writer.write(a, generate_chunk(model, store, rows.iloc[a:b], config.batch_size, device, source))
            bar.update(b - a)
    stage.timed("generate", time.time() - started)
    extra = {"source_store": store.content_hash, "generator": generator_hash, "splits": config.splits}
    if "domain" in targets:
        extra["target_domains"] = targets["domain"]
    if config.intervene != ["domain"]:
        names = {s.name: value_names(s) for s in model.specs}
        extra["intervened"] = {p: store.domains if p == "domain" else names[p] for p in targets}
    if store.findings:
        extra[FINDINGS] = store.findings
    if source is not None:
        extra["reconstructed"] = source.content_hash
        rows = rows.assign(index=np.arange(len(rows)))
    if (
        writer.finish(
            rows, store.domains, store.labels, kind="counterfactuals", extra={**extra, "ood_domains": store.ood_domains}
        )
        is None
    ):
        return None
    made = (
        f"reconstructions of the counterfactuals in {source.path}"
        if source is not None
        else f"counterfactuals of the {'+'.join(config.splits)} images ({', '.join(targets)} changed)"
    )
    return dict(n=len(rows), targets=targets, generator=generator_hash, summary=f"{len(rows)} {made}")
