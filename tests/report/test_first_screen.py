"""What a reader sees first: the verdict in words as the report's first section, a terminal headline that fits
100 columns, counterfactual quality as named tables (no Python reprs), figures that say what they draw."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from cfcl.evaluation.results import COLUMNS, SEED_GAIN_COLUMNS, metric_seed_gains
from cfcl.report import figures
from cfcl.report.report import run_report
from cfcl.report.summary import print_headline
from support.evaluation import complete_stage
from support.report import QUALITY

SCANNERS = ["flatpanel", "cr_plate", "portable"]
SIMCLR = {"id": [0.70, 0.72, 0.71], "ood": [0.60, 0.62, 0.61], "transfer": [0.55, 0.57, 0.56]}
# cf-simclr minus simclr per seed: a clear gain in distribution, none on the OOD scanner's own labels, a clear loss
# in transfer
GAINS = {"id": [0.05, 0.06, 0.04], "ood": [0.03, -0.02, 0.00], "transfer": [-0.04, -0.05, -0.045]}
T_975_2 = 4.302653  # t quantile for a 95% interval over 3 seeds


def small_metrics() -> pd.DataFrame:
    """simclr, cf-simclr and the random encoder over 3 seeds at 5% and 100% of the labels, with every scanner and the
    rendered test set (long column names)."""
    rows = []
    for seed in range(3):
        for fraction in (0.05, 1.0):
            for key, (protocol, test_set) in {
                "id": ("linear", "id"),
                "ood": ("linear", "ood"),
                "transfer": ("transfer", "ood"),
            }.items():
                shifts = {"simclr": 0.0, "cf-simclr": GAINS[key][seed], "random": -0.1 + 0.01 * seed}
                for method, shift in shifts.items():
                    value = SIMCLR[key][seed] + shift
                    domains = ["all", *SCANNERS] if key == "id" else ["all"]
                    for domain in domains:
                        rows.append((method, seed, protocol, fraction, test_set, domain, "all", "auroc", value))
                    if key == "id":
                        rows += [
                            (method, seed, "linear", fraction, "rendered", d, "all", "auroc", value) for d in SCANNERS
                        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_run(root, metrics: pd.DataFrame):
    run = root / "run"
    complete_stage(run / "eval", "eval")
    complete_stage(run / "cf_quality", "cf_quality")
    metrics.to_csv(run / "eval" / "metrics.csv", index=False)
    pd.DataFrame(metric_seed_gains(metrics, "simclr"), columns=SEED_GAIN_COLUMNS).to_csv(
        run / "eval" / "seed_gains.csv", index=False
    )
    (run / "cf_quality" / "cf_quality.json").write_text(json.dumps(QUALITY))
    return run


def by_hand(gains: list[float]) -> str:
    """The verdict's cell text of a paired gain over 3 seeds, computed here."""
    diffs = np.array(gains)
    half = T_975_2 * diffs.std(ddof=1) / np.sqrt(3)
    low, high = diffs.mean() - half, diffs.mean() + half
    word = "supported" if low > 0 or high < 0 else "not resolved"
    return f"{diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}], {word} ({(diffs > 0).sum()}/3 seeds > 0)"


def sections(page: str) -> dict[str, str]:
    return dict(re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, re.S))


def test_the_first_section_is_the_verdict_in_words_with_its_numbers(tmp_path):
    run = write_run(tmp_path, small_metrics())
    page = run_report(run).read_text()
    titles = list(sections(page))
    assert titles[0] == "Verdict" and titles[1] == "Run"
    verdict = sections(page)["Verdict"].replace("&gt;", ">")
    assert "over simclr (the reference) at 5% of the labels" in verdict and "over 3 seeds" in verdict
    cf_line = next(line for line in re.findall(r"<li><b>(.*?)</li>", verdict) if line.startswith("cf-simclr"))
    cf_line = cf_line.replace("</b>", "", 1)
    assert cf_line == (
        "cf-simclr beats simclr on ID and trails simclr on OOD (direct transfer): "
        f"ID {by_hand(GAINS['id'])}; OOD (own labels) {by_hand(GAINS['ood'])}; "
        f"OOD (direct transfer) {by_hand(GAINS['transfer'])}."
    )
    assert "not resolved (1/3 seeds > 0)" in cf_line and "supported (3/3 seeds > 0)" in cf_line
    assert verdict.index("cf-simclr</b> beats") < verdict.index(
        "random (baseline)</b> trails simclr on ID, OOD (own labels) and OOD (direct transfer)"
    )
    summary = (run / "report" / "summary.md").read_text()
    assert re.findall(r"^## (.*)$", summary, re.M)[0] == "Verdict"
    assert "- **cf-simclr** " + cf_line.removeprefix("cf-simclr ") in summary


