"""The run report: headline table values, self-contained HTML, partial runs, bad run folders."""

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from cfcl.cli import main
from cfcl.evaluation.results import (
    COLUMNS,
    SEED_GAIN_COLUMNS,
    SUBGROUP_GAP_COLUMNS,
    VARIANCE_COLUMNS,
    invariance_seed_gains,
    metric_seed_gains,
    subgroup_gap_rows,
)
from cfcl.plotting import save_png
from cfcl.report.report import run_report
from cfcl.report.summary import (
    ReportError,
    gain_cell,
    gap_caption,
    headline_gain_table,
    headline_table,
    invariance_table,
    print_headline,
    subgroup_gap_table,
)
from support.evaluation import complete_stage
from support.report import QUALITY

DOMAINS = ["major", "rare"]
FINDINGS = ["Pleural Effusion", "Edema"]


def fake_metrics(rng) -> pd.DataFrame:
    """Whole test sets (subgroup ``all``) and, with other values, each sex's images."""
    rows = []
    for method in ("simclr", "cf_simclr"):
        for seed in (0, 1, 2):
            for fraction in (0.1, 0.5, 1.0):
                for protocol, test_set, domains in (
                    ("linear", "id", ["all", *DOMAINS]),
                    ("linear", "ood", ["all"]),
                    ("transfer", "ood", ["all"]),
                ):
                    for domain in domains:
                        for subgroup in ("all", "sex=F", "sex=M"):
                            value = rng.uniform(0.6, 0.9)
                            for metric, v in (
                                ("auroc", value),
                                ("auroc_ci_low", value - 0.05),
                                ("auroc_ci_high", value + 0.05),
                                ("balanced_accuracy", value - 0.1),
                            ):
                                rows.append((method, seed, protocol, fraction, test_set, domain, subgroup, metric, v))
    return pd.DataFrame(rows, columns=COLUMNS)


VARIANCE_ROW = dict(
    method="cf_simclr",
    reference="simclr",
    protocol="linear",
    label_fraction=0.1,
    test_set="id",
    domain="rare",
    n_seeds=3,
    n_draws=2,
    sd_seed=0.01,
    sd_draw=0.02,
    sd_test=0.005,
    half_width=0.03,
    half_width_10_seeds=0.012,
    seeds_needed=7,
)


def png(path):
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    save_png(fig, path)


