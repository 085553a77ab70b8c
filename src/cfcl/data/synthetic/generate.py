"""``cfcl data synth``: write the synthetic benchmark store and its true counterfactuals (of the
scanner in ``true_cf``, of sex in ``true_cf_sex``; with ``renoised_counterfactuals``, the scanner's
with their acquisition noise redrawn per counterfactual in ``true_cf_renoised``)."""

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
from cfcl.data.synthetic.scm import (
    ID_SPLITS,
    LABELS,
    OOD_SPLITS,
    SEXES,
    acquire_all,
    acquire_own,
    exogenous_fields,
    other_sex,
    render_physical,
    renoised_noise,
    sample_cohort,
)
from cfcl.stage import Stage, run_stage

STAGE = layout.DATA
CHUNK = 512
# What the SCM draws before the lesion: the covariates baseline's probe reads these (store.json 'covariates').
COVARIATES = ["sex", "age", *ANATOMY_TRAITS]
META_COLUMNS = ["image_id", "patient_id", "split", "domain", "label", *COVARIATES, "lesion_area", "lesion_contrast"]


def summary_table(meta: pd.DataFrame, domains: list[str]) -> pd.DataFrame:
    """Image counts by split x domain x label (names, not ids), in pipeline order."""
    named = pd.DataFrame(
        {
            "split": pd.Categorical(meta["split"], categories=[*ID_SPLITS, *OOD_SPLITS]),
            "domain": pd.Categorical.from_codes(meta["domain"], categories=domains),
            "label": pd.Categorical.from_codes(meta["label"], categories=LABELS),
        }
    )
    table = named.groupby(["split", "domain", "label"], observed=True).size().unstack("label", fill_value=0)
    return table[table.sum(axis=1) > 0]


