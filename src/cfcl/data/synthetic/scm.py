"""The structural causal model assembled: cohort sampling, the physical image, acquisition.

``sample_cohort`` draws every exogenous and endogenous variable except the per-pixel fields;
``render_physical`` turns a slice of the cohort into attenuation images; ``acquire_all``
images them under every scanner with the same noise ``u`` (the true scanner counterfactuals;
with ``renoised_noise``, one independent ``u`` per scanner instead: the renoised control);
``other_sex`` gives the same images' patients with the other sex, everything else the same
(the true sex counterfactuals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfcl.data.synthetic.anatomy import (
    ANATOMY_TRAITS,
    apply_exposure,
    patient_anatomy,
    render_anatomy,
    sample_patient_noise,
    sample_pose,
)
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.disease import acquisition_log_odds, disease_probability, render_lesions, sample_lesions
from cfcl.data.synthetic.scanners import Scanner, acquire, to_uint8

ID_SPLITS = ("train", "val", "test")
OOD_SPLITS = ("ood_train", "ood_test")
LABELS = ["normal", "opacity"]
SEXES = ["F", "M"]  # codes of the sex parent, as a generator conditioned on sex sorts them


def split_sizes(cfg: SynthConfig) -> dict[str, int]:
    return {
        "train": cfg.n_train,
        "val": cfg.n_val,
        "test": cfg.n_test,
        "ood_train": cfg.n_ood_train,
        "ood_test": cfg.n_ood_test,
    }


def sample_cohort(cfg: SynthConfig) -> pd.DataFrame:
    """One row per image: ids, split, scanner (domain), sex, age, label and every SCM parameter."""
    rng = np.random.default_rng([cfg.seed, 1])
    id_domains = np.array([cfg.scanners.index(s) for s in cfg.id_scanners])
    parts, first_patient, female_share = [], 0, []
    for split, n in split_sizes(cfg).items():
        per_patient = rng.integers(1, cfg.max_images_per_patient + 1, max(n, 1))
        n_patients = int(np.searchsorted(np.cumsum(per_patient), n) + 1) if n else 0
        patient = np.repeat(np.arange(n_patients), per_patient[:n_patients])[:n]
        if split in OOD_SPLITS:
            domain = np.full(n, cfg.ood_domain)
        else:
            domain = id_domains[rng.choice(len(id_domains), n, p=cfg.prevalence)]
        parts.append(pd.DataFrame({"split": split, "patient": first_patient + patient, "domain": domain}))
        first_patient += n_patients
        female_share += [cfg.sex.female(split)] * n_patients
    images = pd.concat(parts, ignore_index=True)
    n_patients = first_patient
    sex = (rng.random(n_patients) < 1.0 - np.asarray(female_share)).astype(int)
    age = np.clip(np.round(rng.normal(55.0, 16.0, n_patients)), 18, 95).astype(int)
    noise = sample_patient_noise(rng, np.random.default_rng([cfg.seed, 3]), n_patients)
    patients = pd.concat([patient_anatomy(sex, age, noise, cfg.sex.breast_shadow), noise], axis=1)
    patients.insert(0, "age", age)
    patients.insert(0, "sex", np.asarray(SEXES)[sex])
    images = pd.concat([images, patients.iloc[images["patient"]].reset_index(drop=True)], axis=1)
    images = pd.concat([images, sample_pose(rng, len(images))], axis=1)
    domain = images["domain"].to_numpy()
    shortcut = acquisition_log_odds(images["split"].to_numpy(), domain, cfg.scanners, cfg.disease)
    p_ill = disease_probability(images["age"].to_numpy(float), domain, len(cfg.scanners), cfg.disease, shortcut)
    label = (rng.random(len(images)) < p_ill).astype(int)
    images.insert(3, "label", label)
    images = pd.concat([images, sample_lesions(rng, label, cfg.disease)], axis=1)
    images.insert(0, "image_id", [f"synth-{i:06d}" for i in range(len(images))])
    images.insert(1, "patient_id", [f"patient-{p:06d}" for p in images["patient"]])
    return images.drop(columns="patient")


def exogenous_fields(cfg: SynthConfig, start: int, n: int) -> dict[str, np.ndarray]:
    """Per-pixel exogenous noise of images ``start .. start+n``: vessel texture, lesion mottle, u.

    Drawn from a stream keyed by ``start`` so any chunk can be (re)made on its own.
    """
    rng = np.random.default_rng([cfg.seed, 2, start])
    shape = (n, cfg.image_size, cfg.image_size)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name in ("texture", "mottle", "u")}


def renoised_noise(cfg: SynthConfig, start: int, n: int) -> np.ndarray:
    """An independent acquisition noise ``u`` ``[N, D, H, W]`` per image ``start .. start+n`` and scanner,
    from its own stream keyed by ``start``: the true counterfactuals' noise redrawn per counterfactual."""
    rng = np.random.default_rng([cfg.seed, 4, start])
    return rng.standard_normal((n, len(cfg.scanners), cfg.image_size, cfg.image_size), dtype=np.float32)


def other_sex(rows: pd.DataFrame, cfg: SynthConfig) -> pd.DataFrame:
    """The same images with the patients' other sex: the anatomy recomputed from the same noise and age."""
    male = (rows["sex"] == "F").to_numpy().astype(int)
    anatomy = patient_anatomy(male, rows["age"].to_numpy(), rows.reset_index(drop=True), cfg.sex.breast_shadow)
    return rows.assign(sex=np.asarray(SEXES)[male], **{t: anatomy[t].to_numpy() for t in ANATOMY_TRAITS})


def render_physical(rows: pd.DataFrame, size: int, fields: dict[str, np.ndarray], cfg: SynthConfig):
    """Attenuation images with their lesions, and the lesion masks (both ``[N, H, W]``).

    Breast tissue hides part of a lesion beneath it: ``sex.breast_masking`` of its contrast
    where the tissue is as dense as ``sex.breast_shadow``."""
    anatomy, lungs, coords, breast = render_anatomy(rows, size, fields["texture"])
    lesion, mask = render_lesions(rows, coords, lungs, fields["mottle"], cfg.disease.max_patches)
    if cfg.sex.breast_shadow > 0 and cfg.sex.breast_masking > 0:
        lesion = lesion * np.clip(1.0 - cfg.sex.breast_masking * breast / cfg.sex.breast_shadow, 0.0, 1.0)
    return apply_exposure(rows, anatomy + lesion), mask


def acquire_all(phys: np.ndarray, u: np.ndarray, scanners: list[Scanner], frame: bool = True) -> np.ndarray:
    """uint8 ``[N, D, H, W]``: every physical image acquired by every scanner with the same ``u`` ``[N, H, W]``,
    or with its own ``u[:, d]`` when ``u`` is ``[N, D, H, W]``."""
    noise = [u[:, d] if u.ndim == 4 else u for d in range(len(scanners))]
    return np.stack([to_uint8(acquire(phys, n, scanner, frame)) for n, scanner in zip(noise, scanners)], axis=1)


def acquire_own(
    phys: np.ndarray, u: np.ndarray, domains: np.ndarray, scanners: list[Scanner], frame: bool = True
) -> np.ndarray:
    """uint8 ``[N, H, W]``: each physical image acquired by its own scanner ``domains[i]``."""
    out = np.empty(phys.shape, dtype=np.uint8)
    for d in np.unique(domains):
        rows = np.flatnonzero(domains == d)
        out[rows] = to_uint8(acquire(phys[rows], u[rows], scanners[d], frame))
    return out