@pytest.fixture
def run_dir(tmp_path):
    """A complete-looking run folder with every stage's outputs (written by hand, no training)."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    for stage in ("data", "cf_model", "cf_store", "cf_quality", "eval"):
        complete_stage(run / stage, stage)
    for name in ("simclr-s0", "cf_simclr-s0"):
        complete_stage(run / "pretrain" / name, "pretrain")
        png(run / "pretrain" / name / "loss_curve.png")
    eval_dir = run / "eval"
    fake_metrics(rng).to_csv(eval_dir / "metrics.csv", index=False)
    pd.DataFrame(
        [
            dict(
                method="cf_simclr",
                reference="simclr",
                protocol="linear",
                label_fraction=f,
                test_set="id",
                domain=d,
                n_seeds=3,
                gain=0.02,
                ci_low=-0.01,
                ci_high=0.05,
            )
            for f in (0.1, 1.0)
            for d in ("all", *DOMAINS)
        ]
    ).to_csv(eval_dir / "gains.csv", index=False)
    invariance = pd.DataFrame(
        dict(
            method=["simclr"] * 3 + ["cf_simclr"] * 3 + ["random"] * 3,
            seed=[0, 1, 2] * 3,
            balanced_accuracy=[0.9, 0.92, 0.94, 0.4, 0.5, 0.45, 1.0, 1.0, 1.0],
            std=[0.02] * 9,
            chance=[1 / 3] * 9,
            n_domains=[3] * 9,
            n_per_domain=[50] * 9,
            knn_purity=[0.5, 0.6, 0.7, 0.2, 0.25, 0.3, 0.9, 0.8, 0.85],
            knn_k=[10] * 9,
            silhouette=[0.1, 0.2, 0.15, 0.0, 0.05, 0.02, 0.3, 0.3, 0.3],
            cf_invariance=[0.4, 0.5, 0.45, 0.1, 0.15, 0.1, 0.9, 0.8, 0.9],
        )
    )
    invariance.to_csv(eval_dir / "domain_predictability.csv", index=False)
    seed_gains = metric_seed_gains(pd.read_csv(eval_dir / "metrics.csv"), "simclr") + invariance_seed_gains(
        invariance, "simclr", "test"
    )
    pd.DataFrame(seed_gains, columns=SEED_GAIN_COLUMNS).to_csv(eval_dir / "seed_gains.csv", index=False)
    gaps = subgroup_gap_rows(pd.read_csv(eval_dir / "metrics.csv"))
    pd.DataFrame(gaps, columns=SUBGROUP_GAP_COLUMNS).to_csv(eval_dir / "subgroup_gaps.csv", index=False)
    pd.DataFrame([VARIANCE_ROW], columns=VARIANCE_COLUMNS).to_csv(eval_dir / "variance_components.csv", index=False)
    png(eval_dir / "tsne_simclr.png")
    (run / "cf_quality" / "cf_quality.json").write_text(json.dumps(QUALITY))
    png(run / "cf_quality" / "cf_grid.png")
    return run


def three_seed_cell(diffs: pd.Series) -> tuple[str, float]:
    """The report's cell of a paired difference over 3 seeds, computed by hand, and its lower bound."""
    half = 4.302653 * diffs.std() / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
    low, high = diffs.mean() - half, diffs.mean() + half
    verdict = "supported" if low > 0 or high < 0 else "not resolved"
    return f"{diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}], {(diffs > 0).sum()}/3 > 0, {verdict}", low


def test_headline_table_is_mean_and_std_over_seeds(run_dir):
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    table = headline_table(metrics, 0.1)
    assert list(table.columns) == ["ID", "ID major", "ID rare", "OOD (own labels)", "OOD (direct transfer)"]
    assert list(table.index) == ["cf_simclr (linear)", "simclr (linear)"]
    values = metrics.query(
        "method == 'simclr' and protocol == 'transfer' and label_fraction == 0.1 and metric == 'auroc' "
        "and subgroup == 'all'"
    )["value"]
    assert table.loc["simclr (linear)", "OOD (direct transfer)"] == f"{values.mean():.3f} ± {values.std():.3f}"
    values = metrics.query(
        "method == 'cf_simclr' and protocol == 'linear' and test_set == 'id' and domain == 'rare' "
        "and label_fraction == 0.1 and metric == 'auroc' and subgroup == 'all'"
    )["value"]
    assert table.loc["cf_simclr (linear)", "ID rare"] == f"{values.mean():.3f} ± {values.std():.3f}"


def test_headline_gains_are_paired_seed_means_with_t_intervals(run_dir):
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    seed_gains = pd.read_csv(run_dir / "eval" / "seed_gains.csv")
    table = headline_gain_table(seed_gains, 0.1)
    assert list(table.columns) == ["ID", "ID major", "ID rare", "OOD (own labels)", "OOD (direct transfer)"]
    assert list(table.index) == ["cf_simclr (linear)"]
    pick = metrics.query(
        "protocol == 'linear' and test_set == 'id' and domain == 'rare' and label_fraction == 0.1 "
        "and metric == 'auroc' and subgroup == 'all'"
    )
    diffs = (
        pick[pick.method == "cf_simclr"].set_index("seed")["value"]
        - pick[pick.method == "simclr"].set_index("seed")["value"]
    )
    assert table.loc["cf_simclr (linear)", "ID rare"] == three_seed_cell(diffs)[0]
    one_seed = dict(
        gain=0.05, n_seeds=1, note="1 seed: no interval", ci_low=np.nan, ci_high=np.nan, n_positive=1, supported=False
    )
    assert gain_cell(pd.Series(one_seed)) == "+0.050 (1 seed: no interval)"


