"""``cfcl report RUN_DIR``: gather what a run folder holds into ``index.html``, ``summary.md`` and figures.

A partial run gets a partial report: every section shows what exists and names what is absent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from cfcl import atomic, layout
from cfcl.evaluation.results import (
    COLUMNS,
    GAIN_COLUMNS,
    MEAN_AUROC,
    PREDICTABILITY_COLUMNS,
    RESOLVED_GAIN,
    ROBUSTNESS_GAP,
    SEED_GAIN_COLUMNS,
    SUBGROUP_GAP_COLUMNS,
    VARIANCE_COLUMNS,
    auroc_metric,
)
from cfcl.plotting import png_bytes
from cfcl.report import figures
from cfcl.report.html import Block, Section, render_page
from cfcl.report.quality import pass_caption, pass_marks, quality_tables
from cfcl.report.summary import (
    ReportError,
    finding_table,
    gain_caption,
    gap_caption,
    headline_caption,
    headline_fractions,
    headline_gain_table,
    headline_table,
    invariance_gain_table,
    invariance_table,
    markdown_table,
    readable,
    subgroup_gap_table,
    verdict,
)
from cfcl.stage import CONFIG, MANIFEST, read_manifest

EXPECTED_STAGES = (layout.DATA, layout.CF_MODEL, layout.CF_STORE, layout.CF_QUALITY, layout.PRETRAIN, layout.EVAL)
COUNTERFACTUAL_GRID = "counterfactual_grid.png"  # of cf_model and cf_finetune
GRID_LAYOUT = (
    "one column per training image; rows: the image, the generator's reconstruction of it (its mean), "
    "then the image moved to each scanner (do(scanner))"
)
# What each figure of the counterfactual stages shows, by (stage folder, file name).
STAGE_FIGURES = {
    (layout.CF_QUALITY, layout.CF_GRID): (
        "Counterfactuals of the fine-tuned generator on test images, one row per image (named by its own scanner); "
        "columns: the image, its counterfactual on each scanner (do(scanner)), then the true counterfactuals where "
        "the data has them"
    ),
    (layout.CF_FINETUNE, COUNTERFACTUAL_GRID): f"The generator after counterfactual fine-tuning: {GRID_LAYOUT}",
    (layout.CF_FINETUNE, layout.TRAINING_CURVE): (
        "Counterfactual fine-tuning per step: the guide's cross-entropy and accuracy on the counterfactuals, the "
        "negative ELBO and the multipliers that hold it and the round trip in bounds"
    ),
    (layout.CF_MODEL, COUNTERFACTUAL_GRID): f"The generator before fine-tuning: {GRID_LAYOUT}",
    (layout.CF_MODEL, "prior_samples.png"): "The generator before fine-tuning: random images drawn from its prior",
    (layout.CF_MODEL, layout.TRAINING_CURVE): (
        "Training the generator: negative ELBO and its KL term per step, and the validation negative ELBO"
    ),
}
CF_INVARIANCE_WORDS = (
    "; cf_invariance: mean feature distance of an ID test image to its true counterfactuals on the "
    "other scanners over the median distance between different patients (0 invariant, 1 as far as "
    "another patient)"
)
STAGE_WORDS = {
    layout.CF_QUALITY: "Counterfactual quality",
    layout.CF_FINETUNE: "The generator after fine-tuning",
    layout.CF_MODEL: "The generator before fine-tuning",
}


@dataclass
class Report:
    """Sections for the HTML page, markdown lines, and the figures to write under ``figures/``."""

    sections: list[Section] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)
    pngs: dict[str, bytes] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)

    def section(self, title: str) -> Section:
        self.sections.append(Section(title))
        self.markdown.append(f"\n## {title}\n")
        return self.sections[-1]

    def figure(self, section: Section, name: str, png: bytes, caption: str) -> None:
        self.pngs[name] = png
        section.blocks.append(Block("image", png, caption))
        self.markdown.append(f"![{caption}]({layout.FIGURES}/{name})\n")

    def table(self, section: Section, frame: pd.DataFrame, caption: str = "", index_name: str = "") -> None:
        section.blocks.append(Block("table", frame, caption))
        self.markdown.append((f"**{caption}**\n\n" if caption else "") + markdown_table(frame, index_name) + "\n")

    def text(self, section: Section, text: str) -> None:
        section.blocks.append(Block("text", text))
        self.markdown.append(f"{text}\n")

    def items(self, section: Section, items: list[tuple[str, str]]) -> None:
        """A bulleted list of ``(lead, text)``, the lead in bold."""
        section.blocks.append(Block("list", items))
        self.markdown.append("".join(f"- **{who}** {what}\n" for who, what in items))

    def missing(self, section: Section, what: str) -> None:
        self.absent.append(what)
        section.blocks.append(Block("absent", f"absent: {what}"))
        self.markdown.append(f"*absent: {what}*\n")


def stage_folders(run_dir: Path) -> list[Path]:
    """Every folder of the run holding a stage manifest (``pretrain/<method>-s<seed>`` included)."""
    folders = [p for p in sorted(run_dir.iterdir()) if p.is_dir() and (p / MANIFEST).is_file()]
    pretrain = layout.RunLayout(run_dir).pretrain
    if pretrain.is_dir():
        folders += [p for p in sorted(pretrain.iterdir()) if p.is_dir() and (p / MANIFEST).is_file()]
    return folders


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ReportError(f"{path} is not a readable CSV table ({exc})") from None
    lacking = [c for c in columns if c not in frame.columns]
    if lacking:
        raise ReportError(f"{path} lacks column(s) {', '.join(lacking)}; `cfcl evaluate --force` writes it anew")
    return frame


def optional_csv(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """The table at ``path``, or None when the file is absent or holds no rows."""
    if not path.is_file() or not path.read_text().strip():
        return None
    frame = read_csv(path, columns)
    return None if frame.empty else frame


def png_file(path: Path) -> bytes | None:
    """The bytes of a PNG that decodes, else None."""
    try:
        with Image.open(path) as image:
            image.verify()
            if image.format != "PNG":
                return None
    except (OSError, UnidentifiedImageError):
        return None
    return path.read_bytes()


def run_auroc_metric(run_dir: Path) -> str:
    """The AUROC the report leads with: :func:`~cfcl.evaluation.results.auroc_metric` of the run's ``metrics.csv``
    (``mean_auroc`` for a multi-label store), ``auroc`` without one."""
    metrics = optional_csv(layout.RunLayout(run_dir).eval / layout.METRICS, COLUMNS)
    return auroc_metric(metrics) if metrics is not None else "auroc"


def _verdict(report: Report, run_dir: Path, metric: str) -> None:
    """The first section: which method beats the reference, by how much and how sure, in words."""
    section = report.section("Verdict")
    path = layout.RunLayout(run_dir).eval / layout.SEED_GAINS
    seed_gains = optional_csv(path, SEED_GAIN_COLUMNS)
    found = verdict(seed_gains, metric) if seed_gains is not None else None
    if found is None:
        report.text(
            section,
            f"No verdict: {path} holds no {figures.metric_words(metric)} gain over the reference method (run "
            "`cfcl evaluate` with the reference method among the encoders).",
        )
        return
    report.text(section, found.lead)
    report.items(section, found.lines)
    report.text(section, "Every test set, scanner and label fraction: the headline results below.")


def _results(report: Report, run_dir: Path, metric: str) -> None:
    eval_dir = layout.RunLayout(run_dir).eval
    metrics_path = eval_dir / layout.METRICS
    section = report.section("Headline results")
    if not metrics_path.is_file():
        report.missing(section, f"{metrics_path} (run `cfcl evaluate`)")
        return
    metrics = read_csv(metrics_path, COLUMNS)
    if metrics.empty:
        report.missing(section, f"rows in {metrics_path} (every evaluation was skipped; see notes)")
        return
    seed_gains_path = eval_dir / layout.SEED_GAINS
    seed_gains = optional_csv(seed_gains_path, SEED_GAIN_COLUMNS)
    words = figures.metric_words(metric)
    for fraction in headline_fractions(metrics):
        report.table(
            section,
            headline_table(metrics, fraction, metric),
            headline_caption(metrics, fraction, words),
            "method (protocol)",
        )
        if seed_gains is not None:
            report.table(
                section,
                headline_gain_table(seed_gains, fraction, metric),
                gain_caption(seed_gains, fraction, metric, f"{words} gain over {{reference}}"),
                "method (protocol)",
            )
    if seed_gains is None:
        report.missing(section, f"seed-level gains in {seed_gains_path} (the reference method was not evaluated)")
    if metric == MEAN_AUROC:
        _findings(report, metrics)
    _robustness(report, metrics, seed_gains)
    curves = report.section("AUROC against label fraction")
    n_seeds = metrics["seed"].nunique()
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed: single values, no spread"
    dashed = "; dashed: fine-tuning" if (metrics["protocol"] == "finetune").any() else ""
    report.figure(
        curves,
        "auroc_vs_fraction.png",
        png_bytes(figures.auroc_vs_fraction(metrics, metric)),
        f"{words} against the fraction of training labels on each test set ({spread}{dashed})",
    )
    gains_section = report.section("Gain over the reference method per domain, test-set bootstrap")
    gains_path = eval_dir / layout.GAINS
    gains = optional_csv(gains_path, GAIN_COLUMNS)
    if gains is None:
        report.missing(gains_section, f"gains in {gains_path} (the reference method was not evaluated)")
    else:
        report.figure(
            gains_section,
            "gain_over_reference.png",
            png_bytes(figures.gain_figure(gains, figures.method_colours(metrics["method"]))),
            f"Seed-averaged {words} gain over the reference per test set, with its paired-bootstrap interval over "
            "test images (not over seeds)",
        )
        report.table(
            gains_section,
            bootstrap_gain_table(gains),
            f"{words} gain over the reference; interval: paired bootstrap of the test images, which says how much "
            "the test set alone moves the seed-averaged gain. Whether a gain holds across seeds: the verdict "
            "and the headline gain tables",
            "method",
        )
    notes = eval_dir / layout.NOTES
    if notes.is_file() and notes.read_text().strip():
        section.blocks.append(Block("pre", notes.read_text(), "evaluation notes (skipped settings)"))
        report.markdown.append("Evaluation notes:\n\n```\n" + notes.read_text() + "```\n")


def _findings(report: Report, metrics: pd.DataFrame) -> None:
    """A multi-label store's AUROC of each finding beside their mean, per headline label fraction."""
    section = report.section("AUROC per finding")
    for fraction in headline_fractions(metrics):
        report.table(
            section,
            finding_table(metrics, fraction),
            headline_caption(
                metrics, fraction, "AUROC of each finding (on the test images where it is known) and their mean"
            ),
            "method (protocol, test set)",
        )


