"""Turn a run config into the ordered list of stages to run, each with its resolved config."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cfcl import layout
from cfcl.config import build_config, merge, read_yaml
from cfcl.contrastive.methods import METHODS, default_cf_store
from cfcl.errors import ConfigError
from cfcl.pipeline.config import RunConfig
from cfcl.presets import resolve_config_path
from cfcl.registry import STAGES, StageCommand

GROUPS = (
    layout.DATA,
    layout.CF_MODEL,
    layout.CF_GUIDE,
    layout.CF_JUDGE,
    layout.CF_FINETUNE,
    layout.CF_STORE,
    layout.CF_QUALITY,
    layout.PRETRAIN,
    "evaluate",
    layout.REPORT,
)

# Each section of a run config that configures a stage: its dotted key, the stage command it
# configures and the stage preset it starts from (a section's own ``preset:`` key replaces it).
SECTIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "data.synth": (("data", "synth"), None),
    "data.prepare": (("data", "prepare"), None),
    "generator": (("cf", "train"), None),
    "guide": (("cf", "classifier"), "cf_guide"),
    "judge": (("cf", "classifier"), "cf_judge"),
    "finetune.config": (("cf", "finetune"), None),
    "cf_store": (("cf", "generate"), None),
    "cf_quality": (("cf", "evaluate"), None),
    "pretrain": (("pretrain",), None),
    "evaluate": (("evaluate",), None),
}


@dataclass
class Node:
    """One stage of a run: where it writes, the config it runs with and the run-config section it comes from."""

    name: str
    group: str
    command: StageCommand
    config: BaseModel
    out: Path
    section: str


def _command(*words: str) -> StageCommand:
    return next(c for c in STAGES if c.words == words)


def _section(run: RunConfig, key: str) -> dict:
    value = run
    for part in key.split("."):
        value = getattr(value, part)
    return value


class _Planner:
    def __init__(self, run: RunConfig, source: str):
        self.run, self.source, self.nodes = run, source, []
        self.used: set[str] = set()

    def build(self, section: str, inject: dict[str, Any]) -> BaseModel:
        """The config of the stage ``section`` configures: stage defaults <- preset <- the run
        config's section <- the run-wide trainer's device keys <- ``inject``."""
        words, preset = SECTIONS[section]
        model = _command(*words).load().config
        raw_section = copy.deepcopy(_section(self.run, section))
        if "preset" in raw_section and not str(raw_section["preset"] or "").strip():
            raise ConfigError(f"{self.source}, section '{section}': preset is empty; name a preset or remove the key")
        preset = raw_section.pop("preset", preset)
        raw: dict = read_yaml(resolve_config_path(preset)) if preset else {}
        merge(raw, raw_section)
        if "trainer" in model.model_fields and self.run.trainer:
            known = model.model_fields["trainer"].annotation.model_fields  # a DevicesConfig takes the device keys only
            run_trainer = {k: v for k, v in self.run.trainer.items() if k in known}
            merge(raw.setdefault("trainer", {}), copy.deepcopy(run_trainer))
        raw.update({k: str(v) if isinstance(v, Path) else v for k, v in inject.items()})
        return build_config(model, base=raw, source=f"{self.source}, section '{section}'")

    def add(self, name: str, group: str, section: str, inject: dict[str, Any]) -> Path:
        """Add the stage ``name``, configured by the run config's ``section``, into ``RUN/name``."""
        config = self.build(section, inject)
        out = self.run.out / name
        self.nodes.append(Node(name, group, _command(*SECTIONS[section][0]), config, out, section))
        self.used.add(section)
        return out

    def check_unused(self) -> None:
        """Validate the sections this run does not use, so that a mistake in one is not silent: their
        inputs (filled from the run layout when used) are stood in for by the run folder, and the
        pretraining section's DINO settings (dropped for the SimCLR family) are validated for a DINO method."""
        for section, (words, _) in SECTIONS.items():
            if section not in self.used:
                model = _command(*words).load().config
                self.build(section, {k: self.run.out for k, f in model.model_fields.items() if f.is_required()})
        if not any(METHODS[m].family == "dino" for m in self.run.methods):
            first_dino = next(name for name, m in METHODS.items() if m.family == "dino")
            self.build("pretrain", {"data": self.run.out, "method": first_dino})


def draw_runs(run: RunConfig, source: str = "run config") -> list[RunConfig]:
    """The runs of one data draw that ``run`` stands for: ``run`` itself, or with ``draws`` one per draw d,
    the run ``--out OUT/draw-<d> --set data.synth.seed=d`` would be (docs/architecture.md, "The run layout")."""
    if not run.draws:
        return [run]
    if run.data.source != "synth":
        raise ConfigError(
            f"{source}: draws {run.draws} need data.source synth (a draw is a seed of the synthetic benchmark); "
            f"a real dataset ('{run.data.source}') has one draw: remove draws"
        )
    if "seed" in run.data.synth:
        raise ConfigError(
            f"{source}: data.synth.seed and draws both set the synthetic benchmark's seed; draws {run.draws} set it "
            "per draw: remove data.synth.seed"
        )
    return [
        run.model_copy(
            update={
                "out": run.out / layout.draw_name(draw),
                "draws": [],
                "data": run.data.model_copy(update={"synth": {**run.data.synth, "seed": draw}}),
            }
        )
        for draw in run.draws
    ]


