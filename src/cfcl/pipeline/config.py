"""The run config: one section per stage, each validated by that stage's own config model.

Input paths (``data``, ``generator``, ``cf_store``...) are not written in a run config: the
pipeline fills them from the run layout (docs/architecture.md, "The run layout"). A section may start from a
stage preset (``generator: {preset: cf_train_224, beta: 3}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cfcl.config import StrictModel
from cfcl.contrastive.methods import METHODS


class DataSection(StrictModel):
    """Where the images come from: the synthetic benchmark or a real dataset."""

    source: Literal["synth", "prepare"] = "synth"
    synth: dict[str, Any] = Field(default_factory=dict)
    prepare: dict[str, Any] = Field(default_factory=dict)


class FinetuneSection(StrictModel):
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class RunConfig(StrictModel):
    """Everything ``cfcl run`` needs; each ``dict`` section is a stage config (see that stage)."""

    out: Path = Path("runs/run")
    methods: list[str] = Field(default_factory=lambda: ["simclr", "simclr+", "cf-simclr", "oracle"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    draws: list[int] = Field(
        default_factory=list,
        description="data draws of the synthetic benchmark: one whole run per draw d in OUT/draw-<d>/ with "
        "data.synth.seed=d (empty: one run in OUT with the data section's seed)",
    )
    trainer: dict[str, Any] = Field(default_factory=dict)
    data: DataSection = DataSection()
    generator: dict[str, Any] = Field(default_factory=dict)
    guide: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] = Field(default_factory=dict)
    finetune: FinetuneSection = FinetuneSection()
    cf_store: dict[str, Any] = Field(default_factory=dict)
    cf_quality: dict[str, Any] = Field(default_factory=dict)
    pretrain: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty list from {', '.join(METHODS)}; got {unknown or methods}")
        return methods

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return seeds

    @field_validator("draws")
    @classmethod
    def _distinct_draws(cls, draws: list[int]) -> list[int]:
        if len(set(draws)) != len(draws) or any(d < 0 for d in draws):
            raise ValueError("draws must be a list of distinct non-negative integers (the synthetic benchmark's seeds)")
        return draws

    @property
    def needs_generator(self) -> bool:
        return any(METHODS[m].needs_generator for m in self.methods)