def _robustness(report: Report, metrics: pd.DataFrame, seed_gains: pd.DataFrame | None) -> None:
    """Per scanner, how much AUROC the ID probe leaves below the scanner's ceiling (synthetic benchmark only)."""
    gaps = metrics[metrics["metric"] == ROBUSTNESS_GAP]
    if gaps.empty:
        return
    section = report.section("Robustness gap per scanner")
    for fraction in headline_fractions(gaps):
        report.table(
            section,
            headline_table(gaps, fraction, ROBUSTNESS_GAP),
            f"{headline_caption(gaps, fraction, 'Robustness gap')}: on the ID test patients as each scanner "
            "renders them, the AUROC of the scanner's ceiling (a probe trained on the labelled training patients "
            "as that scanner renders them) minus the ID probe's; 0: the ID probe loses nothing on that scanner",
            "method (protocol)",
        )
        if seed_gains is not None and (seed_gains["metric"] == ROBUSTNESS_GAP).any():
            caption = gain_caption(seed_gains, fraction, ROBUSTNESS_GAP, "Robustness gap minus {reference}'s")
            report.table(
                section,
                headline_gain_table(seed_gains, fraction, ROBUSTNESS_GAP),
                f"{caption} (negative: a smaller gap than the reference's)",
                "method (protocol)",
            )


