"""``cfcl data prepare``: a real dataset, as distributed, into an image store (docs/datasets.md).

The adapter of ``dataset`` lists the images (after the dataset's filters); domains and labels are
coded, patients split, and the images decoded in parallel into a :class:`StoreWriter` in chunks,
so a killed run resumes where it stopped. ``store.json`` is written last, so an unfinished
folder never opens as a store. With ``skip_bad`` unreadable images are left out and listed in
``bad_rows.csv``; ``prepare_report.json`` counts everything that was filtered or skipped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from importlib import import_module
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from cfcl import atomic, layout
from cfcl.config import StrictModel
from cfcl.data import DATASETS
from cfcl.data.datasets.chexpert import CheXpertOptions
from cfcl.data.datasets.common import DatasetError, Table, encode
from cfcl.data.datasets.csv import CsvOptions
from cfcl.data.datasets.embed import EmbedOptions
from cfcl.data.datasets.mimic import MimicOptions
from cfcl.data.datasets.nih import NihOptions
from cfcl.data.datasets.padchest import PadChestOptions
from cfcl.data.datasets.rsna import RsnaOptions
from cfcl.data.datasets.vindr import VindrOptions
from cfcl.data.imageio import DecodeOptions, ImageReadError, Normalise, decode
from cfcl.data.inputs import DECODE_KEY, decode_record
from cfcl.data.store import FINDINGS, IMAGES, INFO, METADATA, PROGRESS, ImageStore, StoreWriter
from cfcl.data.synthetic.config import SPLITS
from cfcl.errors import ConfigError, MissingKeyError
from cfcl.stage import Stage, run_stage

STAGE = layout.DATA
REPORT = "prepare_report.json"
BAD_ROWS = "bad_rows.csv"
BAD_DIR = ".prepare-bad"
COMPACT_DIR = ".prepare-compact"
Dataset = Literal[DATASETS]
ROOT = "the folder holding the dataset as distributed"


class PrepareConfig(StrictModel):
    """Which dataset, where it is, and how its images become a store."""

    dataset: Dataset = "csv"
    root: str | None = None  # raw dataset folder: a plain string, not fingerprinted like stage inputs
    size: int | tuple[int, int] = 224
    workers: int = Field(1, ge=1)
    chunk: int = Field(64, ge=1)
    seed: int = 0
    split: Literal["seeded", "official"] = "seeded"  # official: the dataset's published split (OFFICIAL_SPLITS)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    domains: list[str] | None = None
    other_domains: Literal["error", "drop"] = "error"
    ood_domains: list[str] = []
    skip_bad: bool = False
    normalise: Normalise = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    mask_threshold: float = Field(0.05, ge=0.0, lt=1.0)
    padchest: PadChestOptions = PadChestOptions()
    chexpert: CheXpertOptions = CheXpertOptions()
    rsna: RsnaOptions = RsnaOptions()
    embed: EmbedOptions = EmbedOptions()
    vindr: VindrOptions = VindrOptions()
    mimic: MimicOptions = MimicOptions()
    nih: NihOptions = NihOptions()
    csv: CsvOptions = CsvOptions()

    @property
    def height_width(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)


def official_splits(dataset: str) -> dict[str, str]:
    """How a dataset's published split (its ``official_split`` values) maps onto the store's patient
    groups; empty for a dataset that publishes none as part of its release."""
    return getattr(import_module(f"cfcl.data.datasets.{dataset}"), "OFFICIAL_SPLITS", {})


def load_table(config: PrepareConfig, root: Path) -> Table:
    """Run the adapter named by ``config.dataset`` with its section of the config."""
    adapter = import_module(f"cfcl.data.datasets.{config.dataset}")
    options = getattr(config, config.dataset)
    if config.dataset == "rsna":
        return adapter.load(root, options, skip_bad=config.skip_bad)
    return adapter.load(root, options)


def decode_options(config: PrepareConfig, table: Table) -> DecodeOptions:
    height, width = config.height_width
    return DecodeOptions(
        height,
        width,
        config.normalise,
        tuple(config.percentiles),
        table.breast_mask,
        config.mask_threshold,
        table.flip_right,
    )


def decode_chunk(
    paths: list[str], lateralities: list[str], options: DecodeOptions, skip_bad: bool
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Decode one chunk; a bad file raises, or with ``skip_bad`` gives a zero image and an entry
    ``(position in chunk, kind, message)``."""
    images = np.zeros((len(paths), options.height, options.width), dtype=np.uint8)
    bad = []
    for i, (path, side) in enumerate(zip(paths, lateralities)):
        try:
            images[i] = decode(path, options, side)
        except Exception as exc:  # any failure of one file is that file's problem, named below
            error = (
                exc
                if isinstance(exc, ImageReadError)
                else ImageReadError(f"{path}: cannot decode ({type(exc).__name__}: {exc})")
            )
            if not skip_bad:
                raise error from None
            kind = "missing file" if not Path(path).is_file() else error.kind
            bad.append((i, kind, str(error)))
    return images, bad


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which cancels pending chunks and exits cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _work_key(meta: pd.DataFrame, options: DecodeOptions) -> str:
    text = meta.to_csv(index=False) + json.dumps(options.__dict__, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fill(
    writer: StoreWriter, meta: pd.DataFrame, paths: list[str], options: DecodeOptions, config: PrepareConfig
) -> None:
    """Decode every pending chunk into ``writer``; each chunk's bad rows are saved before it is marked done."""
    bad_dir = writer.path / BAD_DIR
    if not writer.done:
        shutil.rmtree(bad_dir, ignore_errors=True)
    bad_dir.mkdir(exist_ok=True)
    pending = writer.pending()
    sides = meta["laterality"].tolist()
    done_rows = writer.n - sum(stop - start for start, stop in pending)
    progress = tqdm(total=writer.n, initial=done_rows, unit="img", desc="decoding", mininterval=1.0, disable=None)

    def store(start: int, images: np.ndarray, bad: list) -> None:
        atomic.write_json(bad_dir / f"{start}.json", [[start + i, kind, msg] for i, kind, msg in bad])
        writer.write(start, images)
        progress.update(len(images))

    try:
        if config.workers == 1:
            for start, stop in pending:
                store(start, *decode_chunk(paths[start:stop], sides[start:stop], options, config.skip_bad))
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_ignore_interrupts) as pool:
            queue = list(pending)
            running: dict[Future, int] = {}
            try:
                while queue or running:
                    while queue and len(running) < 2 * config.workers:
                        start, stop = queue.pop(0)
                        job = pool.submit(decode_chunk, paths[start:stop], sides[start:stop], options, config.skip_bad)
                        running[job] = start
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for job in finished:
                        store(running.pop(job), *job.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        progress.close()


def _collect_bad(out: Path, meta: pd.DataFrame) -> pd.DataFrame:
    entries = []
    for file in sorted((out / BAD_DIR).glob("*.json")):
        entries.extend(json.loads(file.read_text()))
    rows = [
        {"image_id": meta["image_id"].iat[row], "path": meta["path"].iat[row], "kind": kind, "error": msg}
        for row, kind, msg in entries
    ]
    return pd.DataFrame(rows, columns=["image_id", "path", "kind", "error"]).assign(row=[row for row, _, _ in entries])


def _finish_without(
    writer: StoreWriter,
    out: Path,
    meta: pd.DataFrame,
    bad_rows: list[int],
    domains: list[str],
    labels: list[str],
    extra: dict,
) -> ImageStore:
    """Copy the good rows into a store in a side folder, then move it over ``out`` (store.json last)."""
    good = np.setdiff1d(np.arange(writer.n), np.asarray(bad_rows, dtype=np.int64))
    if len(good) == 0:
        raise DatasetError("every image failed to decode; see the errors in " + str(out / BAD_ROWS))
    kept = meta.iloc[good].reset_index(drop=True).assign(index=np.arange(len(good)))
    compact_dir = out / COMPACT_DIR
    shutil.rmtree(compact_dir, ignore_errors=True)
    compact = StoreWriter(compact_dir, len(good), writer.shape[1], writer.shape[2], chunk=4096)
    for start, stop in compact.pending():
        compact.write(start, np.asarray(writer.images[good[start:stop]]))
    compact.finish(kept, domains, labels, extra=extra)
    del writer.images
    for name in (METADATA, IMAGES, INFO):  # store.json last
        os.replace(compact_dir / name, out / name)
    (out / (IMAGES + ".partial")).unlink(missing_ok=True)
    (out / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(compact_dir, ignore_errors=True)
    return ImageStore.open(out)


def check(config: PrepareConfig) -> None:
    """What is refused before anything is read or written (also by ``cfcl run --dry-run``): no
    dataset root, or one that is not a folder; an official split of a dataset that publishes none."""
    if config.split == "official" and not official_splits(config.dataset):
        having = ", ".join(d for d in DATASETS if official_splits(d))
        raise ConfigError(
            f"split: official: dataset {config.dataset!r} publishes no official split (datasets with one: {having}); "
            "use split: seeded"
        )
    if config.root is None:
        raise MissingKeyError("root", ROOT, "DIR")
    if not Path(config.root).is_dir():
        raise ConfigError(f"dataset root {config.root} (config key 'root') is not a folder; expected {ROOT}")


def run(config: PrepareConfig, out: Path, force: bool = False) -> dict:
    check(config)
    root = Path(config.root)
    return run_stage(STAGE, out, config, lambda stage: _prepare(config, root, stage), force)


def summary(report: dict, meta: pd.DataFrame, domains: list[str], bad_rows: Path) -> str:
    """What ``cfcl data prepare`` did, in one line: images written per split and domain, rows the
    dataset's filters left out, and images skipped (listed in ``bad_rows``)."""
    counts = meta.groupby(["split", "domain"]).size()
    splits = sorted(set(meta["split"]), key=SPLITS.index)
    written = "; ".join(f"{s}: " + ", ".join(f"{domains[d]} {n}" for d, n in counts[s].items()) for s in splits)
    filtered = sum(report["filtered"].values())
    return (
        f"{report['images']} images written ({written}); {filtered} rows left out by the dataset's filters "
        f"({REPORT}); {report['skipped_total']} skipped (missing or unreadable), listed in {bad_rows}"
    )


def finding_counts(store: ImageStore) -> dict[str, dict[str, int]]:
    """Images with each finding present, absent and missing, for ``prepare_report.json``."""
    matrix = store.finding_matrix()
    return {
        name: {
            "present": int((column == 1).sum()),
            "absent": int((column == 0).sum()),
            "missing": int(np.isnan(column).sum()),
        }
        for name, column in zip(store.findings, matrix.T)
    }


def _prepare(config: PrepareConfig, root: Path, stage: Stage) -> dict:
    out = stage.out
    t0 = time.time()
    table = load_table(config, root)
    dropped = dict(table.dropped)
    encoded = encode(
        table,
        config.domains,
        config.other_domains,
        config.ood_domains,
        config.seed,
        config.val_fraction,
        config.test_fraction,
        dropped,
        official_splits(config.dataset) if config.split == "official" else None,
    )
    meta = encoded.meta
    paths = meta["path"].tolist()
    meta["path"] = [os.path.relpath(p, root) if Path(p).is_relative_to(root) else p for p in paths]
    if not config.skip_bad:
        missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
        if missing:
            raise DatasetError(
                f"{len(missing)} image file(s) listed by the {config.dataset} metadata do not exist, first: "
                f"{paths[missing[0]]} (image_id {meta['image_id'].iat[missing[0]]}); "
                "fix the root or pass --skip-bad to leave them out"
            )
    stage.timed("table", time.time() - t0)
    options = decode_options(config, table)
    height, width = config.height_width
    t0 = time.time()
    writer = StoreWriter(out, len(meta), height, width, key=_work_key(meta, options), chunk=config.chunk)
    _fill(writer, meta, paths, options, config)
    stage.timed("decode", time.time() - t0)
    bad = _collect_bad(out, meta)
    table_bad = pd.DataFrame(table.bad, columns=["image_id", "path", "kind", "error"])
    report_rows = pd.concat([table_bad, bad.drop(columns="row")], ignore_index=True)[
        ["image_id", "path", "kind", "error"]
    ]
    atomic.write_text(out / BAD_ROWS, report_rows.to_csv(index=False))
    extra = {"dataset": config.dataset, "ood_domains": encoded.ood_ids, DECODE_KEY: decode_record(options)}
    if table.findings:
        extra[FINDINGS] = table.findings
    if bad.empty:
        store = writer.finish(meta, encoded.domains, table.labels, extra=extra)
    else:
        store = _finish_without(writer, out, meta, bad["row"].tolist(), encoded.domains, table.labels, extra)
    shutil.rmtree(out / BAD_DIR, ignore_errors=True)
    report = {
        "dataset": config.dataset,
        "images": len(store),
        "filtered": dropped,
        "skipped": {str(k): int(v) for k, v in report_rows["kind"].value_counts().items()},
        "skipped_total": len(report_rows),
        "splits": {str(k): int(v) for k, v in store.meta["split"].value_counts().sort_index().items()},
        "domains": store.domains,
        "labels": store.labels,
    }
    if store.findings:
        report[FINDINGS] = finding_counts(store)
    atomic.write_json(out / REPORT, report)
    return dict(
        images=len(store),
        skipped=len(report_rows),
        content_hash=store.content_hash,
        summary=summary(report, store.meta, store.domains, out / BAD_ROWS),
    )
