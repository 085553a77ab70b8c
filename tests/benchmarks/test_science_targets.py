"""benchmarks/science_targets.py on a hand-made run folder: the gains and intervals it reports equal
hand-computed ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist

from cfcl.data.store import write_store
from cfcl.evaluation.results import COLUMNS
from support.benchmarks import load_benchmark

DOMAINS = ["major", "middle", "rare", "held_out"]

# AUROC at the lowest label fraction, seeds 0 and 1: (id, rare scanner, transfer, ood probe, and on the rendered
# test set as the rare and as the OOD scanner render it)
AUROC = {
    "simclr": [(0.80, 0.70, 0.60, 0.75, 0.70, 0.60), (0.82, 0.72, 0.62, 0.77, 0.71, 0.64)],
    "cf-simclr": [(0.81, 0.75, 0.65, 0.78, 0.73, 0.61), (0.80, 0.74, 0.66, 0.76, 0.75, 0.66)],
    "oracle": [(0.84, 0.78, 0.70, 0.80, 0.76, 0.70), (0.84, 0.78, 0.70, 0.80, 0.76, 0.70)],
    "random": [(0.60, 0.55, 0.52, 0.58, 0.55, 0.52), (0.60, 0.55, 0.52, 0.58, 0.55, 0.52)],
    "covariates": [(0.70, 0.65, 0.60, 0.62, 0.60, 0.60), (0.71, 0.66, 0.61, 0.63, 0.61, 0.61)],
}
# The robustness gap at the lowest label fraction, seeds 0 and 1: (rare scanner, OOD scanner)
GAP = {
    "simclr": [(0.10, 0.20), (0.12, 0.18)],
    "cf-simclr": [(0.06, 0.15), (0.07, 0.16)],
    "oracle": [(0.03, 0.05), (0.03, 0.05)],
    "random": [(0.20, 0.30), (0.20, 0.30)],
    "covariates": [(0.15, 0.25), (0.15, 0.25)],
}
T_975_1DF = 12.7062  # t(0.975) with 1 degree of freedom: two seeds
T_975_2DF = 4.3027  # t(0.975) with 2 degrees of freedom: three draws
# (protocol, test_set, domain, metric) of each column of AUROC, then of GAP
PICKS = [
    ("linear", "id", "all", "auroc"),
    ("linear", "id", "rare", "auroc"),
    ("transfer", "ood", "all", "auroc"),
    ("linear", "ood", "all", "auroc"),
    ("linear", "rendered", "rare", "auroc"),
    ("linear", "rendered", "held_out", "auroc"),
    ("linear", "rendered", "rare", "robustness_gap"),
    ("linear", "rendered", "held_out", "robustness_gap"),
]


def load_script():
    return load_benchmark("science_targets")


def metrics_table(methods=tuple(AUROC)) -> pd.DataFrame:
    """The rows the script reads, and decoys it must ignore: another fraction, metric, domain and protocol."""
    rows = []
    for method in methods:
        for seed, values in enumerate(AUROC[method]):
            for (protocol, test_set, domain, metric), value in zip(PICKS, (*values, *GAP[method][seed])):
                key = dict(method=method, seed=seed, protocol=protocol, test_set=test_set, domain=domain)
                rows.append({**key, "label_fraction": 0.1, "metric": metric, "value": value})
                rows.append({**key, "label_fraction": 0.1, "metric": f"{metric}_ci_low", "value": 0.0})
                rows.append({**key, "label_fraction": 1.0, "metric": metric, "value": 0.99})
            for protocol, domain in (("linear", "major"), ("ceiling", "rare")):  # another scanner, the ceiling probe
                key = dict(method=method, seed=seed, protocol=protocol, test_set="rendered", domain=domain)
                rows.append({**key, "label_fraction": 0.1, "metric": "auroc", "value": 0.05})
            rows.append(
                dict(
                    method=method,
                    seed=seed,
                    protocol="linear",
                    label_fraction=0.1,
                    test_set="id",
                    domain="major",
                    metric="auroc",
                    value=0.1,
                )
            )
            rows.append(
                dict(
                    method=method,
                    seed=seed,
                    protocol="finetune",
                    label_fraction=0.1,
                    test_set="id",
                    domain="all",
                    metric="auroc",
                    value=0.2,
                )
            )
    for seed, value in enumerate((0.70, 0.80)):
        rows.append(
            dict(
                method="supervised",
                seed=seed,
                protocol="finetune",
                label_fraction=0.1,
                test_set="id",
                domain="all",
                metric="auroc",
                value=value,
            )
        )
    return pd.DataFrame(rows).assign(subgroup="all")[COLUMNS]


def run_folder(root: Path, methods=tuple(AUROC)) -> Path:
    """A run folder: a store whose rarest ID training scanner is 'rare' (domain 3 is OOD) and eval tables."""
    splits = ["train"] * 9 + ["ood_train"] * 2
    domains = [0] * 5 + [1] * 3 + [2] * 1 + [3] * 2
    meta = pd.DataFrame(
        {
            "index": range(11),
            "image_id": [f"i{i}" for i in range(11)],
            "patient_id": [f"p{i}" for i in range(11)],
            "split": splits,
            "domain": domains,
            "label": [i % 2 for i in range(11)],
        }
    )
    write_store(root / "data", np.zeros((11, 8, 8), np.uint8), meta, DOMAINS, ["n", "y"], extra={"ood_domains": [3]})
    (root / "eval").mkdir()
    metrics_table(methods).to_csv(root / "eval" / "metrics.csv", index=False)
    pd.DataFrame(
        {
            "method": ["simclr", "simclr", "cf-simclr", "cf-simclr", "oracle", "oracle"],
            "seed": [0, 1, 0, 1, 0, 1],
            "balanced_accuracy": [0.9, 0.8, 0.6, 0.6, 0.7, 0.7],
            "knn_purity": [0.8, 0.7, 0.3, 0.25, 0.2, 0.2],
            "silhouette": [0.2, 0.3, 0.1, 0.3, 0.0, 0.1],
            "cf_invariance": [1.0, 1.2, 1.1, 1.1, 0.5, 0.8],
        }
    ).to_csv(root / "eval" / "domain_predictability.csv", index=False)
    return root


def test_gains_and_targets_equal_hand_computed_values(tmp_path, capsys):
    load_script().main([str(run_folder(tmp_path))])
    result = json.loads(capsys.readouterr().out)
    assert result["label_fraction"] == 0.1 and result["rare_scanner"] == "rare" and result["seeds"] == [0, 1]
    cf = result["cf-simclr_vs_simclr"]
    # cf-simclr minus simclr, seed by seed
    assert cf["id"]["per_seed"] == pytest.approx([0.01, -0.02]) and cf["id"]["mean"] == pytest.approx(-0.005)
    assert cf["rare"]["per_seed"] == pytest.approx([0.05, 0.02]) and cf["rare"]["mean"] == pytest.approx(0.035)
    assert cf["transfer"]["per_seed"] == pytest.approx([0.05, 0.04]) and cf["transfer"]["mean"] == pytest.approx(0.045)
    assert cf["ood_probe"]["per_seed"] == pytest.approx([0.03, -0.01]) and cf["ood_probe"]["mean"] == pytest.approx(
        0.01
    )
    # every gain carries its t-interval over seeds: transfer 0.045 +- 12.706 * sd(0.05, 0.04) / sqrt(2)
    half = T_975_1DF * np.std([0.05, 0.04], ddof=1) / np.sqrt(2)
    assert (cf["transfer"]["ci_low"], cf["transfer"]["ci_high"]) == pytest.approx(
        (0.045 - half, 0.045 + half), abs=1e-4
    )
    assert cf["transfer"]["n"] == 2 and cf["transfer"]["signs"] == "2/2 > 0" and cf["transfer"]["supported"] is False
    assert cf["ood_probe"]["signs"] == "1/2 > 0"
    assert result["oracle_vs_simclr"]["transfer"]["mean"] == pytest.approx(0.09)
    assert result["oracle_vs_simclr"]["ood_probe"]["mean"] == pytest.approx(0.04)
    # OOD gain (mean of transfer and OOD probe) as a fraction of the oracle's: 0.0275 / 0.065
    assert result["oracle_fraction"] == pytest.approx(0.423, abs=1e-3)
    assert result["simclr_vs_random"]["id"]["mean"] == pytest.approx(0.21)
    vs_random = result["simclr_vs_random"]["id"]
    assert vs_random["ci_low"] == pytest.approx(0.21 - T_975_1DF * np.std([0.20, 0.22], ddof=1) / np.sqrt(2), abs=1e-4)
    assert vs_random["supported"] is True
    vs_covariates = result["simclr_vs_covariates"]["id"]
    assert vs_covariates["per_seed"] == pytest.approx([0.10, 0.11]) and vs_covariates["supported"] is True
    # SimCLR's k-NN scanner purity minus CF-SimCLR's, paired by seed: 0.5 and 0.45
    drop = result["invariance_drop"]["knn_purity"]
    assert (
        drop["mean"] == pytest.approx(0.475)
        and drop["ci_low"] == pytest.approx(0.475 - T_975_1DF * np.std([0.5, 0.45], ddof=1) / np.sqrt(2), abs=1e-4)
        and drop["supported"] is True
    )
    assert result["invariance_drop"]["silhouette"]["per_seed"] == pytest.approx([0.1, 0.0])
    # every pretrained method's drop, the counterfactual invariance distance included (SimCLR's minus the method's)
    drops = result["invariance_drop_vs_simclr"]
    assert set(drops) == {"cf-simclr", "oracle"} and drops["cf-simclr"] == result["invariance_drop"]
    assert drops["cf-simclr"]["cf_invariance"]["per_seed"] == pytest.approx([-0.1, 0.1])
    assert drops["oracle"]["cf_invariance"]["per_seed"] == pytest.approx([0.5, 0.4])
    assert drops["oracle"]["knn_purity"]["per_seed"] == pytest.approx([0.6, 0.5])
    assert "simclr+_vs_simclr" not in result  # a method the run lacks has no row
    # a metrics.csv of whole test sets only (no subgroup rows): no sex gap
    assert result["sex_gap"] == {} and result["sex_gap_vs_simclr"] == {}
    assert result["supervised_id"] == pytest.approx(0.75)
    assert result["invariance_drop"]["balanced_accuracy"]["mean"] == pytest.approx(0.25)
    assert result["auroc_mean"]["simclr"] == pytest.approx(
        {"id": 0.81, "rare": 0.71, "transfer": 0.61, "ood_probe": 0.76, "rare_rendered": 0.705, "ood_rendered": 0.62}
    )
    assert result["robustness_gap_mean"]["cf-simclr"] == pytest.approx({"gap_rare": 0.065, "gap_ood": 0.155})
    # transfer and rare gains (and the predictability drop 0.3, 0.2) are positive in both seeds, but
    # two seeds this far apart cannot exclude 0: not met
    assert result["targets_met"] == {
        "gain_transfer": False,
        "gain_ood_probe": False,
        "gain_rare": False,
        "gain_rare_rendered": False,
        "gain_ood_rendered": False,
        "predictability_drop": False,
        "clustering_drop": True,
        "oracle_fraction": False,
        "simclr_above_random": True,
        "simclr_above_covariates": True,
    }


def test_sex_gap_is_male_minus_female_per_method_and_subgroup_rows_leave_the_whole_set_gains_alone(tmp_path, capsys):
    root = run_folder(tmp_path)
    whole = pd.read_csv(root / "eval" / "metrics.csv")
    load_script().main([str(root)])
    before = json.loads(capsys.readouterr().out)
    # per sex, AUROC of the ID test set shifted from the whole set's: M +0.02 / +0.04 (seeds 0, 1), F -0.03 for simclr;
    # cf-simclr's sexes differ by 0.01 in both seeds
    shift = {
        ("simclr", "M"): [0.02, 0.04],
        ("simclr", "F"): [-0.03, -0.03],
        ("cf-simclr", "M"): [0.005, 0.005],
        ("cf-simclr", "F"): [-0.005, -0.005],
    }
    ids = whole.query("protocol == 'linear' and test_set == 'id' and domain == 'all' and metric == 'auroc'")
    parts = [whole]
    for (method, sex), offsets in shift.items():
        rows = ids[ids.method == method].copy()
        rows["value"] += np.array(offsets)[rows["seed"].to_numpy()]
        parts.append(rows.assign(subgroup=f"sex={sex}"))
    pd.concat(parts).to_csv(root / "eval" / "metrics.csv", index=False)
    load_script().main([str(root)])
    result = json.loads(capsys.readouterr().out)
    for key in ("cf-simclr_vs_simclr", "oracle_vs_simclr", "simclr_vs_random", "auroc_mean", "supervised_id"):
        assert result[key] == before[key], key
    gap = result["sex_gap"]["simclr"]["id"]
    assert gap["per_seed"] == pytest.approx([0.05, 0.07]) and gap["mean"] == pytest.approx(0.06)
    assert gap["ci_high"] == pytest.approx(0.06 + T_975_1DF * np.std([0.05, 0.07], ddof=1) / np.sqrt(2), abs=1e-4)
    assert set(result["sex_gap"]) == {"simclr", "cf-simclr"} and set(result["sex_gap"]["simclr"]) == {"id"}
    # cf-simclr's gap minus simclr's, paired by seed: 0.01 - 0.05, 0.01 - 0.07
    assert result["sex_gap_vs_simclr"]["cf-simclr"]["id"]["per_seed"] == pytest.approx([-0.04, -0.06])


def test_one_seed_gives_gains_without_an_interval_and_says_why(tmp_path, capsys):
    root = run_folder(tmp_path)
    metrics = pd.read_csv(root / "eval" / "metrics.csv")
    metrics[metrics.seed == 0].to_csv(root / "eval" / "metrics.csv", index=False)
    load_script().main([str(root)])
    result = json.loads(capsys.readouterr().out)
    transfer = result["cf-simclr_vs_simclr"]["transfer"]
    assert transfer["mean"] == pytest.approx(0.05) and transfer["n"] == 1 and transfer["ci_low"] is None
    assert transfer["note"] == "1 seed: no interval" and transfer["supported"] is False
    assert result["targets_met"]["gain_transfer"] is False


def test_the_oracle_judged_is_the_methods_own(tmp_path, capsys):
    root = run_folder(tmp_path)
    metrics = pd.read_csv(root / "eval" / "metrics.csv")
    renamed = {"cf-simclr": "cf-simclr-multi", "oracle": "oracle-multi"}
    multi = metrics[metrics.method.isin(list(renamed))].replace({"method": renamed})
    pd.concat([metrics, multi]).to_csv(root / "eval" / "metrics.csv", index=False)
    load_script().main([str(root), "--method", "cf-simclr-multi"])
    result = json.loads(capsys.readouterr().out)
    assert result["oracle-multi_vs_simclr"]["transfer"]["mean"] == pytest.approx(0.09)
    assert result["cf-simclr-multi_vs_simclr"]["transfer"]["mean"] == pytest.approx(0.045)


def test_another_reference_judges_the_dino_family_the_same_way(tmp_path, capsys):
    root = run_folder(tmp_path)
    renamed = {"simclr": "dino", "cf-simclr": "cf-dino", "oracle": "oracle-dino"}
    metrics = pd.read_csv(root / "eval" / "metrics.csv").replace({"method": renamed})
    metrics.to_csv(root / "eval" / "metrics.csv", index=False)
    predictability = pd.read_csv(root / "eval" / "domain_predictability.csv").replace({"method": renamed})
    predictability.to_csv(root / "eval" / "domain_predictability.csv", index=False)
    load_script().main([str(root), "--method", "cf-dino", "--oracle", "oracle-dino", "--reference", "dino"])
    result = json.loads(capsys.readouterr().out)
    assert result["primary"]["reference"] == "dino"
    assert result["primary"]["endpoints"]["gap_reduction_rare"]["per_seed"] == pytest.approx([0.04, 0.05])
    assert result["cf-dino_vs_dino"]["transfer"]["per_seed"] == pytest.approx([0.05, 0.04])
    assert result["oracle-dino_vs_dino"]["transfer"]["mean"] == pytest.approx(0.09)
    assert result["oracle_fraction"] == pytest.approx(0.423, abs=1e-3)
    assert result["invariance_drop"]["knn_purity"]["mean"] == pytest.approx(0.475)
    assert result["targets_met"]["dino_above_random"] is True
    assert list(result["secondary"]) == ["oracle-dino_vs_dino", "cf-dino_vs_oracle-dino"]
    with pytest.raises(SystemExit, match=r"no linear-probe rows of method\(s\) simclr .*compare cf-dino with simclr$"):
        load_script().main([str(root), "--method", "cf-dino"])


@pytest.mark.parametrize("methods, named", [(("cf-simclr", "oracle"), "simclr"), (("simclr", "oracle"), "cf-simclr")])
def test_a_run_without_the_compared_methods_is_a_one_line_message(tmp_path, methods, named):
    root = run_folder(tmp_path, methods)
    with pytest.raises(SystemExit) as err:
        load_script().main([str(root)])
    message = str(err.value)
    assert f"no linear-probe rows of method(s) {named} " in message and str(root / "eval" / "metrics.csv") in message
    assert "\n" not in message


def test_a_folder_without_evaluation_is_a_one_line_message(tmp_path):
    with pytest.raises(SystemExit, match=r"eval/metrics.csv does not exist"):
        load_script().main([str(tmp_path)])


def test_rendered_test_set_gains_are_read_for_the_rare_and_the_ood_scanner(tmp_path, capsys):
    load_script().main([str(run_folder(tmp_path))])
    result = json.loads(capsys.readouterr().out)
    cf = result["cf-simclr_vs_simclr"]
    assert result["ood_scanner"] == "held_out" and result["unit"] == "seed" and "draws" not in result
    # the linear probe's rows of the rare and the OOD scanner, not another scanner's, nor the ceiling probe's
    assert cf["rare_rendered"]["per_seed"] == pytest.approx([0.03, 0.04])
    assert cf["ood_rendered"]["per_seed"] == pytest.approx([0.01, 0.02])
    assert cf["rare"]["per_seed"] == pytest.approx([0.05, 0.02])  # the rare scanner's own test images


def test_one_draw_gives_primary_endpoints_over_seeds(tmp_path, capsys):
    load_script().main([str(run_folder(tmp_path))])
    primary = json.loads(capsys.readouterr().out)["primary"]
    assert (primary["method"], primary["reference"], primary["correction"]) == ("cf-simclr", "simclr", "holm")
    endpoints = primary["endpoints"]
    assert list(endpoints) == list(load_script().PRIMARY_ENDPOINTS)
    # the reduction of the robustness gap is SimCLR's gap minus CF-SimCLR's, seed by seed
    assert endpoints["gap_reduction_rare"]["per_seed"] == pytest.approx([0.04, 0.05])
    assert endpoints["gap_reduction_ood"]["per_seed"] == pytest.approx([0.05, 0.02])
    assert endpoints["gain_transfer"]["per_seed"] == pytest.approx([0.05, 0.04])
    assert not any(e["supported"] for e in endpoints.values())  # two seeds: nothing survives the correction


def write_draws(root: Path, draws: dict[int, dict[str, list[float]]]) -> Path:
    """A run of several data draws: ``draw-<d>/`` is the run folder of :func:`run_folder` with CF-SimCLR's
    values of each endpoint's rows shifted by ``draws[d][endpoint]`` (both seeds)."""
    columns = dict(zip(load_script().PRIMARY_ENDPOINTS, [PICKS[6], PICKS[7], PICKS[4], PICKS[5], PICKS[2], PICKS[3]]))
    for draw, shifts in draws.items():
        folder = run_folder(root / f"draw-{draw}")
        metrics = pd.read_csv(folder / "eval" / "metrics.csv")
        for endpoint, shift in shifts.items():
            protocol, test_set, domain, metric = columns[endpoint]
            rows = (
                (metrics.method == "cf-simclr")
                & (metrics.protocol == protocol)
                & (metrics.test_set == test_set)
                & (metrics.domain == domain)
                & (metrics.metric == metric)
            )
            metrics.loc[rows, "value"] += shift
        metrics.to_csv(folder / "eval" / "metrics.csv", index=False)
    return root