def bootstrap_gain_table(gains: pd.DataFrame) -> pd.DataFrame:
    """``gains.csv`` for people: test sets named as in the headline tables, gains and intervals to 3 decimals."""
    names = {
        (protocol, test_set, domain): name
        for protocol, part in gains.groupby("protocol")
        for name, test_set, domain in figures.panel_columns(part, protocol)
    }
    return pd.DataFrame(
        {
            "protocol": gains["protocol"].to_numpy(),
            "labels": [f"{f * 100:g}%" for f in gains["label_fraction"]],
            "test set": [
                names.get((r.protocol, r.test_set, r.domain), f"{r.test_set} {r.domain}") for r in gains.itertuples()
            ],
            "seeds": gains["n_seeds"].to_numpy(),
            "gain": gains["gain"].map("{:+.3f}".format).to_numpy(),
            "interval": [f"[{low:+.3f}, {high:+.3f}]" for low, high in zip(gains["ci_low"], gains["ci_high"])],
        },
        index=gains["method"].to_numpy(),
    )


def _subgroups(report: Report, run_dir: Path, metric: str) -> None:
    """Per subgroup column (sex), each method's AUROC gap between its values: tables and a figure."""
    path = layout.RunLayout(run_dir).eval / layout.SUBGROUP_GAPS
    section = report.section("Subgroup gaps")
    if not path.is_file():
        report.missing(section, f"{path} (run `cfcl evaluate`)")
        return
    gaps = optional_csv(path, SUBGROUP_GAP_COLUMNS)
    auroc = gaps[gaps["metric"] == metric] if gaps is not None else None
    if auroc is None or auroc.empty:
        report.text(
            section,
            "No subgroup gaps: the store has no subgroup column with two values, or too few test "
            "images per subgroup (the evaluation notes say which).",
        )
        return
    colours = figures.method_colours(auroc["method"])
    for subgroup, part in auroc.groupby("subgroup", sort=True):
        for fraction in headline_fractions(part):
            report.table(
                section,
                subgroup_gap_table(part, fraction, subgroup, metric),
                gap_caption(part, fraction, subgroup, metric),
                "method (protocol)",
            )
        what, level = (
            f"{figures.metric_words(metric)} {subgroup} minus {part['reference'].iloc[0]}",
            float(part["level"].iloc[0]) * 100,
        )
        name = "subgroup_gap_" + re.sub(r"[^A-Za-z0-9]+", "_", subgroup) + ".png"
        report.figure(
            section,
            name,
            png_bytes(figures.gain_figure(part, colours, "gap", what)),
            f"{what} per method and test set: mean and {level:g}% t-interval over seeds (a point alone: one seed)",
        )