def generate(cfg: SynthConfig, out: Path) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Write the stores' images chunk by chunk (resumable); return the metadata and overview masks."""
    cohort = sample_cohort(cfg)
    n, size, n_dom, n_sex = len(cohort), cfg.image_size, len(cfg.scanners), len(SEXES)
    key = config_hash(cfg)
    images = StoreWriter(out, n, size, size, key=key, chunk=CHUNK)
    counterfactuals = StoreWriter(layout.true_cf(out), n * n_dom, size, size, key=key, chunk=CHUNK * n_dom)
    sex_counterfactuals = StoreWriter(
        layout.true_cf(out, ("sex",)), n * n_sex, size, size, key=key, chunk=CHUNK * n_sex
    )
    renoised = (
        StoreWriter(layout.true_cf(out, variant=layout.RENOISED), n * n_dom, size, size, key=key, chunk=CHUNK * n_dom)
        if cfg.renoised_counterfactuals
        else None
    )
    wanted = set(overview_rows(cohort))
    masks, area = {}, np.zeros(n)
    images_due = {s for s, _ in images.pending()}
    counterfactuals_due = {s // n_dom for s, _ in counterfactuals.pending()}
    sex_due = {s // n_sex for s, _ in sex_counterfactuals.pending()}
    renoised_due = {s // n_dom for s, _ in renoised.pending()} if renoised else set()

    def make_chunk(start: int):
        rows = cohort.iloc[start : start + CHUNK]
        fields = exogenous_fields(cfg, start, len(rows))
        phys, lesion = render_physical(rows, size, fields, cfg)
        due = start in images_due or start in counterfactuals_due or start in sex_due
        all_scanners = acquire_all(phys, fields["u"], cfg.acquisition, cfg.frames) if due else None
        by_sex = None
        if start in sex_due:
            flipped, _ = render_physical(other_sex(rows, cfg), size, fields, cfg)
            domains = rows["domain"].to_numpy()
            own = all_scanners[np.arange(len(rows)), domains]
            other = acquire_own(flipped, fields["u"], domains, cfg.acquisition, cfg.frames)
            male = (rows["sex"] == SEXES[1]).to_numpy()[:, None, None]
            by_sex = np.stack([np.where(male, other, own), np.where(male, own, other)], axis=1)
        redrawn = None
        if start in renoised_due:
            redrawn = acquire_all(phys, renoised_noise(cfg, start, len(rows)), cfg.acquisition, cfg.frames)
        return rows, lesion, all_scanners, by_sex, redrawn

    # numpy and scipy release the GIL, so chunks made on threads use every core; a few
    # chunks at a time keep memory bounded.
    workers = max(1, min(4, os.cpu_count() or 1))
    starts = list(range(0, n, CHUNK))
    windows = [starts[i : i + workers] for i in range(0, len(starts), workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = ((s, chunk) for window in windows for s, chunk in zip(window, pool.map(make_chunk, window)))
        for start, (rows, lesion, all_scanners, by_sex, redrawn) in made:
            area[start : start + len(rows)] = lesion.mean(axis=(1, 2))
            masks.update({i: lesion[i - start] for i in wanted if start <= i < start + len(rows)})
            if start in images_due:
                images.write(start, all_scanners[np.arange(len(rows)), rows["domain"].to_numpy()])
            if start in counterfactuals_due:
                counterfactuals.write(start * n_dom, all_scanners.reshape(-1, size, size))
            if start in sex_due:
                sex_counterfactuals.write(start * n_sex, by_sex.reshape(-1, size, size))
            if start in renoised_due:
                renoised.write(start * n_dom, redrawn.reshape(-1, size, size))
    meta = cohort.assign(
        lesion_area=area.round(5),
        lesion_contrast=cohort["lesion_contrast"].round(4),
        **{trait: cohort[trait].round(5) for trait in ANATOMY_TRAITS},
    )[META_COLUMNS]
    meta.insert(0, "index", np.arange(n))
    store = images.finish(
        meta,
        cfg.scanners,
        LABELS,
        extra={"ood_domains": [cfg.ood_domain], "synthetic": True, "seed": cfg.seed, "covariates": COVARIATES},
    )
    scanner_cells = ("domain", np.arange(n_dom), ["lesion_area"], {})
    sex_cells = ("sex", np.asarray(SEXES), ["sex"], {"intervened": {"sex": SEXES}})
    writers = [(counterfactuals, scanner_cells), (sex_counterfactuals, sex_cells)]
    if renoised:
        writers.append((renoised, ("domain", np.arange(n_dom), ["lesion_area"], {"renoised": True})))
    for writer, (parent, values, kept, info) in writers:
        writer.finish(
            true_counterfactual_rows(meta, parent, values, kept),
            cfg.scanners,
            LABELS,
            kind="counterfactuals",
            extra={"source_store": store.content_hash, "synthetic": True, **info},
        )
    return meta, masks


def true_counterfactual_rows(meta: pd.DataFrame, parent: str, values: np.ndarray, kept: list[str]) -> pd.DataFrame:
    """Metadata of a true-counterfactual store: row ``i * len(values) + v`` is image ``i`` with its
    ``parent`` column set to ``values[v]`` (its own value: the image itself); split, domain, label
    and the ``kept`` columns are the source image's."""
    n, k = len(meta), len(values)
    source, target = np.repeat(np.arange(n), k), np.tile(np.arange(k), n)
    rows = pd.DataFrame({"index": np.arange(n * k), "source_index": source, f"target_{parent}": target})
    for column in ("split", "domain", "label", *kept):
        rows[column] = meta[column].to_numpy()[source]
    rows[parent] = values[target]
    return rows


def run(config: SynthConfig, out: Path, force: bool = False) -> dict:
    """Generate the benchmark into ``out`` (image store), ``out/true_cf`` and ``out/true_cf_sex`` (true counterfactuals)
    and, if asked, ``out/true_cf_renoised``."""
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
    return dict(
        n_images=len(meta), counts={f"{s}/{d}": {k: int(v) for k, v in r.items()} for (s, d), r in table.iterrows()}
    )