def test_invariance_table_has_intervals_over_seeds_and_the_random_encoder_beside():
    table = pd.DataFrame(
        dict(
            method=["simclr"] * 3 + ["random"],
            seed=[0, 1, 2, 0],
            balanced_accuracy=[0.9, 0.92, 0.94, 1.0],
            knn_purity=[0.5, 0.6, 0.7, 0.9],
            silhouette=[0.1, 0.2, 0.3, 0.4],
            cf_invariance=np.nan,
        )
    )
    shown = invariance_table(table)
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert shown.loc["simclr", "knn_purity"] == f"0.600 [{0.6 - half:.3f}, {0.6 + half:.3f}]"
    assert shown.loc["simclr", "domain_predictability"].startswith("0.920 [")
    assert shown.loc["random", "knn_purity"] == "0.900 (1 seed: no interval)" and shown.loc["random", "seeds"] == "1"
    assert "cf_invariance" not in shown.columns  # measured only with true counterfactuals


def test_report_is_one_self_contained_page_with_every_figure(run_dir):
    index = run_report(run_dir)
    assert index == run_dir / "report" / "index.html"
    page = index.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page), "the page must not load external resources"
    assert "<script" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    # auroc curves, gains, sex gap, predictability, one t-SNE, one cf grid, two loss curves
    assert len(images) == 8
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).load()
    for text in (
        "Verdict",
        "Headline results",
        "cf_simclr (linear)",
        "major → rare",
        "0.906",
        "reversibility MAE",
        "Counterfactuals of the fine-tuned generator on test images",
        "Pretraining cf_simclr, seed 0",
        "Stages, timings and configs",
        "pretrain/simclr-s0/config.yaml",
        "Complete run.",
    ):
        assert text in page
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "| cf_simclr (linear) |" in summary and "absent" not in summary
    # the headline gain tables and the invariance tables with their seed intervals and verdicts
    assert "AUROC gain over simclr at 10% labels, paired by seed: mean [95% t-interval over seeds]" in summary
    assert "supported" in summary and "3 > 0" in summary
    assert "| random |" in summary and "knn_purity" in summary and "minus simclr's, paired by seed" in summary
    assert "cf_invariance: mean feature distance of an ID test image" in summary
    assert "test-set bootstrap" in summary and "not over seeds" in summary
    # the sex gap: a table per headline fraction and a figure
    assert "## Subgroup gaps" in summary and "AUROC gap sex=M minus sex=F at 10% labels, paired by seed" in summary
    assert "AUROC gap sex=M minus sex=F at 100% labels" in summary and "(figures/subgroup_gap_sex_M.png)" in summary
    assert sorted(p.name for p in (run_dir / "report" / "figures").glob("*.png")) == sorted(
        re.findall(r"\(figures/([^)]+)\)", summary)
    )


def test_partial_run_report_shows_what_exists_and_names_what_is_absent(run_dir, tmp_path):
    partial = tmp_path / "partial"
    complete_stage(partial / "data", "data")
    index = run_report(partial, tmp_path / "out")
    page = index.read_text()
    assert "Partial run" in page
    for missing in ("eval/metrics.csv", "cf_quality/cf_quality.json", "pretrained encoders in", "stage output"):
        assert missing in page
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Absent:" in summary and "eval/metrics.csv (run `cfcl evaluate`)" in summary


def test_bad_run_folders_are_one_line_errors(tmp_path, run_dir):
    with pytest.raises(ReportError, match="run folder .*nowhere does not exist"):
        run_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="holds no stage outputs"):
        run_report(tmp_path / "empty")
    (run_dir / "eval" / "metrics.csv").write_text("method,seed\nsimclr,0\n")
    with pytest.raises(ReportError, match=r"eval/metrics.csv lacks column\(s\) protocol"):
        run_report(run_dir)