def _variance(report: Report, run_dir: Path, metric: str) -> None:
    """Where the spread of each AUROC gain at the lowest label fraction comes from (``variance_components.csv``),
    on each test set and its scanners."""
    section = report.section("Where the spread of a gain comes from")
    path = layout.RunLayout(run_dir).eval / layout.VARIANCE
    if not path.is_file():
        report.missing(section, f"{path} (run `cfcl evaluate`)")
        return
    table = optional_csv(path, VARIANCE_COLUMNS)
    if table is None:
        report.text(section, f"No gains to break down: {path} holds none (the reference method was not evaluated).")
        return
    lowest = table[table["label_fraction"] == table["label_fraction"].min()]
    where = lowest["test_set"].where(lowest["domain"] == "all", lowest["test_set"] + " " + lowest["domain"])
    shown = lowest.assign(method=lowest["method"] + " (" + lowest["protocol"] + ", " + where + ")")
    columns = [
        "n_seeds",
        "n_draws",
        "sd_seed",
        "sd_draw",
        "sd_test",
        "half_width",
        "half_width_10_seeds",
        "seeds_needed",
    ]
    frame = shown.set_index("method")[columns].map(readable)
    report.table(
        section,
        frame,
        f"{figures.metric_words(metric)} gain over {lowest['reference'].iloc[0]} at "
        f"{lowest['label_fraction'].iloc[0]:g} of the labels, "
        "on each test set and each of its scanners: standard deviation of one seed's gain from the pretraining "
        "seed and from the label draw, the test-image standard error of the averaged gain (shared by every "
        "seed), the 95% half-width over the seeds measured and projected for 10 seeds, and the fewest seeds "
        f"(of as many draws) whose projected half-width is at most {RESOLVED_GAIN:g}",
        "method (protocol, test set)",
    )


