"""Typed configuration of the synthetic benchmark (``cfcl data synth``)."""

from __future__ import annotations

import dataclasses
import math

from pydantic import Field, ValidationInfo, field_validator

from cfcl.config import StrictModel
from cfcl.data.synthetic.scanners import SCANNERS, Scanner


class DiseaseConfig(StrictModel):
    """How disease arises (age, optionally the scanner) and how its lesions look."""

    prevalence: float = Field(0.4, gt=0, lt=1, description="P(opacity) at age 55 on a neutral scanner")
    age_log_odds_per_decade: float = Field(0.3, description="older patients are more often ill")
    scanner_confounding: float = Field(
        0.0, description="log-odds spread of disease across scanners (0: scanner and disease independent)"
    )
    acquisition_confounding: dict[str, float] = Field(
        default_factory=dict,
        description="extra log-odds of disease of TRAINING images acquired by each named scanner, "
        "e.g. {portable: 1.5} (ICU patients imaged at the bedside are more often ill); "
        "validation and test stay unconfounded",
    )
    contrast_min: float = Field(0.12, gt=0, description="lesion peak attenuation, lower end")
    contrast_max: float = Field(0.30, gt=0, description="lesion peak attenuation, upper end")
    size_min: float = Field(0.08, gt=0, description="lesion patch radius as a fraction of the half-field, lower end")
    size_max: float = Field(0.20, gt=0, description="lesion patch radius, upper end")
    max_patches: int = Field(3, ge=1, le=6)

    @field_validator("contrast_max", "size_max")
    @classmethod
    def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        lower = info.field_name.removesuffix("_max") + "_min"
        if value < info.data.get(lower, 0.0):
            raise ValueError(f"must be >= {lower}")
        return value


SPLITS = ("train", "val", "test", "ood_train", "ood_test")


def as_tuples(changes: dict) -> dict:
    """Scanner parameter changes with lists as tuples, as the frozen :class:`Scanner` holds them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}


class SexConfig(StrictModel):
    """How sex enters the benchmark: who is drawn, and the breast tissue that makes a subgroup gap."""

    female_share: dict[str, float] = Field(
        default_factory=dict,
        description="share of women among each split's patients, e.g. {train: 0.3}; unlisted splits 0.5",
    )
    breast_shadow: float = Field(
        0.0,
        ge=0,
        le=0.3,
        description="attenuation breast tissue adds over women's lower lung fields at its densest "
        "(0: none, the default benchmark; the benchmark_sex preset: 0.15)",
    )
    breast_masking: float = Field(
        0.3, ge=0, le=1, description="fraction of a lesion's contrast lost under breast tissue of density breast_shadow"
    )

    @field_validator("female_share")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; splits are {list(SPLITS)}")
        if any(not 0 <= v <= 1 for v in value.values()):
            raise ValueError("shares must lie in [0, 1]")
        return value

    def female(self, split: str) -> float:
        return self.female_share.get(split, 0.5)


class SynthConfig(StrictModel):
    """Sizes are numbers of images; patients are split, never their images."""

    seed: int = 0
    image_size: int = Field(64, ge=16, le=512)
    scanners: list[str] = Field(
        default_factory=lambda: ["flatpanel", "cr_plate", "portable", "legacy"],
        description="scanner names from the catalogue, in domain-id order",
    )
    ood_scanner: str = Field("legacy", description="held out entirely: only in ood_train / ood_test")
    prevalence: list[float] = Field(
        default_factory=lambda: [0.65, 0.25, 0.10],
        description="share of each in-distribution scanner (scanners minus ood_scanner, in order)",
    )
    n_train: int = Field(3600, ge=0)
    n_val: int = Field(600, ge=0)
    n_test: int = Field(1500, ge=0)
    n_ood_train: int = Field(800, ge=0)
    n_ood_test: int = Field(800, ge=0)
    max_images_per_patient: int = Field(2, ge=1, description="follow-up images share the patient's anatomy")
    frames: bool = Field(True, description="burn each scanner's collimation border and marker into its images")
    renoised_counterfactuals: bool = Field(
        False,
        description="also write true_cf_renoised: the true scanner counterfactuals with an independent acquisition "
        "noise per (image, scanner), the method oracle-renoised's (cfcl run sets it when that method is listed)",
    )
    scanner_overrides: dict[str, dict[str, bool | float | int | str | list[float]]] = Field(
        default_factory=dict,
        description="changes to the catalogue's scanner parameters, e.g. {portable: {gain: -1.0, offset: 1.0}}",
    )
    disease: DiseaseConfig = Field(default_factory=DiseaseConfig)
    sex: SexConfig = Field(default_factory=SexConfig)

    @field_validator("scanners")
    @classmethod
    def _known_scanners(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SCANNERS]
        if unknown:
            raise ValueError(f"unknown scanner(s) {unknown}; the catalogue has {sorted(SCANNERS)}")
        if len(set(value)) != len(value) or len(value) < 2:
            raise ValueError("needs at least two distinct scanner names")
        return value

    @field_validator("ood_scanner")
    @classmethod
    def _ood_in_scanners(cls, value: str, info: ValidationInfo) -> str:
        if value not in info.data.get("scanners", [value]):
            raise ValueError(f"{value!r} is not one of scanners {info.data['scanners']}")
        return value

    @field_validator("prevalence")
    @classmethod
    def _prevalence_sums_to_one(cls, value: list[float], info: ValidationInfo) -> list[float]:
        id_scanners = [s for s in info.data.get("scanners", []) if s != info.data.get("ood_scanner")]
        if id_scanners and len(value) != len(id_scanners):
            raise ValueError(f"needs {len(id_scanners)} values, one per in-distribution scanner {id_scanners}")
        if any(p < 0 for p in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError(f"values must be >= 0 and sum to 1 (they sum to {sum(value):g})")
        return value

    @field_validator("scanner_overrides")
    @classmethod
    def _known_overrides(cls, value: dict, info: ValidationInfo) -> dict:
        fields = {f.name for f in dataclasses.fields(Scanner)} - {"name", "description"}
        for name, changes in value.items():
            if name not in info.data.get("scanners", []):
                raise ValueError(f"{name!r} is not one of scanners {info.data.get('scanners')}")
            unknown = sorted(set(changes) - fields)
            if unknown:
                raise ValueError(f"{name}: unknown scanner parameter(s) {unknown}; allowed {sorted(fields)}")
            try:
                dataclasses.replace(SCANNERS[name], **as_tuples(changes))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        return value

    @field_validator("disease")
    @classmethod
    def _confounded_scanners_known(cls, value: DiseaseConfig, info: ValidationInfo) -> DiseaseConfig:
        unknown = sorted(set(value.acquisition_confounding) - set(info.data.get("scanners", [])))
        if unknown:
            raise ValueError(f"acquisition_confounding names {unknown}, not among scanners {info.data.get('scanners')}")
        return value

    @property
    def acquisition(self) -> list[Scanner]:
        """The scanners in domain-id order, with ``scanner_overrides`` applied."""
        return [dataclasses.replace(SCANNERS[s], **as_tuples(self.scanner_overrides.get(s, {}))) for s in self.scanners]

    @property
    def id_scanners(self) -> list[str]:
        return [s for s in self.scanners if s != self.ood_scanner]

    @property
    def ood_domain(self) -> int:
        return self.scanners.index(self.ood_scanner)
