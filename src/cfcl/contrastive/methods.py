"""Every pretraining method, one record each in :data:`METHODS`: the one table the code asks about methods.

The config, the pairing (:mod:`cfcl.contrastive.pairing`), the pretrain stage, the run planner and the
help of ``cfcl pretrain`` read a method's properties here, never a list of names. Adding a method is
one entry in :data:`METHODS`, plus its way of choosing views in :func:`~cfcl.contrastive.pairing.plan_views`
if it has a new one. This module stays light (no numpy, no torch): the CLI imports it at startup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cfcl.layout import BASE, RECON, RENOISED, true_cf


@dataclass(frozen=True)
class Method:
    """One pretraining method.

    ``family``: ``simclr`` (NT-Xent over the views) or ``dino`` (self-distillation over two global views and
    ``n_local`` local crops). ``views``, how :func:`~cfcl.contrastive.pairing.plan_views` chooses them:
    ``self`` (all of the image itself), ``replace`` (the image or one of its counterfactuals, then all views of
    that), ``paired`` (counterfactuals as further views: SimCLR's second view, DINO's second global view and
    half of its local crops), ``multi`` (``paired`` with several counterfactual views, all mutual positives; with
    ``cf_source`` ``none``, as many views all of the image itself, which separates "more views" from
    "counterfactuals"). ``cf_source``: whose counterfactuals, ``none``, ``generated`` (by the counterfactual
    generator) or ``true`` (the synthetic benchmark's). ``parents``: the parents its counterfactuals change. A
    control of why generated counterfactuals beat true ones takes the views of ``base`` with a ``store_variant`` of
    its counterfactual store (``cfcl.layout.true_cf`` / ``cf_store_name`` append it to the store's name).
    """

    name: str
    family: Literal["simclr", "dino"]
    views: Literal["self", "replace", "paired", "multi"]
    cf_source: Literal["none", "generated", "true"]
    description: str
    parents: tuple[str, ...] = ("domain",)
    base: str | None = None
    store_variant: str | None = None

    @property
    def uses_counterfactuals(self) -> bool:
        return self.cf_source != "none"

    @property
    def multi_positive(self) -> bool:
        """Several further views per image, all mutual positives (``n_cf_views`` >= 2, default every other domain):
        counterfactuals, or the image itself without ``cf_source``."""
        return self.views == "multi"

    @property
    def needs_generator(self) -> bool:
        """Its counterfactual store is written by ``cfcl cf generate``: generated counterfactuals, or the true
        ones as the generator reconstructs them."""
        return self.cf_source == "generated" or self.store_variant == RECON


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("simclr", "simclr", "self", "none", "two views of the image"),
        Method(
            "simclr+",
            "simclr",
            "replace",
            "generated",
            "two views of the image or, with probability p_replace, of one of its counterfactuals",
        ),
        Method(
            "cf-simclr",
            "simclr",
            "paired",
            "generated",
            "a view of the image and, with probability p_cf, one of a counterfactual of it to another domain",
        ),
        Method(
            "cf-simclr-multi",
            "simclr",
            "multi",
            "generated",
            "cf-simclr with n_cf_views counterfactual views to distinct domains, by default every other one, all "
            "positives",
        ),
        Method(
            "oracle", "simclr", "paired", "true", "cf-simclr with the true counterfactuals of the synthetic benchmark"
        ),
        Method("oracle-multi", "simclr", "multi", "true", "cf-simclr-multi with the true counterfactuals"),
        Method(
            "simclr-multi",
            "simclr",
            "multi",
            "none",
            "cf-simclr-multi without counterfactuals: as many views, all of the image itself, all positives",
        ),
        Method("dino", "dino", "self", "none", "two global views and n_local local crops of the image"),
        Method(
            "dino+",
            "dino",
            "replace",
            "generated",
            "every view of the image or, with probability p_replace, of one of its counterfactuals",
        ),
        Method(
            "cf-dino",
            "dino",
            "paired",
            "generated",
            "dino with one counterfactual to another domain as the second global view, with probability p_cf, "
            "and as the second half of the local crops",
        ),
        Method("oracle-dino", "dino", "paired", "true", "cf-dino with the true counterfactuals"),
        Method(
            "sex-cf-simclr",
            "simclr",
            "paired",
            "generated",
            "cf-simclr with counterfactuals of the patient's sex instead of the scanner",
            parents=("sex",),
        ),
        Method(
            "sex-oracle",
            "simclr",
            "paired",
            "true",
            "oracle with true counterfactuals of the patient's sex",
            parents=("sex",),
        ),
        Method(
            "oracle-renoised",
            "simclr",
            "paired",
            "true",
            "oracle with the acquisition noise redrawn per counterfactual",
            base="oracle",
            store_variant=RENOISED,
        ),
        Method(
            "oracle-recon",
            "simclr",
            "paired",
            "true",
            "oracle with the true counterfactuals as the generator reconstructs them",
            base="oracle",
            store_variant=RECON,
        ),
        Method(
            "cf-simclr-base",
            "simclr",
            "paired",
            "generated",
            "cf-simclr with the generator before counterfactual fine-tuning",
            base="cf-simclr",
            store_variant=BASE,
        ),
    )
}


def names(where: Callable[[Method], bool]) -> str:
    """The methods ``where`` holds for, comma-separated: help texts list them from the table, so they cannot drift."""
    return ", ".join(name for name, m in METHODS.items() if where(m))


def default_cf_store(method: str, data: str | Path) -> Path | None:
    """The store of true counterfactuals in the synthetic benchmark's ``data`` that a method reads unless told
    otherwise (``true_cf``, ``true_cf_sex``, ``true_cf_renoised``); None where a generator writes the store
    (``oracle-recon``'s too) or there is none."""
    m = METHODS[method]
    if m.cf_source != "true" or m.needs_generator:
        return None
    return true_cf(data, m.parents, m.store_variant)


def method_help() -> str:
    """Every method and its views, for ``cfcl pretrain --method``."""
    return "; ".join(f"{m.name} ({m.description})" for m in METHODS.values())


def cf_store_help() -> str:
    """Which methods need a counterfactual store, and the defaults of the others, for ``cf_store`` / ``--cf-store``."""
    defaults: dict[Path, list[str]] = {}
    for name in METHODS:
        store = default_cf_store(name, "DATA")
        if store is not None:
            defaults.setdefault(store, []).append(name)
    listed = "; ".join(f"{', '.join(methods)}: {store.as_posix()}" for store, methods in defaults.items())
    return (
        f"counterfactual store of the data, made by cfcl cf generate for {names(lambda m: m.needs_generator)}; "
        f"defaults: {listed}"
    )