def _embeddings(report: Report, run_dir: Path) -> None:
    eval_dir = layout.RunLayout(run_dir).eval
    section = report.section("Domain invariance of the embeddings")
    path = eval_dir / layout.PREDICTABILITY
    table = optional_csv(path, PREDICTABILITY_COLUMNS)
    if table is None:
        report.missing(section, f"{path} (run `cfcl evaluate` with embeddings enabled)")
    else:
        n_seeds = int(table.groupby("method")["seed"].nunique().max())
        spread = "mean and 95% t-interval over seeds" if n_seeds > 1 else "one seed: single values, no interval"
        counterfactual = "cf_invariance" in figures.measured(table)
        report.figure(
            section,
            "domain_predictability.png",
            png_bytes(figures.predictability_figure(table)),
            "Domain predictability (balanced accuracy of a linear classifier on PCA-16 features, 5-fold; "
            "dashed: chance) and clustering by domain (k-NN purity relative to chance, silhouette)"
            f"{', counterfactual invariance' if counterfactual else ''}: {spread}",
        )
        report.table(
            section,
            invariance_table(table),
            f"Domain invariance, mean [95% t-interval over seeds]; lower is more invariant. knn_purity "
            f"(k = {int(table['knn_k'].iloc[0])}): "
            "share of nearest neighbours from the same domain relative to chance (0 mixed, 1 clustered); "
            f"silhouette by domain (0 mixed, 1 separate){CF_INVARIANCE_WORDS if counterfactual else ''}",
            "method",
        )
        seed_gains = optional_csv(layout.RunLayout(run_dir).eval / layout.SEED_GAINS, SEED_GAIN_COLUMNS)
        if seed_gains is not None and (seed_gains["protocol"] == "embedding").any():
            reference = ", ".join(sorted(set(seed_gains["reference"])))
            report.table(
                section,
                invariance_gain_table(seed_gains),
                f"Domain invariance minus {reference}'s, paired by seed (negative: clusters less by domain)",
                "method",
            )
    maps = sorted(eval_dir.glob(layout.tsne_png("*"))) if eval_dir.is_dir() else []
    if not maps:
        report.missing(section, f"t-SNE maps ({layout.tsne_png('<method>')}) in {eval_dir}")
    for path in maps:
        method = path.stem.removeprefix("tsne_")
        _embed_png(report, section, path, path.name, f"t-SNE of {method} features, coloured by domain and by label")


def _embed_png(report: Report, section: Section, path: Path, name: str, caption: str) -> None:
    """A figure a stage wrote, or a note that it is absent or unreadable."""
    png = png_file(path) if path.is_file() else None
    if png is None:
        report.missing(section, f"a readable PNG at {path}")
    else:
        report.figure(section, name, png, caption)


def _quality_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ReportError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} must hold a JSON object of quality sections")
    return data


