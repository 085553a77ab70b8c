"""Which images make the views of each training image, by the method's ``views`` and ``family``
(:class:`cfcl.contrastive.methods.Method`; the table of methods is :data:`~cfcl.contrastive.methods.METHODS`).

- ``self``: every view of the image itself (SimCLR: two; DINO: two global views then ``n_local``
  local crops).
- ``multi`` without counterfactuals (``simclr-multi``): ``1 + n_cf_views`` views of the image itself,
  as many as ``cf-simclr-multi`` takes.
- ``replace``: the image is replaced by one of its counterfactuals with probability ``p_replace``
  (counterfactuals added as data, unpaired), then every view of that.
- ``paired`` / ``multi``, SimCLR family: view 1 from the image; each further view (``n_cf_views``,
  1 = the paper's pairs, more = multi-positive) from a counterfactual to a distinct, uniformly
  drawn *other* cell with probability ``p_cf``, else from the image itself.
- ``paired``, DINO family: one counterfactual per image, to a uniformly drawn *other* cell; the
  second global view is that counterfactual with probability ``p_cf``, and the second half of the
  local crops are taken from it (the first half from the image).

A control takes the views of the method it controls; only the variant of the store it reads differs.
A method's counterfactuals change its ``parents`` (the scanner, ``domain``, unless the method says
otherwise). A counterfactual store is a table of cells, one per combination of target values of
those parents; the counterfactuals of an image are the cells other than its own.

A missing counterfactual (no row in the counterfactual store) falls back to the image itself,
so every image always yields the same number of views and all views of one image share a group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cfcl.contrastive.methods import METHODS


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
    spec = METHODS[method]
    views, dino = spec.views, spec.family == "dino"
    b = len(sources)
    groups_block = np.arange(b)
    if dino:
        n_views = 2 + n_local
    else:
        n_views = 1 + n_cf_views if views in ("paired", "multi") else 2
    if not spec.uses_counterfactuals:
        return ViewPlan(np.tile(sources, n_views), np.zeros(n_views * b, dtype=bool), np.tile(groups_block, n_views))
    if cf_table is None:
        raise ValueError(f"method {method!r} needs a counterfactual table")
    targets = np.asarray(targets, dtype=np.int64)
    if n_cf_views > len(targets):
        raise ValueError(f"{n_cf_views} counterfactual views per image, but only {len(targets)} target cells (domains)")
    cf_rows = cf_table[sources][:, targets]
    available = (cf_rows >= 0) & (targets[None, :] != cells[:, None])
    if views == "replace":
        pick, exists = _random_targets(available, 1, rng)
        use = exists[:, 0] & (rng.random(b) < p_replace)
        chosen = np.where(use, np.take_along_axis(cf_rows, pick, axis=1)[:, 0], sources)
        return ViewPlan(np.tile(chosen, n_views), np.tile(use, n_views), np.tile(groups_block, n_views))
    if dino:
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
    return ViewPlan(rows, from_cf, np.tile(groups_block, n_views))
