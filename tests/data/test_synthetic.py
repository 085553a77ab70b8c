"""The synthetic benchmark: config validation, the SCM's mechanisms, the stores it writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cfcl.config import build_config
from cfcl.data.store import ImageStore
from cfcl.data.synthetic.anatomy import ANATOMY_TRAITS, patient_anatomy, sample_patient_noise
from cfcl.data.synthetic.config import DiseaseConfig, SynthConfig
from cfcl.data.synthetic.disease import acquisition_log_odds, disease_probability
from cfcl.data.synthetic.generate import CHUNK, run
from cfcl.data.synthetic.scanners import (
    SCANNERS,
    acquire,
    change_resolution,
    display_curve,
    dust_specks,
    frame_masks,
    glyph_mask,
    grid_lines,
    heel_gradient,
    local_contrast,
    unit_noise,
)
from cfcl.data.synthetic.scm import acquire_all, exogenous_fields, render_physical, sample_cohort
from cfcl.errors import ConfigError, StoreError

TINY = {"image_size": 32, "n_train": 40, "n_val": 10, "n_test": 20, "n_ood_train": 10, "n_ood_test": 10}


def tiny(**changes) -> SynthConfig:
    return SynthConfig(**{**TINY, **changes})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    run(tiny(), out)
    return out


# ---- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, named",
    [
        ("prevalence=[0.5, 0.3, 0.1]", "prevalence"),
        ("n_train=-5", "n_train"),
        ("no_such_key=1", "no_such_key"),
        ("disease.colour=3", "disease.colour"),
        ("scanners=[flatpanel, nonexistent]", "scanners"),
        ("ood_scanner=nowhere", "ood_scanner"),
        ("prevalence=[0.5, 0.5]", "prevalence"),
        ("disease.size_max=0.01", "disease.size_max"),
        ("scanner_overrides={portable: {colour: 1}}", "scanner_overrides"),
        ("scanner_overrides={nowhere: {gain: 1}}", "scanner_overrides"),
        ("scanner_overrides={portable: {local_contrast: [1.0], local_contrast_sigma: []}}", "scanner_overrides"),
        ("scanner_overrides={portable: {local_contrast: [-1.0], local_contrast_sigma: [4.0]}}", "scanner_overrides"),
        ("scanner_overrides={portable: {grid_depth: 1.0}}", "scanner_overrides"),
        ("disease.acquisition_confounding={nowhere: 1.0}", "disease"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_key(override, named):
    with pytest.raises(ConfigError) as err:
        build_config(SynthConfig, overrides=[override])
    message = str(err.value)
    assert named in message and "\n" not in message


def test_default_config_matches_the_shipped_preset():
    from cfcl.presets import resolve_config_path

    assert build_config(SynthConfig, resolve_config_path("synth")) == SynthConfig()


# ---- mechanisms ---------------------------------------------------------------------------


def test_response_curve_matches_hand_computation_without_blur_or_noise():
    bare = dataclasses.replace(
        SCANNERS["flatpanel"],
        psf_sigma=0.0,
        downsample=1,
        sharpen_amount=0.0,
        noise_std=0.0,
        gamma=2.0,
        gain=0.5,
        offset=0.1,
        border=(0.0, 0.0, 0.0, 0.0),
        marker_at=(0.0, 0.0),
    )
    phys = np.full((1, 16, 16), 0.6, dtype=np.float32)
    out = acquire(phys, np.zeros_like(phys), bare)
    _, marker = frame_masks(bare, 16, 16)
    assert np.allclose(out[0][~marker], 0.1 + 0.5 * 0.6**2)
    assert np.all(out[0][marker] == 1.0)


def test_without_frames_no_border_or_marker_is_burned_in():
    scanner = dataclasses.replace(SCANNERS["portable"], psf_sigma=0.0, downsample=1, sharpen_amount=0.0, noise_std=0.0)
    phys = np.full((1, 64, 64), 0.5, dtype=np.float32)
    framed, bare = acquire(phys, np.zeros_like(phys), scanner), acquire(phys, np.zeros_like(phys), scanner, frame=False)
    outside, marker = frame_masks(scanner, 64, 64)
    assert np.allclose(bare, bare[0, 32, 32]) and np.allclose(framed[0][~(outside | marker)], bare[0, 32, 32])
    assert np.all(framed[0][marker] == 1.0) and not np.allclose(framed, bare)


def test_scanner_overrides_change_only_the_named_parameters():
    cfg = tiny(scanner_overrides={"portable": {"gain": -1.0, "offset": 1.0, "border": [0.0, 0.0, 0.0, 0.0]}})
    portable = cfg.acquisition[cfg.scanners.index("portable")]
    assert (portable.gain, portable.offset, portable.border) == (-1.0, 1.0, (0.0, 0.0, 0.0, 0.0))
    assert (
        dataclasses.replace(
            portable,
            gain=SCANNERS["portable"].gain,
            offset=SCANNERS["portable"].offset,
            border=SCANNERS["portable"].border,
        )
        == SCANNERS["portable"]
    )
    assert cfg.acquisition[0] == SCANNERS[cfg.scanners[0]]


def test_local_contrast_multiplies_each_frequency_by_its_response():
    """A cosine across the image (whole periods, so the reflecting border continues it) is an eigen-image of
    the Gaussian blur: the processing multiplies it by 1 + sum_k a_k (1 - exp(-2 pi^2 sigma_k^2 f^2))."""
    n, periods = 64, 4
    wave = np.cos(2 * np.pi * periods * (np.arange(n) + 0.5) / n).astype(np.float32)
    x = np.broadcast_to(wave, (1, n, n)).copy()
    amounts, sigmas = (-0.5, 1.5), (6.0, 2.0)
    frequency = periods / n
    gain = 1 + sum(a * (1 - np.exp(-2 * np.pi**2 * s**2 * frequency**2)) for a, s in zip(amounts, sigmas))
    assert np.allclose(local_contrast(x, amounts, sigmas)[:, 8:-8, 8:-8], gain * x[:, 8:-8, 8:-8], atol=0.01)
    flat = np.full((1, 16, 16), 0.3, dtype=np.float32)
    assert np.allclose(local_contrast(flat, amounts, sigmas), 0.3)


def test_heel_gradient_and_grid_lines_match_hand_computation():
    # pixel centres of a 4-px axis sit at -0.75, -0.25, 0.25, 0.75 of the half-field
    assert np.allclose(heel_gradient(2, 4, 0.2, 0.0), [[0.85, 0.95, 1.05, 1.15]] * 2)
    assert np.allclose(heel_gradient(4, 2, 0.2, 90.0), np.array([[0.85], [0.95], [1.05], [1.15]]) * np.ones((1, 2)))
    assert np.allclose(heel_gradient(4, 4, 0.2, 180.0)[0], [1.15, 1.05, 0.95, 0.85])
    # 8 px: s = j - 3.5 px across the lines; 1 - 0.2 * (1 + cos(2 pi s / 4)) / 2
    lines = grid_lines(3, 8, 0.2, 4.0, 0.0)
    expected = [1 - 0.1 * (1 + np.cos(2 * np.pi * (j - 3.5) / 4)) for j in range(8)]
    assert np.allclose(lines, [expected] * 3)
    assert lines.mean() == pytest.approx(0.9) and lines.min() == pytest.approx(1 - 0.1 * (1 + np.cos(np.pi / 4)))


def test_display_curve_is_a_monotone_log_and_optionally_inverted():
    x = np.array([0.0, 0.5, 1.0, 1.2], dtype=np.float32)
    assert np.allclose(display_curve(x, 9.0, False), [0.0, np.log(5.5) / np.log(10.0), 1.0, 1.0])
    assert np.allclose(display_curve(x, 0.0, True), [1.0, 0.5, 0.0, 0.0])
    assert np.allclose(display_curve(x, 9.0, True), 1.0 - display_curve(x, 9.0, False))


LEVERS = {  # one of each lever, as a candidate design sets them
    "cr_plate": {
        "local_contrast": [-0.5, 1.0],
        "local_contrast_sigma": [12.0, 4.0],
        "display_log": 3.0,
        "heel": 0.2,
        "heel_angle": 90.0,
    },
    "portable": {
        "local_contrast": [1.5],
        "local_contrast_sigma": [2.0],
        "display_inverted": True,
        "grid_depth": 0.15,
        "grid_period": 2.5,
        "dust": 0.4,
        "dust_size": 1.5,
        "dust_level": 2.0,
    },
}


def test_levers_act_as_documented_in_the_acquisition_chain():
    """Heel and grid before the response curve and noise; flat field, local contrast and display after the noise
    (on it too)."""
    bare = {
        "psf_sigma": 0.0,
        "downsample": 1,
        "sharpen_amount": 0.0,
        "noise_sigma": 0.0,
        "gamma": 1.0,
        "gain": 1.0,
        "offset": 0.0,
    }
    base = dataclasses.replace(SCANNERS["flatpanel"], **bare, noise_std=0.05)
    rng = np.random.default_rng(0)
    phys = rng.uniform(0.2, 0.6, (2, 16, 16)).astype(np.float32)
    u = rng.standard_normal(phys.shape).astype(np.float32)
    lit = dataclasses.replace(base, heel=0.2, grid_depth=0.1, grid_period=4.0)
    field = heel_gradient(16, 16, 0.2, 0.0) * grid_lines(16, 16, 0.1, 4.0 * 16 / 64, 0.0)
    signal = phys * field
    assert np.allclose(
        acquire(phys, u, lit, frame=False),
        np.clip(signal + 0.05 * np.sqrt(np.clip(signal, 0.05, 1)) * u, 0, 1),
        atol=1e-6,
    )
    detected = phys + 0.05 * np.sqrt(np.clip(phys, 0.05, 1)) * u
    flat_field = dataclasses.replace(base, flat_field=0.3, flat_field_angle=90.0)
    expected = np.clip(detected * heel_gradient(16, 16, 0.3, 90.0), 0, 1)
    assert np.allclose(acquire(phys, u, flat_field, frame=False), expected, atol=1e-6)
    dusty = dataclasses.replace(base, dust=0.5, dust_size=4.0, local_contrast=(1.0,), local_contrast_sigma=(8.0,))
    specks = dust_specks(u, 4.0 * 16 / 64, 3.0)
    expected = np.clip(local_contrast(detected + 0.5 * specks, (1.0,), (8.0 * 16 / 64,)), 0, 1)
    assert np.allclose(acquire(phys, u, dusty, frame=False), expected, atol=1e-6)
    processed = dataclasses.replace(
        base, local_contrast=(1.0,), local_contrast_sigma=(8.0,), display_log=4.0, display_inverted=True
    )
    expected = 1 - display_curve(local_contrast(detected, (1.0,), (8.0 * 16 / 64,)), 4.0, False)
    assert np.allclose(acquire(phys, u, processed, frame=False), expected, atol=1e-6)


def test_true_counterfactuals_stay_exact_with_the_levers_on(tmp_path):
    run(tiny(scanner_overrides=LEVERS, frames=False), tmp_path / "data")
    store, cf = ImageStore.open(tmp_path / "data"), ImageStore.open(tmp_path / "data" / "true_cf")
    n, n_dom = len(store), len(store.domains)
    own = np.arange(n) * n_dom + store.meta["domain"].to_numpy()
    assert np.array_equal(cf.images[own], store.images[:])
    plain = tiny(frames=False)
    fields = exogenous_fields(plain, 0, n)
    phys, _ = render_physical(sample_cohort(plain), 32, fields, plain)
    images = cf.images[:].reshape(n, n_dom, 32, 32)
    for d, scanner in enumerate(tiny(scanner_overrides=LEVERS).acquisition):
        expected = np.round(np.clip(acquire(phys, fields["u"], scanner, frame=False), 0, 1) * 255).astype(np.uint8)
        assert np.array_equal(images[:, d], expected), scanner.name
    portable = plain.scanners.index("portable")
    assert (
        np.corrcoef(images[:, 0].ravel().astype(float), images[:, portable].ravel().astype(float))[0, 1] < -0.5
    )  # inverted


def test_dust_specks_sit_where_the_mirrored_noise_peaks():
    """One spike of noise makes one speck at the mirrored pixel, as tall as its smoothed height allows; a field
    below the level makes none."""
    # Smoothed to unit variance, a spike of height A peaks at A * sqrt(4 pi sigma^2) * g0^2, g0 the centre weight
    # of scipy's 1-D kernel (radius 3 sigma, rounded); A is chosen so that the peak lies 0.4 SD above the level.
    kernel = np.exp(-(np.arange(-5.0, 6.0) ** 2) / (2 * 1.5**2))
    u = np.zeros((1, 32, 32), dtype=np.float32)
    u[0, 5, 9] = 3.4 / (np.sqrt(4 * np.pi * 1.5**2) / kernel.sum() ** 2)
    specks = dust_specks(u, 1.5, 3.0)
    assert np.unravel_index(np.argmax(specks[0]), (32, 32)) == (26, 22)
    assert specks[0, 26, 22] == pytest.approx(0.8, abs=1e-4)
    assert specks[0, :16, :].max() == 0.0  # nothing near the spike itself
    assert dust_specks(np.full((1, 32, 32), 0.1, dtype=np.float32), 1.5, 3.0).max() == 0.0
    with pytest.raises(ValueError, match="dust"):
        dataclasses.replace(SCANNERS["portable"], dust=-0.1)


def test_correlated_noise_keeps_unit_variance():
    u = np.random.default_rng(0).standard_normal((8, 64, 64)).astype(np.float32)
    assert np.std(unit_noise(u, 1.5)) == pytest.approx(1.0, abs=0.1)
    assert np.std(unit_noise(u, 0.0)) == pytest.approx(np.std(u))


def test_coarser_detector_averages_blocks():
    x = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    y = change_resolution(x, 2)
    assert y.shape == x.shape
    assert y.mean() == pytest.approx(x.mean(), abs=0.02)
    assert np.abs(np.diff(y, axis=2)).mean() < np.abs(np.diff(x, axis=2)).mean() / 2


def test_border_and_marker_sit_where_the_scanner_says():
    scanner = SCANNERS["portable"]
    outside, marker = frame_masks(scanner, 64, 64)
    assert outside[0].all() and outside[:, 0].all() and not outside[32, 32]
    assert marker.sum() == glyph_mask(scanner.marker, 64).sum()


def test_scanners_change_the_image_but_share_the_noise():
    cfg = tiny()
    rows = sample_cohort(cfg).iloc[:4]
    fields = exogenous_fields(cfg, 0, 4)
    phys, _ = render_physical(rows, 32, fields, cfg)
    images = acquire_all(phys, fields["u"], cfg.acquisition)
    assert images.shape == (4, len(cfg.scanners), 32, 32) and images.dtype == np.uint8
    for a in range(len(cfg.scanners)):
        for b in range(a + 1, len(cfg.scanners)):
            assert np.abs(images[:, a].astype(int) - images[:, b].astype(int)).mean() > 5
    again = acquire_all(phys, fields["u"], cfg.acquisition)
    assert np.array_equal(images, again)
    # the noise each scanner adds (image minus its noise-free image) is the image's own u, for every scanner
    noise = images.astype(float) - acquire_all(phys, np.zeros_like(fields["u"]), cfg.acquisition)
    for a in range(len(cfg.scanners)):
        assert np.corrcoef(noise[:, a].ravel(), fields["u"].ravel())[0, 1] > 0.7
        for b in range(a + 1, len(cfg.scanners)):
            assert np.corrcoef(noise[:, a].ravel(), noise[:, b].ravel())[0, 1] > 0.8


def test_age_and_sex_cause_anatomy():
    rng = np.random.default_rng(0)
    n = 4000
    sex, age = rng.integers(0, 2, n), rng.uniform(20, 90, n)
    anatomy = patient_anatomy(sex, age, sample_patient_noise(rng, rng, n), breast_shadow=0.05)
    assert anatomy["body_w"][sex == 1].mean() > anatomy["body_w"][sex == 0].mean() + 0.03
    assert (anatomy["breast"][sex == 1] == 0).all() and (anatomy["breast"][sex == 0] > 0).all()
    assert np.corrcoef(age, anatomy["heart_w"])[0, 1] > 0.3
    assert tuple(anatomy.columns) == ANATOMY_TRAITS


def test_disease_depends_on_age_and_only_optionally_on_scanner():
    age, domain = np.array([30.0, 80.0, 80.0]), np.array([0, 0, 3])
    plain = disease_probability(age, domain, 4, DiseaseConfig())
    assert plain[1] > plain[0] and plain[1] == plain[2]
    confounded = disease_probability(age, domain, 4, DiseaseConfig(scanner_confounding=1.0))
    assert confounded[2] > confounded[1]


def test_acquisition_confounding_makes_only_training_images_of_that_scanner_more_often_ill():
    split, domain = np.array(["train", "train", "val", "test", "ood_train"]), np.array([2, 0, 2, 2, 3])
    cfg = DiseaseConfig(acquisition_confounding={"portable": 1.5, "legacy": -1.0})
    scanners = ["flatpanel", "cr_plate", "portable", "legacy"]
    assert np.array_equal(acquisition_log_odds(split, domain, scanners, cfg), [1.5, 0.0, 0.0, 0.0, 0.0])
    plain = tiny(n_train=2000, n_val=400, n_test=400)
    confounded = tiny(n_train=2000, n_val=400, n_test=400, disease={"acquisition_confounding": {"portable": 2.0}})
    a, b = sample_cohort(plain), sample_cohort(confounded)
    portable_train = ((a["split"] == "train") & (a["domain"] == plain.scanners.index("portable"))).to_numpy()
    # the same uniform draws decide the labels: only the confounded images change, and only to ill
    assert np.array_equal(a["label"][~portable_train], b["label"][~portable_train])
    assert (b["label"][portable_train] >= a["label"][portable_train]).all()
    assert b["label"][portable_train].mean() > a["label"][portable_train].mean() + 0.2


def test_lesions_lie_inside_the_lung_fields():
    cfg = tiny(disease={"prevalence": 0.9})
    rows = sample_cohort(cfg).iloc[:32]
    fields = exogenous_fields(cfg, 0, 32)
    from cfcl.data.synthetic.anatomy import render_anatomy
    from cfcl.data.synthetic.disease import render_lesions

    _, lungs, coords, _ = render_anatomy(rows, 32, fields["texture"])
    lesion, mask = render_lesions(rows, coords, lungs, fields["mottle"], cfg.disease.max_patches)
    ill = rows["label"].to_numpy() == 1
    assert mask[ill].any(axis=(1, 2)).mean() > 0.8 and not mask[~ill].any()
    assert np.all(lesion <= cfg.disease.contrast_max * 1.41 * lungs + 1e-6)
    assert lungs[mask].min() > 0.25


def test_cohort_prevalence_and_patient_level_splits():
    cfg = SynthConfig(n_train=6000, n_val=500, n_test=500, n_ood_train=300, n_ood_test=300)
    cohort = sample_cohort(cfg)
    train = cohort[cohort["split"] == "train"]
    shares = train["domain"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.allclose(shares, cfg.prevalence, atol=0.03)
    assert set(cohort.loc[cohort["split"].isin(["ood_train", "ood_test"]), "domain"]) == {cfg.ood_domain}
    assert cfg.ood_domain not in set(cohort.loc[cohort["split"].isin(["train", "val", "test"]), "domain"])
    assert cohort.groupby("patient_id")["split"].nunique().max() == 1
    assert cohort.groupby("patient_id").size().max() == cfg.max_images_per_patient


# ---- the stage ----------------------------------------------------------------------------


def test_store_layout_and_contract(generated):
    store = ImageStore.open(generated)
    cfg = tiny()
    assert len(store) == sum(TINY[k] for k in TINY if k.startswith("n_"))
    assert store.images.shape[1:] == (32, 32)
    assert store.domains == cfg.scanners and store.labels == ["normal", "opacity"]
    assert store.info["ood_domains"] == [cfg.ood_domain] and store.info["synthetic"] is True
    for column in ("index", "image_id", "patient_id", "split", "domain", "label", "sex", "age"):
        assert column in store.meta.columns
    # the covariates the SCM drew, stored for the covariates-only baseline: the cohort's own values
    assert store.info["covariates"] == ["sex", "age", *ANATOMY_TRAITS]
    cohort = sample_cohort(cfg)
    assert (store.meta["sex"] == cohort["sex"]).all() and (store.meta["age"] == cohort["age"]).all()
    assert np.allclose(store.meta[list(ANATOMY_TRAITS)], cohort[list(ANATOMY_TRAITS)], atol=1e-5)
    counts = store.meta["split"].value_counts()
    assert counts["train"] == 40 and counts["ood_test"] == 10
    for name in ("config.yaml", "manifest.json", "overview.png"):
        assert (generated / name).is_file()
    assert json.loads((generated / "manifest.json").read_text())["status"] == "complete"


def test_true_counterfactuals_cover_every_image_and_scanner(generated):
    store = ImageStore.open(generated)
    cf = ImageStore.open(generated / "true_cf")
    n, n_dom = len(store), len(store.domains)
    assert cf.kind == "counterfactuals" and len(cf) == n * n_dom
    assert cf.info["source_store"] == store.content_hash
    assert np.array_equal(cf.meta["source_index"], np.repeat(np.arange(n), n_dom))
    assert np.array_equal(cf.meta["target_domain"], np.tile(np.arange(n_dom), n))
    assert np.array_equal(cf.meta["domain"], cf.meta["target_domain"])
    assert np.array_equal(cf.counterfactual_table(n, n_dom), np.arange(n * n_dom).reshape(n, n_dom))
    own = np.arange(n) * n_dom + store.meta["domain"].to_numpy()
    assert np.array_equal(cf.images[own], store.images[:])
    other = np.arange(n) * n_dom + (store.meta["domain"].to_numpy() + 1) % n_dom
    assert not np.array_equal(cf.images[other], store.images[:])


def test_content_is_invariant_across_true_counterfactuals(tmp_path):
    """Every counterfactual of an image is the one physical image (anatomy, lesion) drawn once, with its one
    noise field u, under each scanner. Scanners are reduced to their response curve and noise so the
    expected pixels can be written by hand here, independently of the acquisition code."""
    pointwise = {"psf_sigma": 0.0, "downsample": 1, "sharpen_amount": 0.0, "noise_sigma": 0.0}
    cfg = tiny(frames=False, scanner_overrides={name: pointwise for name in tiny().scanners})
    run(cfg, tmp_path / "data")
    store = ImageStore.open(tmp_path / "data")
    cf = ImageStore.open(tmp_path / "data" / "true_cf")
    source = cf.meta["source_index"].to_numpy()
    for column in ("label", "split", "lesion_area"):
        assert np.array_equal(cf.meta[column].to_numpy(), store.meta[column].to_numpy()[source])
    cohort = sample_cohort(cfg)
    assert len(cohort) <= CHUNK  # one chunk: its fields are the whole store's
    fields = exogenous_fields(cfg, 0, len(cohort))
    phys, mask = render_physical(cohort, 32, fields, cfg)
    ill = store.meta["label"].to_numpy() == 1
    assert ill.any() and mask[ill].any(axis=(1, 2)).all() and not mask[~ill].any()
    assert np.allclose(mask.mean(axis=(1, 2)), store.meta["lesion_area"].to_numpy(), atol=1e-5)
    images = cf.images[:].reshape(len(store), len(cfg.scanners), 32, 32).astype(int)
    for d, scanner in enumerate(cfg.acquisition):
        response = np.clip(phys, 0, 1).astype(np.float32) ** np.float32(scanner.gamma)
        x = np.float32(scanner.offset) + np.float32(scanner.gain) * response
        x = x + np.float32(scanner.noise_std) * np.sqrt(np.clip(x, 0.05, 1.0)) * fields["u"]
        expected = np.round(np.clip(x, 0, 1) * 255).astype(int)
        assert np.abs(images[:, d] - expected).max() <= 1, scanner.name


def test_generation_is_deterministic(generated, tmp_path):
    run(tiny(), tmp_path / "again")
    for name in ("images.npy", "metadata.csv", "true_cf/images.npy", "true_cf/metadata.csv", "true_cf_sex/images.npy"):
        assert (generated / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert ImageStore.open(generated).content_hash == ImageStore.open(tmp_path / "again").content_hash
    run(tiny(seed=1), tmp_path / "other")
    assert (tmp_path / "other" / "images.npy").read_bytes() != (generated / "images.npy").read_bytes()


def test_rerun_is_skipped_and_another_config_needs_force(tmp_path, capsys):
    out = tmp_path / "data"
    run(tiny(), out)
    printed = capsys.readouterr().out
    assert "train" in printed and "ood_test" in printed and "opacity" in printed
    stamp = (out / "images.npy").stat().st_mtime_ns
    run(tiny(), out)
    assert "up to date" in capsys.readouterr().out
    assert (out / "images.npy").stat().st_mtime_ns == stamp
    with pytest.raises(StoreError, match="--force"):
        run(tiny(n_val=12), out)
    run(tiny(n_val=12), out, force=True)
    assert (ImageStore.open(out).meta["split"] == "val").sum() == 12
    assert pd.read_csv(out / "true_cf" / "metadata.csv").shape[0] == 4 * len(ImageStore.open(out))


# ---- sex ------------------------------------------------------------------------------------

SEX_FREE_TRAITS = [
    "lung_cx",
    "lung_top",
    "lung_depth",
    "dome_h",
    "heart_h",
    "rib_spacing",
    "rib_tilt",
    "rib_phase",
    "bone_density",
    "vessel_amp",
]
SEX_CAUSED_TRAITS = ["body_w", "lung_w", "lung_h", "heart_w", "breast"]


def test_sex_share_per_split_changes_only_who_is_drawn():
    cohort = sample_cohort(
        SynthConfig(
            n_train=3000, n_val=100, n_test=100, n_ood_train=50, n_ood_test=50, sex={"female_share": {"train": 0.2}}
        )
    )
    women = (cohort["sex"] == "F").groupby(cohort["split"]).mean()
    assert women["train"] == pytest.approx(0.2, abs=0.03)
    balanced = sample_cohort(SynthConfig(n_train=3000, n_val=100, n_test=100, n_ood_train=50, n_ood_test=50))
    assert (cohort["age"] == balanced["age"]).all() and (cohort["label"] == balanced["label"]).all()
    with pytest.raises(ConfigError, match="sex.female_share"):
        build_config(SynthConfig, overrides=["sex.female_share={nowhere: 0.3}"])


def test_breast_tissue_shadows_womens_lower_lungs_and_hides_lesions_there():
    plain, breasts = tiny(), tiny(sex={"breast_shadow": 0.05})
    assert plain.sex.breast_shadow == 0.0  # the default benchmark has no breast tissue
    rows = sample_cohort(tiny(disease={"prevalence": 0.9}, sex={"breast_shadow": 0.05})).iloc[:24]
    fields = exogenous_fields(tiny(), 0, len(rows))
    no_breast = rows.assign(breast=0.0)
    shadowed, _ = render_physical(rows, 32, fields, breasts)
    bare, _ = render_physical(no_breast, 32, fields, plain)
    women = (rows["sex"] == "F").to_numpy()
    assert women.any() and (~women).any()
    assert np.array_equal(shadowed[~women], bare[~women])
    extra = (shadowed - bare)[women]
    assert extra[:, 20:, :].mean() > 5 * max(extra[:, :10, :].mean(), 1e-6)  # lower fields, not the apices
    hidden = tiny(sex={"breast_shadow": 0.05, "breast_masking": 1.0})
    ill_women = women & (rows["label"] == 1).to_numpy()

    def lesion_seen(cfg, r):
        return (
            render_physical(r, 32, fields, cfg)[0] - render_physical(r.assign(lesion_contrast=0.0), 32, fields, cfg)[0]
        )

    assert (
        np.abs(lesion_seen(hidden, rows)[ill_women]).sum()
        < np.abs(lesion_seen(tiny(sex={"breast_shadow": 0.05, "breast_masking": 0.0}), rows)[ill_women]).sum()
    )


def test_true_sex_counterfactual_is_the_patient_drawn_with_the_other_sex(tmp_path):
    """All-male and all-female draws of one seed differ only by sex (every other draw is the same), so each
    store's true sex counterfactuals must be the other store's images."""
    everyone = ("train", "val", "test", "ood_train", "ood_test")
    men, women = tmp_path / "men", tmp_path / "women"
    run(tiny(sex={"female_share": {s: 0.0 for s in everyone}, "breast_shadow": 0.05}), men)
    run(tiny(sex={"female_share": {s: 1.0 for s in everyone}, "breast_shadow": 0.05}), women)
    m, w = ImageStore.open(men), ImageStore.open(women)
    assert set(m.meta["sex"]) == {"M"} and set(w.meta["sex"]) == {"F"}
    assert np.allclose(m.meta[SEX_FREE_TRAITS], w.meta[SEX_FREE_TRAITS])
    assert all((m.meta[t] != w.meta[t]).all() for t in SEX_CAUSED_TRAITS)
    assert (
        (m.meta[["label", "domain", "age", "lesion_contrast"]] == w.meta[["label", "domain", "age", "lesion_contrast"]])
        .all()
        .all()
    )
    for store, folder, own, other in ((m, men, 1, 0), (w, women, 0, 1)):
        cf = ImageStore.open(folder / "true_cf_sex")
        assert cf.intervened == {"sex": ["F", "M"]} and cf.info["source_store"] == store.content_hash
        table = cf.counterfactual_table(len(store), len(store.domains))
        assert table.shape == (len(store), 2)
        assert np.array_equal(cf.images[table[:, own]], store.images[:])
        assert np.array_equal(cf.meta["domain"].to_numpy()[table[:, other]], store.meta["domain"].to_numpy())
    assert np.array_equal(ImageStore.open(men / "true_cf_sex").images[np.arange(len(m)) * 2], w.images[:])
    assert np.array_equal(ImageStore.open(women / "true_cf_sex").images[np.arange(len(w)) * 2 + 1], m.images[:])
    # only the patient changes: the scanner's frame (collimation border, marker) stays, the body does not
    for d, scanner in enumerate(tiny().acquisition):
        outside, marker = frame_masks(scanner, 32, 32)
        rows = (m.meta["domain"] == d).to_numpy()
        assert np.array_equal(m.images[rows][:, outside | marker], w.images[rows][:, outside | marker])
    assert (m.images[:] != w.images[:]).mean() > 0.2


# ---- renoised true counterfactuals (the oracle-renoised control) ---------------------------------


def test_renoised_counterfactuals_are_written_only_when_asked_and_leave_the_other_stores_as_they_were(
    generated, tmp_path
):
    assert not (generated / "true_cf_renoised").exists()
    assert tiny().renoised_counterfactuals is False
    out = tmp_path / "data"
    run(tiny(renoised_counterfactuals=True), out)
    for name in ("images.npy", "metadata.csv", "true_cf/images.npy", "true_cf/metadata.csv", "true_cf_sex/images.npy"):
        assert (generated / name).read_bytes() == (out / name).read_bytes(), name
    store, truth, renoised = (ImageStore.open(p) for p in (out, out / "true_cf", out / "true_cf_renoised"))
    assert renoised.info["source_store"] == store.content_hash and renoised.info["renoised"] is True
    assert renoised.meta.equals(truth.meta)
    # Every cell has its own noise: each counterfactual differs from the true one, and the image's own cell from
    # the image.
    differs = (renoised.images[:].astype(int) != truth.images[:]).mean(axis=(1, 2))
    assert (differs > 0.2).all()
    run(tiny(renoised_counterfactuals=True), tmp_path / "again")
    again = tmp_path / "again" / "true_cf_renoised" / "images.npy"
    assert (out / "true_cf_renoised" / "images.npy").read_bytes() == again.read_bytes()


def test_renoised_counterfactuals_differ_from_the_true_ones_by_the_noise_alone(tmp_path):
    noiseless = {name: {"noise_std": 0.0} for name in tiny().scanners}
    run(tiny(renoised_counterfactuals=True, scanner_overrides=noiseless), tmp_path / "quiet")
    quiet = tmp_path / "quiet"
    assert np.array_equal(ImageStore.open(quiet / "true_cf_renoised").images, ImageStore.open(quiet / "true_cf").images)
    # With white noise the two noises are independent draws, so the difference has sqrt(2) x the scanner's noise std.
    cfg = tiny(
        renoised_counterfactuals=True,
        frames=False,
        scanner_overrides={s: {"noise_sigma": 0.0} for s in tiny().scanners},
    )
    run(cfg, tmp_path / "noisy")
    truth = ImageStore.open(tmp_path / "noisy" / "true_cf").images[:].astype(float) / 255
    renoised = ImageStore.open(tmp_path / "noisy" / "true_cf_renoised").images[:].astype(float) / 255
    for d, scanner in enumerate(cfg.acquisition):
        a, b = truth[d :: len(cfg.scanners)], renoised[d :: len(cfg.scanners)]
        inside = (a > 0.1) & (a < 0.9) & (b > 0.1) & (b < 0.9)  # away from clipping
        expected = np.sqrt(2) * scanner.noise_std * np.sqrt(np.clip((a + b) / 2, 0.05, 1.0))
        assert np.std((a - b)[inside] / expected[inside]) == pytest.approx(1.0, abs=0.15), scanner.name