def _counterfactuals(report: Report, run_dir: Path) -> None:
    section = report.section("Counterfactuals")
    quality = layout.RunLayout(run_dir).stage(layout.CF_QUALITY)
    path = quality / layout.CF_QUALITY_JSON
    if path.is_file():
        try:
            tables = quality_tables(_quality_json(path))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReportError(
                f"{path} is not a cf_quality.json as `cfcl cf evaluate` writes it ({type(exc).__name__}: {exc})"
            ) from None
        for caption, frame, index_name in tables:
            report.table(section, frame, caption, index_name)
    else:
        report.missing(section, f"{path} (run `cfcl cf evaluate`)")
    others = run_dir.glob(f"{layout.CF_QUALITY}_*/{layout.CF_QUALITY_JSON}")
    for other in sorted(p for p in others if p.parent.name != layout.CF_QUALITY_BASE):  # other parents (cf_quality_sex)
        data = _quality_json(other)
        parents = ", ".join(data.get("intervened") or [other.parent.name])
        report.table(
            section, pass_marks(data), pass_caption(data, f"Quality of the counterfactuals of {parents}"), "measure"
        )
    folders = (quality, *(layout.RunLayout(run_dir).stage(name) for name in (layout.CF_FINETUNE, layout.CF_MODEL)))
    grids = [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.png"))]
    if not grids:
        report.missing(section, f"counterfactual grids (*.png) in {', '.join(str(f) for f in folders)}")
    for grid in grids:
        stage = grid.parent.name
        caption = STAGE_FIGURES.get((stage, grid.name), f"{STAGE_WORDS[stage]}: {grid.stem.replace('_', ' ')}")
        _embed_png(report, section, grid, f"{stage}_{grid.name}", caption)


def _pretraining(report: Report, run_dir: Path) -> None:
    section = report.section("Pretraining")
    pretrain = layout.RunLayout(run_dir).pretrain
    folders = sorted(p for p in pretrain.glob("*") if p.is_dir()) if pretrain.is_dir() else []
    if not folders:
        report.missing(section, f"pretrained encoders in {pretrain} (run `cfcl pretrain`)")
    for folder in folders:
        run = re.fullmatch(r"(.+)-s(\d+)", folder.name)
        what = f"{run[1]}, seed {run[2]}" if run else folder.name
        _embed_png(
            report,
            section,
            folder / layout.LOSS_CURVE,
            f"loss_{folder.name}.png",
            f"Pretraining {what}: training loss per step and per epoch",
        )


def _stages(report: Report, run_dir: Path, folders: list[Path]) -> None:
    section = report.section("Stages, timings and configs")
    rows = {}
    for folder in folders:
        manifest = read_manifest(folder) or {}
        total = (manifest.get("timings") or {}).get("total")
        rows[str(folder.relative_to(run_dir))] = {
            "stage": manifest.get("stage", "?"),
            "status": manifest.get("status", "unreadable manifest"),
            "time (s)": f"{total:.1f}" if isinstance(total, (int, float)) else "–",
            "finished": manifest.get("finished", "–"),
        }
    report.table(section, pd.DataFrame.from_dict(rows, orient="index"), "Stage folders", "folder")
    present = {f.relative_to(run_dir).parts[0] for f in folders}
    for name in EXPECTED_STAGES:
        if name not in present:
            report.missing(section, f"stage output {run_dir / name}")
    for folder in folders:
        if (folder / CONFIG).is_file():
            text = (folder / CONFIG).read_text()
            section.blocks.append(Block("pre", text, f"{folder.relative_to(run_dir)}/{CONFIG}"))
            report.markdown.append(
                f"<details><summary>{folder.relative_to(run_dir)}/{CONFIG}</summary>\n\n```yaml\n{text}```\n</details>\n"
            )


def build_report(run_dir: Path) -> Report:
    """Everything the report shows, with what is absent noted in place."""
    folders = stage_folders(run_dir)
    if not folders:
        raise ReportError(
            f"run folder {run_dir} holds no stage outputs (expected some of {', '.join(EXPECTED_STAGES)} with "
            f"{MANIFEST})"
        )
    report = Report()
    metric = run_auroc_metric(run_dir)
    _verdict(report, run_dir, metric)
    _results(report, run_dir, metric)
    _subgroups(report, run_dir, metric)
    _variance(report, run_dir, metric)
    _embeddings(report, run_dir)
    _counterfactuals(report, run_dir)
    _pretraining(report, run_dir)
    _stages(report, run_dir, folders)
    return report


def run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``index.html``, ``summary.md`` and ``figures/`` for ``run_dir``; returns the index.html path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run folder {run_dir} does not exist")
    out = Path(out) if out is not None else layout.RunLayout(run_dir).report
    report = build_report(run_dir)
    title = f"cfcl report: {run_dir.resolve().name}"
    status = (
        "Complete run." if not report.absent else f"Partial run: {len(report.absent)} part(s) absent, marked in place."
    )
    verdict_section, *others = report.sections  # the verdict first, then where the run is and whether it is whole
    sections = [verdict_section, Section("Run", [Block("text", f"Run folder: {run_dir.resolve()}. {status}")]), *others]
    for name, png in report.pngs.items():
        atomic.write_bytes(out / layout.FIGURES / name, png)
    summary = [f"# {title}\n", f"Run folder: `{run_dir.resolve()}`. {status}\n"]
    if report.absent:
        summary.append("Absent:\n\n" + "".join(f"- {a}\n" for a in report.absent))
    atomic.write_text(out / layout.SUMMARY, "\n".join(summary + report.markdown))
    index = out / layout.INDEX
    atomic.write_text(index, render_page(title, sections))
    print(f"report: {index} ({len(report.pngs)} figures{', partial run' if report.absent else ''})")
    return index
