"""``cfcl data synth``: write the synthetic benchmark store and its true counterfactuals."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cfcl import layout
from cfcl.config import config_hash
from cfcl.data.store import StoreWriter
from cfcl.data.synthetic.anatomy import ANATOMY_TRAITS
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.overview import overview_rows, save_overview
from cfcl.data.synthetic.scm import ID_SPLITS, LABELS, OOD_SPLITS, acquire_all, exogenous_fields, render_physical, sample_cohort
from cfcl.stage import Stage, run_stage

STAGE = layout.DATA
CHUNK = 512
# What the SCM draws before the lesion: the covariates baseline's probe reads these (store.json 'covariates').
COVARIATES = ["sex", "age", *ANATOMY_TRAITS]
META_COLUMNS = ["image_id", "patient_id", "split", "domain", "label", *COVARIATES, "lesion_area", "lesion_contrast"]


def summary_table(meta: pd.DataFrame, domains: list[str]) -> pd.DataFrame:
    """Image counts by split x domain x label (names, not ids), in pipeline order."""
    named = pd.DataFrame({
        "split": pd.Categorical(meta["split"], categories=[*ID_SPLITS, *OOD_SPLITS]),
        "domain": pd.Categorical.from_codes(meta["domain"], categories=domains),
        "label": pd.Categorical.from_codes(meta["label"], categories=LABELS),
    })
    table = named.groupby(["split", "domain", "label"], observed=True).size().unstack("label", fill_value=0)
    return table[table.sum(axis=1) > 0]


def generate(cfg: SynthConfig, out: Path) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Write both stores' images chunk by chunk (resumable); return the metadata and overview masks."""
    cohort = sample_cohort(cfg)
    n, size, n_dom = len(cohort), cfg.image_size, len(cfg.scanners)
    key = config_hash(cfg)
    images = StoreWriter(out, n, size, size, key=key, chunk=CHUNK)
    counterfactuals = StoreWriter(layout.true_cf(out), n * n_dom, size, size, key=key, chunk=CHUNK * n_dom)
    wanted = set(overview_rows(cohort))
    masks, area = {}, np.zeros(n)
    images_due = {s for s, _ in images.pending()}
    counterfactuals_due = {s // n_dom for s, _ in counterfactuals.pending()}

    def make_chunk(start: int):
        rows = cohort.iloc[start : start + CHUNK]
        fields = exogenous_fields(cfg, start, len(rows))
        phys, lesion = render_physical(rows, size, fields, cfg.disease.max_patches)
        due = start in images_due or start in counterfactuals_due
        return rows, lesion, acquire_all(phys, fields["u"], cfg.acquisition, cfg.frames) if due else None

    # numpy and scipy release the GIL, so chunks made on threads use every core; a few
    # chunks at a time keep memory bounded.
    workers = max(1, min(4, os.cpu_count() or 1))
    starts = list(range(0, n, CHUNK))
    windows = [starts[i : i + workers] for i in range(0, len(starts), workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = ((s, chunk) for window in windows for s, chunk in zip(window, pool.map(make_chunk, window)))
        for start, (rows, lesion, all_scanners) in made:
            area[start : start + len(rows)] = lesion.mean(axis=(1, 2))
            masks.update({i: lesion[i - start] for i in wanted if start <= i < start + len(rows)})
            if start in images_due:
                images.write(start, all_scanners[np.arange(len(rows)), rows["domain"].to_numpy()])
            if start in counterfactuals_due:
                counterfactuals.write(start * n_dom, all_scanners.reshape(-1, size, size))
    meta = cohort.assign(
        lesion_area=area.round(5), lesion_contrast=cohort["lesion_contrast"].round(4),
        **{trait: cohort[trait].round(5) for trait in ANATOMY_TRAITS},
    )[META_COLUMNS]
    meta.insert(0, "index", np.arange(n))
    store = images.finish(
        meta, cfg.scanners, LABELS,
        extra={"ood_domains": [cfg.ood_domain], "synthetic": True, "seed": cfg.seed, "covariates": COVARIATES},
    )
    source = np.repeat(np.arange(n), n_dom)
    target = np.tile(np.arange(n_dom), n)
    cf_meta = pd.DataFrame({
        "index": np.arange(n * n_dom),
        "source_index": source,
        "target_domain": target,
        "split": meta["split"].to_numpy()[source],
        "domain": target,
        "label": meta["label"].to_numpy()[source],
        "lesion_area": meta["lesion_area"].to_numpy()[source],
    })
    counterfactuals.finish(
        cf_meta, cfg.scanners, LABELS, kind="counterfactuals",
        extra={"source_store": store.content_hash, "synthetic": True},
    )
    return meta, masks


def run(config: SynthConfig, out: Path, force: bool = False) -> dict:
    """Generate the benchmark into ``out`` (image store) and ``out/true_cf`` (true counterfactuals)."""
    return run_stage(STAGE, out, config, lambda stage: _synthesise(config, stage), force)


def _synthesise(config: SynthConfig, stage: Stage) -> dict:
    out = stage.out
    tic = time.time()
    meta, masks = generate(config, out)
    stage.timed("generate", time.time() - tic)
    tic = time.time()
    save_overview(out, masks)
    stage.timed("overview", time.time() - tic)
    table = summary_table(meta, config.scanners)
    print(f"synthetic benchmark: {len(meta)} images x {len(config.scanners)} scanners -> {out}")
    print(table.to_string())
    return dict(n_images=len(meta), counts={f"{s}/{d}": {k: int(v) for k, v in r.items()} for (s, d), r in table.iterrows()})
