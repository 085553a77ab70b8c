"""The image store every stage reads (docs/architecture.md, "Image store").

A store is a folder holding ``images.npy`` (uint8 ``[N, H, W]``, memory-mapped on read),
``metadata.csv`` (one row per image) and ``store.json`` (format version, size, names of
domains and labels, content hash). ``store.json`` is written last: a folder without it is an
incomplete store. A counterfactual store has the same layout plus the column ``source_index``
and one column ``target_<parent>`` per intervened parent (``target_domain`` for the scanner).

A multi-label store also lists binary findings in ``store.json`` ``findings`` and holds one
column ``finding_<name>`` per finding: 1 (present), 0 (absent) or empty (missing: unknown or
masked). Its labels are ``ANY_FINDING_LABELS``: ``label`` is 1 ("any finding") exactly where
some finding is 1, else 0 (docs/datasets.md, "Findings"). A store without
``findings`` is a single-label store; its files and content hash are those it always had.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfcl import atomic
from cfcl.distributed import Coordinator
from cfcl.errors import StoreError

FORMAT = "cfcl-image-store"
VERSION = 1
INFO = "store.json"
IMAGES = "images.npy"
METADATA = "metadata.csv"
PROGRESS = "progress.json"
REQUIRED_COLUMNS = {
    "images": ["index", "image_id", "patient_id", "split", "domain", "label"],
    "counterfactuals": ["index", "source_index"],
}
FINDINGS = "findings"
FINDING_PREFIX = "finding_"
ANY_FINDING_LABELS = ["negative", "any finding"]  # the labels of a store with findings


def finding_column(name: str) -> str:
    """The metadata column holding finding ``name`` (1, 0 or empty)."""
    return FINDING_PREFIX + name


def required_columns(info: dict[str, Any]) -> list[str]:
    """Metadata columns a store of ``info`` must have: a counterfactual store's include ``target_<parent>``
    for each intervened parent (a store that records none intervened on the domain)."""
    extra = [f"target_{p}" for p in info.get("intervened") or ["domain"]] if info["kind"] == "counterfactuals" else []
    return [*REQUIRED_COLUMNS[info["kind"]], *extra, *map(finding_column, info.get(FINDINGS, []))]


def finding_values(meta: pd.DataFrame, findings: list[str], source: str) -> pd.DataFrame:
    """The finding columns of ``meta`` as floats 1 / 0 / NaN (missing); any other value is a
    :class:`StoreError` naming ``source`` and the column."""
    values = {}
    for name in findings:
        column = meta[finding_column(name)]
        cells = column.replace("", np.nan)
        numbers = pd.to_numeric(cells, errors="coerce")
        bad = (numbers.isna() & cells.notna()) | ~(numbers.isin([0, 1]) | numbers.isna())
        if bad.any():
            raise StoreError(
                f"{source}: column {finding_column(name)!r} holds {column[bad].tolist()[0]!r}; "
                "expected 1 (present), 0 (absent) or empty (missing)"
            )
        values[finding_column(name)] = numbers.astype(float)
    return pd.DataFrame(values, index=meta.index)


def _content_hash(images: np.ndarray, meta_path: Path, findings: list[str]) -> str:
    """Pixels and metadata; a multi-label store's finding names too (their order is that of
    :meth:`ImageStore.finding_matrix`)."""
    digest = hashlib.sha256()
    step = max(1, (1 << 24) // max(1, images[0].size if len(images) else 1))
    for start in range(0, len(images), step):
        digest.update(np.ascontiguousarray(images[start : start + step]).tobytes())
    digest.update(meta_path.read_bytes())
    if findings:
        digest.update(json.dumps(findings).encode())
    return digest.hexdigest()[:16]


@dataclass
class ImageStore:
    """A complete store opened read-only; ``images`` is a memory map."""

    path: Path
    info: dict[str, Any]
    meta: pd.DataFrame
    images: np.ndarray

    @classmethod
    def open(cls, path: str | os.PathLike) -> ImageStore:
        """The complete store in folder ``path``: ``images`` uint8 ``[N, H, W]`` (0..255, memory-mapped),
        ``meta`` one row per image (``split``, integer ``domain`` and ``label``: names in
        ``domains`` / ``labels``; a multi-label store's ``finding_<name>`` columns as floats
        1 / 0 / NaN), ``info`` the parsed ``store.json``."""
        path = Path(path)
        info_path = path / INFO
        if not path.is_dir():
            raise StoreError(f"image store {path} does not exist")
        if not info_path.is_file():
            raise StoreError(f"image store {path} is incomplete: {INFO} is missing (interrupted write?)")
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            raise StoreError(f"image store {path}: {INFO} is not valid JSON") from None
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise StoreError(
                f"image store {path} has format {info.get('format')!r} version {info.get('version')!r}; "
                f"this cfcl reads {FORMAT!r} version {VERSION}"
            )
        try:
            images = np.load(path / IMAGES, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StoreError(f"image store {path}: cannot read {IMAGES} ({exc})") from None
        expected = (info["n"], info["height"], info["width"])
        if images.dtype != np.uint8 or images.shape != expected:
            raise StoreError(
                f"image store {path}: {IMAGES} is {images.dtype} {images.shape}, expected uint8 {expected}"
            )
        meta = pd.read_csv(path / METADATA, keep_default_na=False, low_memory=False)
        missing = [c for c in required_columns(info) if c not in meta.columns]
        if missing:
            raise StoreError(f"image store {path}: {METADATA} lacks column(s) {', '.join(missing)}")
        if len(meta) != info["n"]:
            raise StoreError(f"image store {path}: {METADATA} has {len(meta)} rows, expected {info['n']}")
        findings = finding_values(meta, info.get(FINDINGS, []), f"image store {path}: {METADATA}")
        meta[findings.columns] = findings
        return cls(path, info, meta, images)

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def domains(self) -> list[str]:
        return list(self.info["domains"])

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def findings(self) -> list[str]:
        """Names of a multi-label store's binary findings, in :meth:`finding_matrix` column
        order; empty for a single-label store."""
        return list(self.info.get(FINDINGS, []))

    def finding_matrix(self, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        """float ``[len(rows), len(findings)]`` (all rows when None): 1 present, 0 absent, NaN
        missing (unknown or masked: leave it out of that finding's loss and AUROC)."""
        if not self.findings:
            raise StoreError(f"image store {self.path} is single-label: its store.json lists no {FINDINGS}")
        matrix = self.meta[[finding_column(f) for f in self.findings]].to_numpy(dtype=float)
        return matrix if rows is None else matrix[np.asarray(rows, dtype=np.int64)]

    @property
    def ood_domains(self) -> list[int]:
        """The held-out (out-of-distribution) domain ids."""
        return list(self.info.get("ood_domains", []))

    @property
    def id_domains(self) -> list[int]:
        """The in-distribution domain ids, in store order: every domain not held out."""
        return [d for d in range(len(self.domains)) if d not in self.ood_domains]

    @property
    def size(self) -> tuple[int, int]:
        return self.info["height"], self.info["width"]

    @property
    def content_hash(self) -> str:
        return self.info["content_hash"]

    def __len__(self) -> int:
        return self.info["n"]

    def indices(self, split: str | list[str] | None = None, domains: list[int] | None = None) -> np.ndarray:
        """Row indices of the images in ``split`` (one or several) and, optionally, ``domains``."""
        mask = np.ones(len(self), dtype=bool)
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            mask &= self.meta["split"].isin(splits).to_numpy()
        if domains is not None:
            mask &= self.meta["domain"].isin(domains).to_numpy()
        return np.flatnonzero(mask)

    def require_counterfactuals_of(self, source: ImageStore) -> None:
        """Refuse this store unless it holds counterfactuals made from ``source``, at its resolution."""
        if self.kind != "counterfactuals":
            raise StoreError(f"{self.path} is an image store, not a counterfactual store")
        if self.info.get("source_store") != source.content_hash:
            raise StoreError(
                f"counterfactual store {self.path} was made from store {self.info.get('source_store')!r}, "
                f"not from {source.path} (content hash {source.content_hash!r})"
            )
        if self.size != source.size:
            raise StoreError(
                f"counterfactual store {self.path} holds {self.size[0]}x{self.size[1]} images, "
                f"{source.path} {source.size[0]}x{source.size[1]}"
            )

    @property
    def intervened(self) -> dict[str, list[str]]:
        """A counterfactual store's intervened parents and the names of their value codes, in cell
        order (docs/architecture.md, "Image store"); a store that records none intervened on the domain."""
        if self.kind != "counterfactuals":
            raise StoreError(f"{self.path} is an image store, not a counterfactual store")
        return {p: list(v) for p, v in (self.info.get("intervened") or {"domain": self.domains}).items()}

    def cell_shape(self, n_domains: int) -> tuple[int, ...]:
        """Number of values of each intervened parent (the domain: the source store's ``n_domains``)."""
        return tuple(n_domains if p == "domain" else len(v) for p, v in self.intervened.items())

    def source_cells(self, source: ImageStore) -> np.ndarray:
        """Each image of ``source``'s own cell (its intervened parents' codes, flattened), -1 if a value is unknown
        here."""
        codes = [parent_codes(source.meta, p, v) for p, v in self.intervened.items()]
        known = np.all([c >= 0 for c in codes], axis=0)
        cells = np.ravel_multi_index([np.maximum(c, 0) for c in codes], self.cell_shape(len(source.domains)))
        return np.where(known, cells, -1)

    def counterfactual_table(self, n_sources: int, n_domains: int) -> np.ndarray:
        """``[n_sources, n_cells]`` row of each (source image, target cell) here, -1 where absent.

        A cell is one combination of target values of the intervened parents, their codes
        flattened in ``intervened`` order; with the domain alone, the cell is the target domain."""
        shape = self.cell_shape(n_domains)
        table = np.full((n_sources, int(np.prod(shape))), -1, dtype=np.int64)
        src = self.meta["source_index"].to_numpy()
        targets = [self.meta[f"target_{p}"].to_numpy() for p in self.intervened]
        if len(src) and (src.max() >= n_sources or any(t.max() >= n for t, n in zip(targets, shape))):
            raise StoreError(
                f"counterfactual store {self.path} refers to images or parent values beyond its source store "
                f"({n_sources} images, {n_domains} domains)"
            )
        table[src, np.ravel_multi_index(targets, shape) if len(src) else src] = self.meta["index"].to_numpy()
        return table

    def intervention_table(self, source: ImageStore, parents: list[str] | tuple[str, ...], what: str) -> np.ndarray:
        """:meth:`counterfactual_table` of this store, refused unless it holds counterfactuals of ``source``
        that intervene on exactly ``parents`` (``what`` names the store in the error)."""
        self.require_counterfactuals_of(source)
        if list(self.intervened) != list(parents):
            raise StoreError(
                f"{what} {self.path} intervenes on {', '.join(self.intervened)}, not on {', '.join(parents)}"
            )
        return self.counterfactual_table(len(source), len(source.domains))


def parent_codes(meta: pd.DataFrame, parent: str, values: list[str]) -> np.ndarray:
    """Codes of the metadata column ``parent`` among ``values`` (-1: not among them); ``domain`` is already coded."""
    if parent == "domain":
        return meta["domain"].to_numpy(np.int64)
    lookup = {v: i for i, v in enumerate(values)}
    return np.array([lookup.get(str(v), -1) for v in meta[parent]], dtype=np.int64)


class StoreWriter:
    """Writes a store in chunks that survive interruption, on one rank or shared by several.

    Images go to ``images.npy.partial`` (a memory map) and finished chunks are recorded in
    ``progress.json`` (rank r > 0: ``progress.r.json``) under ``key``; a new writer with the same
    key resumes the chunks no progress file records, one with another key starts afresh. Under
    several processes (``coordinator``, docs/architecture.md, "Several processes") rank 0 opens
    or creates the files and tells the others which chunks are done; each rank then writes every
    world-size-th missing chunk (:meth:`pending`) into the shared memory map, and :meth:`finish`
    merges the ranks' progress once, on rank 0, which writes the metadata, renames the images
    into place and writes ``store.json`` last.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        height: int,
        width: int,
        key: str = "",
        chunk: int = 1024,
        coordinator: Coordinator | None = None,
    ):
        if n < 0 or height <= 0 or width <= 0:
            raise StoreError(f"cannot write a store of {n} images of {height}x{width}")
        self.path = Path(path)
        self.coordinator = coordinator or Coordinator.single()
        self.rank, self.world = self.coordinator.ranks.rank, self.coordinator.ranks.world_size
        self.n, self.shape, self.chunk = n, (n, height, width), max(1, chunk)
        self.key = json.dumps({"key": key, "shape": list(self.shape), "chunk": self.chunk})
        partial = self.path / (IMAGES + ".partial")
        done: list[int] | None = None
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / INFO).unlink(missing_ok=True)
            recorded = self._recorded()
            if recorded is not None and partial.is_file():
                self.images = np.lib.format.open_memmap(partial, mode="r+")
                done = sorted(recorded)
            else:
                done = self._start_afresh(partial)
        done = self.coordinator.agree(done, f"{self.path.name}: chunks already written")
        if self.rank != 0:
            self.images = np.lib.format.open_memmap(partial, mode="r+")
        self.done = set(done)

    def _start_afresh(self, partial: Path) -> list[int]:
        for old in self._progress_files():
            old.unlink()
        self.images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=self.shape)
        self.done = set()
        self._save_progress()
        return []

    def _progress_files(self) -> list[Path]:
        return sorted(self.path.glob("progress*.json"))

    def _recorded(self) -> set[int] | None:
        """Chunks the progress files of every rank record under this writer's key (None: no file has it)."""
        done: set[int] | None = None
        for file in self._progress_files():
            try:
                progress = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if progress.get("key") == self.key:
                done = (done or set()) | set(progress["done"])
        return done

    def _save_progress(self) -> None:
        name = PROGRESS if self.rank == 0 else f"progress.{self.rank}.json"
        atomic.write_json(self.path / name, {"key": self.key, "done": sorted(self.done)})

    def _missing(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.chunk, self.n)) for s in range(0, self.n, self.chunk) if s not in self.done]

    def pending(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every chunk not yet written that is this rank's to write."""
        return self._missing()[self.rank :: self.world]

    def write(self, start: int, images: np.ndarray) -> None:
        """Write one whole chunk starting at ``start`` (a multiple of ``chunk``)."""
        if start % self.chunk or images.shape[0] != min(self.chunk, self.n - start):
            raise ValueError(f"chunk at {start} of {images.shape[0]} images does not match chunk size {self.chunk}")
        if images.dtype != np.uint8 or images.shape[1:] != self.shape[1:]:
            raise ValueError(f"images must be uint8 {self.shape[1:]}, got {images.dtype} {images.shape[1:]}")
        self.images[start : start + len(images)] = images
        self.images.flush()
        self.done.add(start)
        self._save_progress()

    def finish(
        self,
        meta: pd.DataFrame,
        domains: list[str],
        labels: list[str],
        kind: str = "images",
        extra: dict[str, Any] | None = None,
    ) -> ImageStore | None:
        """Once every rank has written its chunks: the finished store on rank 0, None on the others.

        ``extra`` is merged into ``store.json``; its ``findings`` (names) make a multi-label store,
        whose ``finding_<name>`` columns must hold 1, 0 or missing (NaN / empty)."""
        self.images.flush()
        self.coordinator.barrier(f"{self.path.name}: chunks written")
        if self.rank != 0:
            del self.images
            return None
        self.done |= self._recorded() or set()
        if self._missing():
            raise StoreError(f"{self.path}: {len(self._missing())} chunk(s) not written yet")
        if kind not in REQUIRED_COLUMNS:
            raise ValueError(f"kind must be one of {sorted(REQUIRED_COLUMNS)}")
        required = required_columns({"kind": kind, **(extra or {})})
        missing = [c for c in required if c not in meta.columns]
        if missing or len(meta) != self.n:
            raise StoreError(f"metadata for {self.path} must have {self.n} rows and columns {required}")
        findings = list((extra or {}).get(FINDINGS, []))
        if findings:
            if len(set(findings)) != len(findings) or not all(findings):
                raise StoreError(f"{FINDINGS} of {self.path} must be distinct non-empty names, got {findings}")
            values = finding_values(meta, findings, f"metadata for {self.path}")
            if list(labels) != ANY_FINDING_LABELS or not np.array_equal(meta["label"], (values == 1).any(axis=1)):
                raise StoreError(
                    f"metadata for {self.path}: a store with {FINDINGS} has labels {ANY_FINDING_LABELS}, "
                    "and its label is 1 exactly where some finding is 1"
                )
            meta = meta.assign(**{c: values[c].astype("Int8") for c in values.columns})
        self.images.flush()
        del self.images
        atomic.write_text(self.path / METADATA, meta.to_csv(index=False))
        os.replace(self.path / (IMAGES + ".partial"), self.path / IMAGES)
        images = np.load(self.path / IMAGES, mmap_mode="r")
        info = {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "n": self.n,
            "height": self.shape[1],
            "width": self.shape[2],
            "domains": list(domains),
            "labels": list(labels),
            "content_hash": _content_hash(images, self.path / METADATA, findings),
            **(extra or {}),
        }
        atomic.write_json(self.path / INFO, info)
        for progress in self._progress_files():
            progress.unlink()
        return ImageStore.open(self.path)


def write_store(
    path: str | os.PathLike,
    images: np.ndarray,
    meta: pd.DataFrame,
    domains: list[str],
    labels: list[str],
    kind: str = "images",
    extra: dict[str, Any] | None = None,
) -> ImageStore:
    """Write a whole store from an in-memory uint8 array ``[N, H, W]``."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {images.shape}")
    writer = StoreWriter(path, len(images), images.shape[1], images.shape[2], chunk=max(1, len(images)))
    if len(images):
        writer.write(0, images.astype(np.uint8, copy=False))
    return writer.finish(meta, domains, labels, kind, extra)
