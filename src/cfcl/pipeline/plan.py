"""Turn a run config into the ordered list of stages to run, each with its resolved config."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cfcl import layout
from cfcl.config import build_config, merge, read_yaml
from cfcl.contrastive.pairing import GENERATOR_METHODS, ORACLE_METHODS, intervened_parents, store_variant
from cfcl.errors import ConfigError
from cfcl.pipeline.config import RunConfig
from cfcl.presets import resolve_config_path
from cfcl.registry import STAGES, StageCommand, load_ref

GROUPS = (
    layout.DATA, layout.CF_MODEL, layout.CF_GUIDE, layout.CF_JUDGE, layout.CF_FINETUNE, layout.CF_STORE,
    layout.CF_QUALITY, layout.PRETRAIN, "evaluate", layout.REPORT,
)


@dataclass
class Node:
    """One stage of a run: where it writes and the config it runs with."""

    name: str
    group: str
    command: StageCommand
    config: BaseModel
    out: Path


def _command(*words: str) -> StageCommand:
    return next(c for c in STAGES if c.words == words)


class _Planner:
    def __init__(self, run: RunConfig, source: str):
        self.run, self.source, self.nodes = run, source, []

    def add(self, name: str, group: str, words: tuple[str, ...], section: dict, inject: dict[str, Any],
            preset: str | None = None) -> Path:
        """Add a stage whose config is: stage defaults <- preset <- run-config section <- inputs.

        A section may name its own preset (``preset: cf_train_224``), replacing ``preset``.
        """
        command = _command(*words)
        model = load_ref(command.config)
        section = copy.deepcopy(section)
        preset = section.pop("preset", preset)
        raw: dict = read_yaml(resolve_config_path(preset)) if preset else {}
        merge(raw, section)
        if "trainer" in model.model_fields and self.run.trainer:
            known = model.model_fields["trainer"].annotation.model_fields  # a DevicesConfig takes the device keys only
            run_trainer = {k: v for k, v in self.run.trainer.items() if k in known}
            merge(raw.setdefault("trainer", {}), copy.deepcopy(run_trainer))
        raw.update({k: str(v) if isinstance(v, Path) else v for k, v in inject.items()})
        section_name = name.split("/")[0]
        config = build_config(model, base=raw, source=f"{self.source}, section '{section_name}'")
        out = self.run.out / name
        self.nodes.append(Node(name, group, command, config, out))
        return out


def plan(run: RunConfig, source: str = "run config") -> list[Node]:
    """All stages of ``run`` in dependency order, into the run layout under ``run.out``
    (docs/architecture.md, "The run graph")."""
    p = _Planner(run, source)
    if run.data.source == "synth":
        renoised = {"renoised_counterfactuals": True} if any(store_variant(m) == layout.RENOISED for m in run.methods) else {}
        data = p.add(layout.DATA, layout.DATA, ("data", "synth"), run.data.synth, renoised)
    else:
        data = p.add(layout.DATA, layout.DATA, ("data", "prepare"), run.data.prepare, {})
    oracles = [m for m in run.methods if m in ORACLE_METHODS]
    if oracles and run.data.source != "synth":
        raise ConfigError(f"{source}: method {oracles[0]!r} needs true counterfactuals, which only the synthetic benchmark has")
    cf_stores: dict[tuple[tuple[str, ...], str | None], Path] = {}  # by (intervened parents, store variant)
    if run.needs_generator:
        model = p.add(layout.CF_MODEL, layout.CF_MODEL, ("cf", "train"), run.generator, {"data": data})
        stores = list(dict.fromkeys((intervened_parents(m), store_variant(m)) for m in run.methods if m in GENERATOR_METHODS))
        interventions = list(dict.fromkeys(parents for parents, _ in stores))
        conditioned = p.nodes[-1].config
        missing = [q for parents in interventions for q in parents if q not in conditioned.parents]
        if missing:  # a method pairs counterfactuals of a parent: the generator is conditioned on it as well
            conditioned.parents = [*conditioned.parents, *dict.fromkeys(missing)]
        guide = p.add(layout.CF_GUIDE, layout.CF_GUIDE, ("cf", "classifier"), run.guide, {"data": data}, preset="cf_guide")
        judge = p.add(layout.CF_JUDGE, layout.CF_JUDGE, ("cf", "classifier"), run.judge, {"data": data}, preset="cf_judge")
        generator = model
        if run.finetune.enabled:
            p.add(layout.CF_QUALITY_BASE, layout.CF_QUALITY, ("cf", "evaluate"), run.cf_quality,
                  {"data": data, "generator": model, "judge": judge})
            guides = [guide]  # and one of each other intervened parent, so that its counterfactuals change it
            for q in dict.fromkeys(q for parents in interventions for q in parents if q != "domain"):
                guides.append(p.add(layout.cf_guide_name(q), layout.CF_GUIDE, ("cf", "classifier"), run.guide,
                                    {"data": data, "parent": q}, preset="cf_guide"))
            generator = p.add(layout.CF_FINETUNE, layout.CF_FINETUNE, ("cf", "finetune"), run.finetune.config,
                              {"data": data, "generator": model, "guide": [str(g) for g in guides]})  # one: as a path
        for parents, variant in stores:
            planned = None if variant == layout.BASE and not run.finetune.enabled else variant  # no fine-tuning: cf_store
            name = layout.cf_store_name(parents, planned)
            inject = {"data": data, "generator": model if planned == layout.BASE else generator}
            if parents != ("domain",):
                inject["intervene"] = list(parents)
            if planned == layout.RECON:
                inject["source"] = layout.true_cf(data, parents)
            known = next((n.out for n in p.nodes if n.name == name), None)
            cf_stores[parents, variant] = known or p.add(name, layout.CF_STORE, ("cf", "generate"), run.cf_store, inject)
        p.add(layout.CF_QUALITY, layout.CF_QUALITY, ("cf", "evaluate"), run.cf_quality,
              {"data": data, "generator": generator, "judge": judge})
        judges = {"domain": judge}
        for parents in (q for q in interventions if q != ("domain",)):  # judged per parent
            for q in parents:
                if q not in judges:
                    judges[q] = p.add(layout.cf_judge_name(q), layout.CF_JUDGE, ("cf", "classifier"), run.judge,
                                      {"data": data, "parent": q}, preset="cf_judge")
            inject = {"data": data, "generator": generator, "intervene": list(parents), "judge": [str(judges[q]) for q in parents]}
            p.add(layout.cf_quality_name(parents), layout.CF_QUALITY, ("cf", "evaluate"), run.cf_quality, inject)
    encoders = []
    for seed in run.seeds:
        for method in run.methods:
            inject: dict[str, Any] = {"data": data, "method": method, "seed": seed}
            if method in GENERATOR_METHODS:
                inject["cf_store"] = cf_stores[intervened_parents(method), store_variant(method)]
            elif method in ORACLE_METHODS:
                inject["cf_store"] = layout.true_cf(data, intervened_parents(method), store_variant(method))
            name = layout.pretrain_name(method, seed)
            encoders.append(p.add(name, layout.PRETRAIN, ("pretrain",), run.pretrain, inject))
    p.add(layout.EVAL, "evaluate", ("evaluate",), run.evaluate, {"data": data, "encoders": [str(e) for e in encoders]})
    return p.nodes