def plan(run: RunConfig, source: str = "run config") -> list[Node]:
    """All stages of ``run`` in dependency order, into the run layout under ``run.out``
    (docs/architecture.md, "The run graph"), draw after draw; every section of ``run`` is validated, used or not.
    A stage is named by its folder in the run (``pretrain/simclr-s0``, ``draw-100/pretrain/simclr-s0``)."""
    return [
        replace(node, name=node.out.relative_to(run.out).as_posix())
        for one in draw_runs(run, source)
        for node in _plan_draw(one, source)
    ]


def _plan_draw(run: RunConfig, source: str) -> list[Node]:
    """The stages of a run of one data draw, each in ``run.out``."""
    p = _Planner(run, source)
    if run.data.source == "synth":
        renoised = (
            {"renoised_counterfactuals": True}
            if any(METHODS[m].store_variant == layout.RENOISED for m in run.methods)
            else {}
        )
        data = p.add(layout.DATA, layout.DATA, "data.synth", renoised)
    else:
        data = p.add(layout.DATA, layout.DATA, "data.prepare", {})
    oracles = [m for m in run.methods if METHODS[m].cf_source == "true"]
    if oracles and run.data.source != "synth":
        raise ConfigError(
            f"{source}: method {oracles[0]!r} needs true counterfactuals, which only the synthetic benchmark has"
        )
    cf_stores: dict[tuple[tuple[str, ...], str | None], Path] = {}  # by (intervened parents, store variant)
    if run.needs_generator:
        model = p.add(layout.CF_MODEL, layout.CF_MODEL, "generator", {"data": data})
        generated = [METHODS[m] for m in run.methods if METHODS[m].needs_generator]
        stores = list(dict.fromkeys((m.parents, m.store_variant) for m in generated))
        interventions = list(dict.fromkeys(parents for parents, _ in stores))
        conditioned = p.nodes[-1].config
        missing = [q for parents in interventions for q in parents if q not in conditioned.parents]
        if missing:  # a method pairs counterfactuals of a parent: the generator is conditioned on it as well
            conditioned.parents = [*conditioned.parents, *dict.fromkeys(missing)]
        guide = p.add(layout.CF_GUIDE, layout.CF_GUIDE, "guide", {"data": data})
        judge = p.add(layout.CF_JUDGE, layout.CF_JUDGE, "judge", {"data": data})
        generator = model
        if run.finetune.enabled:
            p.add(
                layout.CF_QUALITY_BASE,
                layout.CF_QUALITY,
                "cf_quality",
                {"data": data, "generator": model, "judge": judge},
            )
            guides = [guide]  # and one of each other intervened parent, so that its counterfactuals change it
            for q in dict.fromkeys(q for parents in interventions for q in parents if q != "domain"):
                guides.append(p.add(layout.cf_guide_name(q), layout.CF_GUIDE, "guide", {"data": data, "parent": q}))
            generator = p.add(
                layout.CF_FINETUNE,
                layout.CF_FINETUNE,
                "finetune.config",
                {"data": data, "generator": model, "guide": [str(g) for g in guides]},
            )  # one: as a path
        for parents, variant in stores:
            planned = (
                None if variant == layout.BASE and not run.finetune.enabled else variant
            )  # no fine-tuning: cf_store
            name = layout.cf_store_name(parents, planned)
            inject = {"data": data, "generator": model if planned == layout.BASE else generator}
            if parents != ("domain",):
                inject["intervene"] = list(parents)
            if planned == layout.RECON:
                inject["source"] = layout.true_cf(data, parents)
            known = next((n.out for n in p.nodes if n.name == name), None)
            cf_stores[parents, variant] = known or p.add(name, layout.CF_STORE, "cf_store", inject)
        p.add(
            layout.CF_QUALITY, layout.CF_QUALITY, "cf_quality", {"data": data, "generator": generator, "judge": judge}
        )
        judges = {"domain": judge}
        for parents in (q for q in interventions if q != ("domain",)):  # judged per parent
            for q in parents:
                if q not in judges:
                    judges[q] = p.add(layout.cf_judge_name(q), layout.CF_JUDGE, "judge", {"data": data, "parent": q})
            inject = {
                "data": data,
                "generator": generator,
                "intervene": list(parents),
                "judge": [str(judges[q]) for q in parents],
            }
            p.add(layout.cf_quality_name(parents), layout.CF_QUALITY, "cf_quality", inject)
    encoders = []
    for seed in run.seeds:
        for method in run.methods:
            inject: dict[str, Any] = {"data": data, "method": method, "seed": seed}
            spec = METHODS[method]
            cf_store = (
                cf_stores[spec.parents, spec.store_variant] if spec.needs_generator else default_cf_store(method, data)
            )
            if cf_store is not None:
                inject["cf_store"] = cf_store
            name = layout.pretrain_name(method, seed)
            encoders.append(p.add(name, layout.PRETRAIN, "pretrain", inject))
    p.add(layout.EVAL, "evaluate", "evaluate", {"data": data, "encoders": [str(e) for e in encoders]})
    p.check_unused()
    return p.nodes