def test_several_draws_give_intervals_over_draws_and_holm_adjusted_primary_endpoints(tmp_path, capsys):
    # each draw's endpoint (its two seeds' paired gains averaged), signed so that positive is the claim
    expected = {
        "gap_reduction_rare": [0.045, 0.055, 0.050],
        "gap_reduction_ood": [0.035, 0.005, 0.065],
        "gain_rare_rendered": [0.035, 0.045, 0.040],
        "gain_ood_rendered": [0.015, -0.015, 0.030],
        "gain_transfer": [0.045, 0.040, 0.050],
        "gain_ood_probe": [0.010, -0.020, 0.000],
    }
    one_draw = {name: values[0] for name, values in expected.items()}  # draw 100: the single-draw folder as is
    # CF-SimCLR's rows shifted: a gap shifted up is reduced less
    sign = {name: -1 if name.startswith("gap") else 1 for name in expected}
    shifts = {
        d: {n: sign[n] * (v[k] - one_draw[n]) for n, v in expected.items()} for k, d in enumerate((100, 101, 102))
    }
    root = write_draws(tmp_path, shifts)
    (root / "notes").mkdir()  # not a draw
    load_script().main([str(root)])
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "draw" and result["draws"] == [100, 101, 102] and result["seeds"] == [0, 1]
    endpoints = result["primary"]["endpoints"]
    p = {}
    for name, values in expected.items():
        e = endpoints[name]
        mean, se = np.mean(values), np.std(values, ddof=1) / np.sqrt(3)
        assert e["per_draw"] == pytest.approx(values, abs=1e-4) and e["n"] == 3
        assert (e["mean"], e["ci_low"], e["ci_high"]) == pytest.approx(
            (mean, mean - T_975_2DF * se, mean + T_975_2DF * se), abs=1e-4
        )
        p[name] = 2 * t_dist.sf(abs(mean) / se, 2)  # the paired t-test over draws
        assert e["p"] == pytest.approx(p[name], abs=1e-4)
    # Holm by hand: p in rising order gap_reduction_rare < gain_transfer < gain_rare_rendered < gap_reduction_ood
    # < gain_ood_rendered < gain_ood_probe; adjusted p = running maximum of (7 - rank) * p, at most 1
    rising = ["gap_reduction_rare", "gain_transfer", "gain_rare_rendered", "gap_reduction_ood"]
    assert sorted(p, key=p.get) == [*rising, "gain_ood_rendered", "gain_ood_probe"]
    holm = {
        "gap_reduction_rare": 6 * p["gap_reduction_rare"],
        "gain_transfer": max(6 * p["gap_reduction_rare"], 5 * p["gain_transfer"]),
        "gain_rare_rendered": max(6 * p["gap_reduction_rare"], 5 * p["gain_transfer"], 4 * p["gain_rare_rendered"]),
        "gap_reduction_ood": 3 * p["gap_reduction_ood"],
        "gain_ood_rendered": 1.0,
        "gain_ood_probe": 1.0,
    }
    assert {n: endpoints[n]["p_holm"] for n in holm} == pytest.approx(holm, abs=1e-4)
    assert {n for n, e in endpoints.items() if e["supported"]} == set(rising[:3])
    # the unadjusted 95 % interval of the OOD own-label probe holds 0; every interval at its Holm level is wider
    assert endpoints["gain_ood_probe"]["supported_unadjusted"] is False
    assert endpoints["gap_reduction_rare"]["holm_level"] == pytest.approx(1 - 0.05 / 6)
    values = expected["gap_reduction_rare"]
    half = t_dist.ppf(1 - 0.05 / 12, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert endpoints["gap_reduction_rare"]["holm_ci_low"] == pytest.approx(np.mean(values) - half, abs=1e-4)
    assert endpoints["gain_ood_probe"]["holm_level"] == pytest.approx(0.95)
    # every other figure is over draws too: the ID gain is the same in every draw (-0.005), so sd 0
    assert result["cf-simclr_vs_simclr"]["id"]["per_draw"] == pytest.approx([-0.005] * 3)
    assert result["invariance_drop"]["knn_purity"]["per_draw"] == pytest.approx([0.475] * 3)
    # secondary: the oracle against SimCLR, and CF-SimCLR against the oracle, paired within each draw
    secondary = result["secondary"]
    assert set(secondary) == {"oracle_vs_simclr", "cf-simclr_vs_oracle"}
    assert secondary["oracle_vs_simclr"]["gain_transfer"]["per_draw"] == pytest.approx([0.09] * 3)
    assert secondary["cf-simclr_vs_oracle"]["gain_transfer"]["per_draw"] == pytest.approx(
        [0.045 - 0.09, 0.040 - 0.09, 0.050 - 0.09], abs=1e-4
    )
    # the preregistered verdict: the rare scanner's reduction is supported, the OOD scanner's is not
    assert result["primary"]["decision"] == "partly supported"
    load_script().main([str(root), "--markdown"])
    tables = capsys.readouterr().out
    assert "over 3 draws (Holm over 6)" in tables and "Decision: partly supported." in tables
    assert endpoints["gap_reduction_rare"]["spread"]["sd_draw_means"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)
    assert "| gap_reduction_rare | " in tables.split("Where the spread comes from")[1]
    low, high = (
        result["primary"]["endpoints"]["gap_reduction_rare"]["ci_low"],
        endpoints["gap_reduction_rare"]["ci_high"],
    )
    assert f"| gap_reduction_rare | +0.050 [{low:+.3f}, {high:+.3f}] | " in tables
    assert "| oracle − simclr | +0.080 [+0.080, +0.080] | " in tables  # rare-scanner G: (0.10 + 0.12) / 2 - 0.03
    # the scanner in the embedding: predictability (0.3, 0.2) and k-NN purity (0.5, 0.45) drops, seeds averaged
    assert "| cf-simclr | +0.250 [+0.250, +0.250] | +0.475 [+0.475, +0.475] | " in tables
    assert "| oracle | +0.150 [+0.150, +0.150] | +0.550 [+0.550, +0.550] | " in tables


@pytest.mark.parametrize(
    ("rare", "ood", "control", "verdict"),
    [
        (True, True, (0.01, 0.01), "supported"),
        (False, True, (-0.01, -0.01), "partly supported"),
        (False, False, (0.01, 0.02), "not supported"),
        (False, False, (0.01, -0.01), "undecided: the positive control fails"),
        (False, False, None, "undecided: the positive control fails"),
    ],
)
def test_the_verdict_follows_the_preregistered_rule(rare, ood, control, verdict):
    primary = {"gap_reduction_rare": {"supported": rare}, "gap_reduction_ood": {"supported": ood}}
    oracle = {
        name: {"mean": 0.05, "ci_low": low, "ci_high": 0.1}
        for name, low in zip(("gap_reduction_rare", "gap_reduction_ood"), control or ())
    }
    assert load_script().decision(primary, oracle) == verdict


def test_holm_adjusts_three_p_values_by_hand():
    adjusted, levels = load_script().holm([0.04, 0.01, 0.03])
    # rising: 0.01 (x 3 = 0.03), 0.03 (x 2 = 0.06), 0.04 (x 1 = 0.04, below the running maximum 0.06)
    assert adjusted == pytest.approx([0.06, 0.03, 0.06])
    assert levels == pytest.approx([0.95, 1 - 0.05 / 3, 1 - 0.05 / 2])
    assert load_script().holm([0.5, float("nan")])[0] == pytest.approx([1.0, 1.0])  # NaN counts as 1


def test_the_secondary_comparisons_include_simclr_multi_when_present(tmp_path, capsys):
    root = run_folder(tmp_path)
    metrics = pd.read_csv(root / "eval" / "metrics.csv")
    renamed = {"simclr": "simclr-multi", "cf-simclr": "cf-simclr-multi"}
    multi = metrics[metrics.method.isin(list(renamed))].replace({"method": renamed})
    pd.concat([metrics, multi]).to_csv(root / "eval" / "metrics.csv", index=False)
    load_script().main([str(root)])
    secondary = json.loads(capsys.readouterr().out)["secondary"]
    assert secondary["cf-simclr-multi_vs_simclr-multi"]["gain_transfer"]["per_seed"] == pytest.approx([0.05, 0.04])
    assert secondary["simclr-multi_vs_simclr"]["gain_transfer"]["per_seed"] == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize(
    "drop, named",
    [
        (lambda m: m.test_set == "rendered", "no rendered test-set rows (test_set 'rendered')"),
        (lambda m: m.metric == "robustness_gap", "no robustness_gap rows (the ceiling probes of the rendered"),
    ],
)
def test_a_draw_without_what_the_primary_endpoints_need_is_a_one_line_message(tmp_path, drop, named):
    root = write_draws(tmp_path, {0: {}, 1: {}})
    path = root / "draw-1" / "eval" / "metrics.csv"
    metrics = pd.read_csv(path)
    metrics[~drop(metrics)].to_csv(path, index=False)
    with pytest.raises(SystemExit) as err:
        load_script().main([str(root)])
    message = str(err.value)
    assert f"{path} holds {named}" in message and "cfcl run benchmark_decide" in message and "\n" not in message


def test_draws_of_other_methods_or_a_missing_oracle_are_one_line_messages(tmp_path):
    root = write_draws(tmp_path, {0: {}, 1: {}})
    path = root / "draw-1" / "eval" / "metrics.csv"
    metrics = pd.read_csv(path)
    metrics[metrics.method != "oracle"].to_csv(path, index=False)
    with pytest.raises(SystemExit, match=rf"{re.escape(str(path))} holds no linear-probe rows of method\(s\) oracle, "):
        load_script().main([str(root)])
    with pytest.raises(SystemExit, match=r"no linear-probe rows of the oracle oracle-multi; .*benchmark_decide"):
        load_script().main([str(run_folder(tmp_path / "one")), "--oracle", "oracle-multi"])


def test_the_spread_over_draws_splits_into_seeds_and_the_draw_by_hand():
    index = pd.MultiIndex.from_tuples([(1, 0), (1, 1), (2, 0), (2, 1)], names=["draw", "seed"])
    spread = load_script().spread_over_draws(pd.Series([0.1, 0.3, 0.5, 0.7], index=index))
    # draw means 0.2 and 0.6 (SD 0.2828); each draw's seed variance 0.02 (pooled SD 0.1414); a draw mean of two
    # seeds carries 0.02 / 2 of it, so the draw adds sqrt(0.08 - 0.01)
    assert spread == pytest.approx(
        {"sd_draw_means": 0.2828, "sd_seed_within_draw": 0.1414, "sd_draw_added": 0.2646}, abs=1e-4
    )
    # draws whose means differ less than their seeds predict add nothing
    same = load_script().spread_over_draws(pd.Series([0.1, 0.3, 0.15, 0.35], index=index))
    assert same["sd_draw_added"] == 0.0 and same["sd_draw_means"] == pytest.approx(0.0354, abs=1e-4)
