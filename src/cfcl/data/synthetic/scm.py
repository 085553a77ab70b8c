"""The structural causal model assembled: cohort sampling, the physical image, acquisition.

``sample_cohort`` draws every exogenous and endogenous variable except the per-pixel fields;
``render_physical`` turns a slice of the cohort into attenuation images; ``acquire_all``
images them under every scanner with the same noise ``u`` (the true counterfactuals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfcl.data.synthetic.anatomy import apply_exposure, render_anatomy, sample_patients, sample_pose
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.disease import disease_probability, render_lesions, sample_lesions
from cfcl.data.synthetic.scanners import Scanner, acquire, to_uint8

ID_SPLITS = ("train", "val", "test")
OOD_SPLITS = ("ood_train", "ood_test")
LABELS = ["normal", "opacity"]


def split_sizes(cfg: SynthConfig) -> dict[str, int]:
    return {
        "train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test,
        "ood_train": cfg.n_ood_train, "ood_test": cfg.n_ood_test,
    }


def sample_cohort(cfg: SynthConfig) -> pd.DataFrame:
    """One row per image: ids, split, scanner (domain), sex, age, label and every SCM parameter."""
    rng = np.random.default_rng([cfg.seed, 1])
    id_domains = np.array([cfg.scanners.index(s) for s in cfg.id_scanners])
    parts, first_patient = [], 0
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
    images = pd.concat(parts, ignore_index=True)
    n_patients = first_patient
    sex = (rng.random(n_patients) < 0.5).astype(int)
    age = np.clip(np.round(rng.normal(55.0, 16.0, n_patients)), 18, 95).astype(int)
    patients = sample_patients(rng, sex, age)
    patients.insert(0, "age", age)
    patients.insert(0, "sex", np.where(sex == 1, "M", "F"))
    images = pd.concat([images, patients.iloc[images["patient"]].reset_index(drop=True)], axis=1)
    images = pd.concat([images, sample_pose(rng, len(images))], axis=1)
    p_ill = disease_probability(images["age"].to_numpy(float), images["domain"].to_numpy(), len(cfg.scanners), cfg.disease)
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


def render_physical(rows: pd.DataFrame, size: int, fields: dict[str, np.ndarray], max_patches: int):
    """Attenuation images with their lesions, and the lesion masks (both ``[N, H, W]``)."""
    anatomy, lungs, coords = render_anatomy(rows, size, fields["texture"])
    lesion, mask = render_lesions(rows, coords, lungs, fields["mottle"], max_patches)
    return apply_exposure(rows, anatomy + lesion), mask


def acquire_all(phys: np.ndarray, u: np.ndarray, scanners: list[Scanner], frame: bool = True) -> np.ndarray:
    """uint8 ``[N, D, H, W]``: every physical image acquired by every scanner with the same ``u``."""
    return np.stack([to_uint8(acquire(phys, u, scanner, frame)) for scanner in scanners], axis=1)