def test_print_headline_and_cli(run_dir, capsys):
    print_headline(run_dir)
    out = capsys.readouterr().out
    assert "AUROC at 10% labels (mean ± std over 3 seeds)" in out and "AUROC at 100% labels" in out
    assert "simclr (linear)" in out
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "index.html").is_file()
    assert main(["report", str(run_dir / "missing")]) == 2
    assert "run folder" in capsys.readouterr().err


def test_one_seed_headline_shows_values_without_a_spread(run_dir):
    from cfcl.report.summary import headline_text

    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    one = headline_text(metrics[metrics["seed"] == metrics["seed"].min()])
    assert "AUROC at 10% labels (1 seed: no spread)" in one and "±" not in one
    assert "±" in headline_text(metrics)
    run_report(run_dir)  # the report's caption is the terminal's: no "mean ± std" over a table of single values
    assert "**AUROC at 10% labels (mean ± std over 3 seeds)**" in (run_dir / "report" / "summary.md").read_text()
    (run_dir / "eval" / "seed_gains.csv").unlink()
    metrics[metrics["seed"] == 0].to_csv(run_dir / "eval" / "metrics.csv", index=False)
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "**AUROC at 10% labels (1 seed: no spread)**" in summary and "one seed: single values, no spread" in summary


def test_subgroup_gap_is_male_minus_female_paired_by_seed_with_a_t_interval(run_dir):
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    gaps = pd.read_csv(run_dir / "eval" / "subgroup_gaps.csv")
    assert set(gaps["subgroup"]) == {"sex=M"} and set(gaps["reference"]) == {"sex=F"}
    table = subgroup_gap_table(gaps, 0.1, "sex=M")
    assert list(table.columns) == ["ID", "ID major", "ID rare", "OOD (own labels)", "OOD (direct transfer)"]
    assert list(table.index) == ["cf_simclr (linear)", "simclr (linear)"]
    pick = metrics.query(
        "method == 'simclr' and protocol == 'transfer' and label_fraction == 0.1 and metric == 'auroc'"
    )
    diffs = (
        pick[pick.subgroup == "sex=M"].set_index("seed")["value"]
        - pick[pick.subgroup == "sex=F"].set_index("seed")["value"]
    )
    cell, low = three_seed_cell(diffs)
    assert table.loc["simclr (linear)", "OOD (direct transfer)"] == cell
    row = gaps.query(
        "method == 'simclr' and protocol == 'transfer' and label_fraction == 0.1 and metric == 'auroc'"
    ).iloc[0]
    assert row["gap"] == pytest.approx(diffs.mean()) and row["ci_low"] == pytest.approx(low, abs=1e-5)
    assert row["n_seeds"] == 3 and row["n_positive"] == (diffs > 0).sum()
    # one seed: the gap alone, and the caption says once why there is no interval and what to run
    one = pd.DataFrame(subgroup_gap_rows(metrics[metrics.seed == 0]), columns=SUBGROUP_GAP_COLUMNS)
    cell = subgroup_gap_table(one, 0.1, "sex=M").loc["simclr (linear)", "OOD (direct transfer)"]
    assert cell == f"{diffs[0]:+.3f}"
    assert "at 10% labels, one seed: no interval; run `cfcl run benchmark`" in gap_caption(one, 0.1, "sex=M")


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("metrics.csv", "subgroup"),
        ("variance_components.csv", "seeds_needed"),
        ("domain_predictability.csv", "silhouette"),
    ],
)
def test_a_table_without_a_column_of_this_cfcl_is_a_one_line_error_naming_the_rewrite(run_dir, table, column):
    path = run_dir / "eval" / table
    pd.read_csv(path).drop(columns=column).to_csv(path, index=False)
    with pytest.raises(ReportError) as error:
        run_report(run_dir)
    assert str(error.value) == f"{path} lacks column(s) {column}; `cfcl evaluate --force` writes it anew"


def test_missing_evaluation_tables_are_named_with_the_command_that_writes_them(run_dir):
    for table in ("subgroup_gaps.csv", "variance_components.csv"):
        (run_dir / "eval" / table).unlink()
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    for table in ("subgroup_gaps.csv", "variance_components.csv"):
        assert f"*absent: {run_dir / 'eval' / table} (run `cfcl evaluate`)*" in summary


