"""Which images make the views of each training image: the one place that defines every method.

- ``simclr``: two views of the image itself.
- ``simclr+``: the image is replaced by one of its counterfactuals with probability ``p_replace``,
  then two views of that.
- ``cf-simclr``: view 1 from the image; each further view (``n_cf_views``, 1 = the paper's
  pairs, more = multi-positive) from a counterfactual to a distinct, uniformly drawn *other*
  domain with probability ``p_cf``, else from the image itself.
- ``cf-simclr-multi``: ``cf-simclr`` with several counterfactual views, all mutual positives.
- ``oracle`` / ``oracle-multi``: ``cf-simclr`` / ``cf-simclr-multi`` with the true
  counterfactuals of the synthetic benchmark.
- ``dino``: two global views then ``n_local`` local crops, all of the image itself.
- ``dino+``: as ``simclr+``, the image is replaced by a counterfactual with probability
  ``p_replace`` (counterfactuals added as data, unpaired), then all views of that.
- ``cf-dino``: one counterfactual per image, to a uniformly drawn *other* domain; the second
  global view is that counterfactual with probability ``p_cf``, and the second half of the
  local crops are taken from it (the first half from the image).
- ``oracle-dino``: ``cf-dino`` with the true counterfactuals.
- ``sex-cf-simclr`` / ``sex-oracle``: ``cf-simclr`` / ``oracle`` with counterfactuals of the
  patient's sex instead of the scanner.
- the controls of why generated counterfactuals beat true ones (:data:`CONTROLS`), each the
  pairing of another method with a variant of its counterfactual store:
  ``oracle-renoised``: ``oracle`` with the acquisition noise redrawn per counterfactual;
  ``oracle-recon``: ``oracle`` with the true counterfactuals as the generator reconstructs them;
  ``cf-simclr-base``: ``cf-simclr`` with the generator before counterfactual fine-tuning.

A method's counterfactuals change the parents :func:`intervened_parents` names (the scanner,
``domain``, unless the method says otherwise). A counterfactual store is a table of cells, one
per combination of target values of those parents; the counterfactuals of an image are the
cells other than its own.

A missing counterfactual (no row in the counterfactual store) falls back to the image itself,
so every image always yields the same number of views and all views of one image share a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cfcl.layout import BASE, RECON, RENOISED

DINO_METHODS = ("dino", "dino+", "cf-dino", "oracle-dino")
SEX_METHODS = ("sex-cf-simclr", "sex-oracle")
# control -> (the method whose views it takes, the variant of that method's counterfactual store it reads)
CONTROLS = {
    "oracle-renoised": ("oracle", RENOISED),  # true counterfactuals with an independent acquisition noise per counterfactual
    "oracle-recon": ("oracle", RECON),  # true counterfactuals passed through the generator's reconstruction
    "cf-simclr-base": ("cf-simclr", BASE),  # counterfactuals of the generator before counterfactual fine-tuning
}
METHODS = (
    "simclr", "simclr+", "cf-simclr", "cf-simclr-multi", "oracle", "oracle-multi", *DINO_METHODS, *SEX_METHODS, *CONTROLS,
)
CF_METHODS = tuple(m for m in METHODS if m not in ("simclr", "dino"))
ORACLE_METHODS = ("oracle", "oracle-multi", "oracle-dino", "sex-oracle", "oracle-renoised", "oracle-recon")
GENERATED_CF_METHODS = tuple(m for m in CF_METHODS if m not in ORACLE_METHODS)
GENERATOR_METHODS = (*GENERATED_CF_METHODS, "oracle-recon")  # whose counterfactual store a generator writes
MULTI_METHODS = ("cf-simclr-multi", "oracle-multi")


def intervened_parents(method: str) -> tuple[str, ...]:
    """The parents whose counterfactuals make ``method``'s positives."""
    return ("sex",) if method in SEX_METHODS else ("domain",)