def test_one_seed_says_there_is_no_interval_and_what_to_run(tmp_path):
    metrics = small_metrics()
    run = write_run(tmp_path, metrics[metrics["seed"] == 0])
    verdict = sections(run_report(run).read_text())["Verdict"]
    assert "One seed: no interval" in verdict and "run `cfcl run benchmark`" in verdict
    assert "supported" not in verdict.replace("no gain here is supported or ruled out", "")
    assert (
        "<li><b>cf-simclr</b> minus simclr: ID +0.050; OOD (own labels) +0.030; OOD (direct transfer) -0.040 "
        "(one seed: no interval).</li>" in verdict
    )


def test_the_terminal_headline_fits_100_columns_and_keeps_every_column(tmp_path, capsys):
    run = write_run(tmp_path, small_metrics())
    print_headline(run)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "- cf-simclr beats simclr on ID" in out and "AUROC at 5% labels (mean ± std over 3 seeds)" in out
    for name, _, _ in figures.test_columns(small_metrics()):
        assert name in out
    assert "OOD (direct transfer)" in out


def test_counterfactual_quality_is_named_tables_without_python_reprs(tmp_path):
    run = write_run(tmp_path, small_metrics())
    quality = sections(run_report(run).read_text())["Counterfactuals"]
    assert not re.search(r"\[\{|\{'|\[\[|\['|\d[eE][-+]?\d", quality), (
        "a Python repr or an exponent in the quality section"
    )
    confusion = quality.split("Confusion matrix of the judge")[1].split("</table>")[0]
    header, *rows = re.findall(r"<tr.*?</tr>", confusion, re.S)
    assert re.findall(r"<th>(\w+)</th>", header) == ["major", "rare", "ood"]
    assert [re.search(r"<th>(\w+)</th>", row)[1] for row in rows] == ["major", "rare", "ood"]
    assert re.findall(r"<td>(\d+)</td>", rows[0]) == ["0", "29", "3"]
    assert "<th>major → rare</th>" in quality and "<td>0.906</td>" in quality  # the pair's judge accuracy, 3 digits
    assert "&lt; 0.0001" in quality  # its reversibility, 1.2e-09
    assert "Counterfactual quality against its pass marks: 3 of 3 pass marks met" in quality


def test_figure_captions_say_what_is_shown_and_match_it(tmp_path):
    metrics = small_metrics()
    run = write_run(tmp_path, metrics[metrics["seed"] == 0])
    page = run_report(run).read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions and not any(".png" in c for c in captions)
    assert any("one seed: single values, no spread" in c for c in captions)


def drawn(figure):
    FigureCanvasAgg(figure).draw()
    return figure


def test_gain_figure_names_test_sets_as_the_tables_do_and_they_do_not_overlap():
    metrics = small_metrics()
    gains = metrics[(metrics["method"] == "cf-simclr") & (metrics["seed"] == 0)]
    gains = gains.assign(reference="simclr", gain=0.01, ci_low=-0.01, ci_high=0.03)
    figure = drawn(figures.gain_figure(gains))
    linear, transfer = figure.axes[0], figure.axes[2]
    labels = [t.get_text().replace("\n", " ") for t in linear.get_xticklabels()]
    assert labels == [name for name, _, _ in figures.test_columns(metrics)]
    assert [t.get_text().replace("\n", " ") for t in transfer.get_xticklabels()] == ["OOD (direct transfer)"]
    boxes = [t.get_window_extent() for t in linear.get_xticklabels()]
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), "tick labels overlap"


@pytest.mark.parametrize("seeds", [1, 3])
def test_interval_bars_are_drawn_only_where_there_is_an_interval(seeds):
    table = pd.DataFrame(
        {
            "method": ["simclr", "cf-simclr"] * seeds,
            "seed": np.repeat(range(seeds), 2),
            "balanced_accuracy": np.linspace(0.5, 0.9, 2 * seeds),
            "chance": 1 / 3,
            "knn_purity": np.linspace(0.1, 0.4, 2 * seeds),
            "silhouette": np.linspace(0.0, 0.2, 2 * seeds),
            "cf_invariance": np.nan,
        }
    )
    ax = figures.predictability_figure(table).axes[0]
    assert bool([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == (seeds > 1)
    metrics = small_metrics()
    curves = figures.auroc_vs_fraction(metrics[metrics["seed"] < seeds]).axes[0]
    assert {c.has_yerr for c in curves.containers if isinstance(c, ErrorbarContainer)} == {seeds > 1}