def test_gain_figure_draws_an_interval_that_misses_its_point_as_it_is():
    from cfcl.report.figures import gain_figure

    gains = pd.DataFrame(
        {
            "method": ["cf-simclr"],
            "reference": ["simclr"],
            "protocol": ["linear"],
            "label_fraction": [0.05],
            "test_set": ["id"],
            "domain": ["all"],
            "gain": [0.05],
            "ci_low": [0.01],
            "ci_high": [0.04],
        }
    )
    ax = gain_figure(gains).axes[0]
    (segment,) = ax.collections[0].get_segments()
    assert segment[:, 1].tolist() == [0.01, 0.04]  # the bootstrap bounds, not stretched to the point
    assert ax.lines[0].get_ydata().tolist() == [0.05]


def test_variance_components_name_the_test_set_and_scanner_and_the_seeds_needed(run_dir):
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    line = next(line for line in summary.splitlines() if line.startswith("| cf_simclr (linear, id rare) |"))
    assert float(line.strip(" |").split("|")[-1]) == 7  # seeds_needed, the last column
    pd.DataFrame(columns=VARIANCE_COLUMNS).to_csv(run_dir / "eval" / "variance_components.csv", index=False)
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "No gains to break down" in summary and "absent" not in summary


def test_the_quality_of_sex_counterfactuals_is_one_table_beside_the_scanners(run_dir):
    def quality(folder, intervened, effectiveness):
        complete_stage(run_dir / folder, "cf_quality")
        (run_dir / folder / "cf_quality.json").write_text(
            json.dumps(
                {
                    "intervened": intervened,
                    "targets": {
                        "effectiveness": {"value": effectiveness, "threshold": 0.95, "pass": effectiveness >= 0.95},
                        "reversibility": {"value": 0.01, "threshold": 0.02, "pass": True},
                    },
                }
            )
        )

    quality("cf_quality_sex", {"sex": ["F", "M"]}, 0.8125)
    quality("cf_quality_base", None, 0.123)  # the scanner's quality before fine-tuning: not a parent's table
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "Quality of the counterfactuals of sex: 1 of 2 pass marks met" in summary
    table = summary.split("Quality of the counterfactuals of sex: 1 of 2 pass marks met")[1]
    assert re.search(
        r"\| effectiveness: the judge finds the intended sex \(balanced accuracy\) \| 0\.812 \| ≥ 0\.95 \| no \|", table
    )
    assert "0.123" not in summary and "Counterfactual quality against its pass marks: 3 of 3 pass marks met" in summary


def markdown_after(summary: str, caption: str) -> dict[str, dict[str, str]]:
    """The markdown table under the first caption starting with ``caption``: row name -> column -> cell."""
    lines = summary.split(f"**{caption}", 1)[1].splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    body = lines[4:]
    body = body[: next((i for i, line in enumerate(body) if not line.startswith("|")), len(body))]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