def store_variant(method: str) -> str | None:
    """The variant of the counterfactual store a control reads (``renoised``, ``recon``, ``base``); None for every other method."""
    return CONTROLS[method][1] if method in CONTROLS else None


@dataclass(frozen=True)
class ViewPlan:
    """Views in blocks (all first views, then all second views, ...); the DINO methods' blocks
    are the two global views, then the local crops.

    ``from_cf[v]``: view ``v`` is row ``rows[v]`` of the counterfactual store, else of the data
    store; ``groups[v]``: position of its source image in the batch (views of one image are positives).
    """

    rows: np.ndarray
    from_cf: np.ndarray
    groups: np.ndarray


def _random_targets(available: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct uniformly drawn available columns per row, and whether each draw exists."""
    keys = np.where(available, rng.random(available.shape), -1.0)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(available, order, axis=1)


def plan_views(
    method: str,
    sources: np.ndarray,
    cells: np.ndarray,
    cf_table: np.ndarray | None,
    targets: Sequence[int],
    rng: np.random.Generator,
    p_replace: float = 0.5,
    p_cf: float = 1.0,
    n_cf_views: int = 1,
    n_local: int = 0,
) -> ViewPlan:
    """Views for the batch ``sources`` (data-store rows, with their own ``cells``); ``n_local``:
    the DINO methods' local crops per image.

    ``cf_table[row, cell]`` is the counterfactual-store row of (image, target cell) or -1 (with
    the scanner intervened on, a cell is a domain); ``targets`` are the cells counterfactuals may
    be drawn from (never the image's own).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    method = CONTROLS[method][0] if method in CONTROLS else method
    b = len(sources)
    groups_block = np.arange(b)
    n_views = 2 + n_local if method in DINO_METHODS else 2
    if method in ("simclr", "dino"):
        return ViewPlan(np.tile(sources, n_views), np.zeros(n_views * b, dtype=bool), np.tile(groups_block, n_views))
    if cf_table is None:
        raise ValueError(f"method {method!r} needs a counterfactual table")
    targets = np.asarray(targets, dtype=np.int64)
    if n_cf_views > len(targets):
        raise ValueError(f"{n_cf_views} counterfactual views per image, but only {len(targets)} target cells (domains)")
    cf_rows = cf_table[sources][:, targets]
    available = (cf_rows >= 0) & (targets[None, :] != cells[:, None])
    if method in ("simclr+", "dino+"):
        pick, exists = _random_targets(available, 1, rng)
        use = exists[:, 0] & (rng.random(b) < p_replace)
        chosen = np.where(use, np.take_along_axis(cf_rows, pick, axis=1)[:, 0], sources)
        return ViewPlan(np.tile(chosen, n_views), np.tile(use, n_views), np.tile(groups_block, n_views))
    if method in DINO_METHODS:
        pick, exists = _random_targets(available, 1, rng)
        cf_of_source = np.take_along_axis(cf_rows, pick, axis=1)[:, 0]
        global_cf = exists[:, 0] & (rng.random(b) < p_cf)
        local_cf = np.arange(n_local) >= n_local // 2
        use = np.concatenate([np.zeros((1, b), dtype=bool), global_cf[None], local_cf[:, None] & exists[:, 0]])
        rows = np.where(use, cf_of_source, sources)
        return ViewPlan(rows.reshape(-1), use.reshape(-1), np.tile(groups_block, n_views))
    pick, exists = _random_targets(available, n_cf_views, rng)
    use = exists & (rng.random(exists.shape) < p_cf)
    cf_view_rows = np.where(use, np.take_along_axis(cf_rows, pick, axis=1), sources[:, None])
    rows = np.concatenate([sources, cf_view_rows.T.reshape(-1)])
    from_cf = np.concatenate([np.zeros(b, dtype=bool), use.T.reshape(-1)])
    return ViewPlan(rows, from_cf, np.tile(groups_block, 1 + n_cf_views))