def test_the_robustness_gap_is_a_table_per_scanner_with_its_gain_over_the_reference(run_dir):
    metrics = pd.read_csv(run_dir / "eval" / "metrics.csv")
    run_report(run_dir)
    assert (
        "Robustness gap" not in (run_dir / "report" / "summary.md").read_text()
    )  # no true counterfactuals: no section
    rng = np.random.default_rng(1)
    gaps = pd.DataFrame(
        [
            (method, seed, "linear", fraction, "rendered", domain, "all", "robustness_gap", rng.uniform(0, 0.2))
            for method in ("simclr", "cf_simclr")
            for seed in (0, 1, 2)
            for fraction in (0.1, 1.0)
            for domain in DOMAINS
        ],
        columns=COLUMNS,
    )
    metrics = pd.concat([metrics, gaps], ignore_index=True)
    metrics.to_csv(run_dir / "eval" / "metrics.csv", index=False)
    seed_gains = pd.DataFrame(metric_seed_gains(metrics, "simclr"), columns=SEED_GAIN_COLUMNS)
    seed_gains.to_csv(run_dir / "eval" / "seed_gains.csv", index=False)
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "## Robustness gap per scanner" in summary
    shown = markdown_after(summary, "Robustness gap at 10% labels (mean ± std over 3 seeds)")
    gain = markdown_after(summary, "Robustness gap minus simclr's at 10% labels")
    assert set(shown) == {"simclr (linear)", "cf_simclr (linear)"} and set(gain) == {"cf_simclr (linear)"}
    for domain in DOMAINS:
        pick = gaps[(gaps.label_fraction == 0.1) & (gaps.domain == domain)]
        own = pick[pick.method == "cf_simclr"].set_index("seed")["value"]
        assert shown["cf_simclr (linear)"][f"ID patients as {domain}"] == f"{own.mean():.3f} ± {own.std():.3f}"
        diffs = own - pick[pick.method == "simclr"].set_index("seed")["value"]
        assert gain["cf_simclr (linear)"][f"ID patients as {domain}"] == three_seed_cell(diffs)[0]


def test_a_multi_label_runs_report_leads_with_the_mean_over_findings_and_shows_each_finding(run_dir):
    run_report(run_dir)
    assert "AUROC per finding" not in (run_dir / "report" / "summary.md").read_text()  # a single-label store
    rng = np.random.default_rng(2)
    auroc = pd.read_csv(run_dir / "eval" / "metrics.csv").query("metric == 'auroc'")
    per_finding = [auroc.assign(metric=f"auroc:{name}", value=rng.uniform(0.5, 1, len(auroc))) for name in FINDINGS]
    mean = auroc.assign(metric="mean_auroc", value=np.mean([p["value"] for p in per_finding], axis=0))
    metrics = pd.concat([*per_finding, mean], ignore_index=True)
    metrics.to_csv(run_dir / "eval" / "metrics.csv", index=False)
    seed_gains = pd.DataFrame(metric_seed_gains(metrics, "simclr"), columns=SEED_GAIN_COLUMNS)
    seed_gains.to_csv(run_dir / "eval" / "seed_gains.csv", index=False)
    gaps = pd.DataFrame(subgroup_gap_rows(metrics), columns=SUBGROUP_GAP_COLUMNS)
    gaps.to_csv(run_dir / "eval" / "subgroup_gaps.csv", index=False)
    run_report(run_dir)
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "AUROC (mean over findings) gain of each method over simclr" in summary.split("## Verdict")[1]
    whole = metrics.query("label_fraction == 0.1 and subgroup == 'all' and domain == 'all' and method == 'cf_simclr'")

    def cell(rows):
        values = rows.set_index("seed")["value"]
        return f"{values.mean():.3f} ± {values.std():.3f}"

    headline = markdown_after(summary, "AUROC (mean over findings) at 10% labels (mean ± std over 3 seeds)")
    assert headline["cf_simclr (linear)"]["ID"] == cell(whole.query("metric == 'mean_auroc' and test_set == 'id'"))
    gain = markdown_after(summary, "AUROC (mean over findings) gain over simclr at 10% labels, paired by seed")
    assert set(gain) == {"cf_simclr (linear)"}
    table = markdown_after(
        summary, "AUROC of each finding (on the test images where it is known) and their mean at 10%"
    )
    assert list(table["cf_simclr (linear, id)"]) == [*FINDINGS, "mean"]
    for protocol, test_set in (("linear", "id"), ("linear", "ood"), ("transfer", "ood")):
        row = table[f"cf_simclr ({protocol}, {test_set})"]
        shown = whole[(whole.protocol == protocol) & (whole.test_set == test_set)]
        for name in FINDINGS:
            assert row[name] == cell(shown[shown.metric == f"auroc:{name}"])
        assert row["mean"] == cell(shown[shown.metric == "mean_auroc"])
    assert "AUROC (mean over findings) gap sex=M minus sex=F at 10% labels" in summary
    assert "AUROC per finding" in (run_dir / "report" / "index.html").read_text()
