"""The report's counterfactual-quality tables: a ``cf_quality.json`` as named tables of numbers for people.

The file's layout is :func:`cfcl.counterfactual.quality.summary.summarise` plus what the quality stage
records about its inputs; every number is shown to 3 significant digits (:func:`~cfcl.report.summary.readable`).
"""

from __future__ import annotations

import pandas as pd

from cfcl.report.summary import readable

Table = tuple[str, pd.DataFrame, str]  # caption, table, name of its index column

PAIR_COLUMNS = {
    "n": "images",
    "reversibility": "reversibility MAE",
    "mae_cf": "MAE to the true counterfactual",
    "mae_identity": "MAE of the unchanged image",
    "ratio": "MAE ratio",
}
SETUP = {
    "domains": "scanners of the store",
    "evaluated_domains": "scanners evaluated",
    "rare_domain": "rarest scanner",
    "intervened": "intervened parents (values)",
    "rare_cell": "rarest cell",
    "true_cf": "true counterfactuals",
    "splits": "splits",
    "n_images": "images per scanner",
    "generator": "generator",
    "judge": "judge",
}
MEASURED = ("targets", "passed", "pairs", "effectiveness", "composition", "reversibility", "truth")


def parents_of(data: dict) -> list[str]:
    """The intervened parents of a ``cf_quality.json`` (``domain`` for the scanner alone, which names none)."""
    return list(data.get("intervened") or {"domain": None})


def _word(parents: list[str]) -> str:
    """How the tables name an intervened value: a scanner, or the parents' names (``sex``, ``domain and sex``)."""
    return "scanner" if parents == ["domain"] else " and ".join(parents)


def _rare(data: dict) -> str:
    return str(data.get("rare_domain") or data.get("rare_cell") or "?")


def target_name(name: str, data: dict) -> str:
    """A pass mark of ``targets`` in words."""
    parents, word, rare = parents_of(data), _word(parents_of(data)), _rare(data)
    judged = name.removeprefix("effectiveness").lstrip("_") or (parents[0] if len(parents) == 1 else "")
    if name.startswith("effectiveness"):
        return f"effectiveness: the judge finds the intended {_word([judged])} (balanced accuracy)"
    names = {
        "mae_ratio": "MAE to the true counterfactual / MAE of the unchanged image",
        "mae_ratio_rare_as_source": f"the same ratio, from the rarest {word} ({rare})",
        "mae_ratio_rare_as_target": f"the same ratio, to the rarest {word} ({rare})",
        "reversibility": "reversibility: MAE of an image changed and changed back",
    }
    return names.get(name, name)


def pass_marks(data: dict) -> pd.DataFrame:
    """One row per target of ``cf_quality.json``: measured value, pass mark (with its direction) and whether it is
    met."""
    rows = {}
    for name, target in (data.get("targets") or {}).items():
        direction = "≥" if name.startswith("effectiveness") else "≤"
        rows[target_name(name, data)] = {
            "measured": readable(target.get("value")),
            "pass mark": f"{direction} {readable(target.get('threshold'))}",
            "met": readable(bool(target.get("pass"))),
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["measured", "pass mark", "met"])


def pass_caption(data: dict, what: str) -> str:
    targets = data.get("targets") or {}
    met = sum(bool(t.get("pass")) for t in targets.values())
    return f"{what}: {met} of {len(targets)} pass marks met"


def pair_table(pairs: list[dict]) -> pd.DataFrame:
    """Per source -> target pair: images, each judge's accuracy and the errors, named (codes dropped)."""
    frame = pd.DataFrame(pairs)
    frame.index = [str(pair).replace("->", " → ") for pair in frame.pop("pair")]
    frame = frame.drop(columns=[c for c in ("source", "target") if c in frame])
    judged = {
        c: "judge accuracy" + (f" ({c.removeprefix('judge_accuracy_')})" if c != "judge_accuracy" else "")
        for c in frame
        if c.startswith("judge_accuracy")
    }
    ordered = [c for c in ("n", *judged, "reversibility", "mae_cf", "mae_identity", "ratio") if c in frame]
    frame = frame[ordered + [c for c in frame if c not in ordered]].rename(columns={**PAIR_COLUMNS, **judged})
    return frame.map(readable)


def judge_tables(effectiveness: dict, word: str, parent: str = "") -> list[Table]:
    """The judge on the counterfactuals of one parent: AUROC per intended value and the confusion matrix."""
    of = f" of {parent}" if parent else ""
    auroc = pd.DataFrame(
        {"judge AUROC": [readable(v) for v in effectiveness["auroc"].values()]}, index=list(effectiveness["auroc"])
    )
    summary = (
        f"The judge{of} on the counterfactuals: balanced accuracy {readable(effectiveness['balanced_accuracy'])}, "
        f"macro AUROC {readable(effectiveness['auroc_macro'])}; AUROC of each intended {word}"
    )
    labels = effectiveness["confusion"]["labels"]
    confusion = pd.DataFrame(effectiveness["confusion"]["matrix"], index=labels, columns=labels).map(readable)
    return [
        (summary, auroc, f"intended {word}"),
        (
            f"Confusion matrix of the judge{of} on the counterfactuals: rows the intended {word}, columns the judge's "
            "call (images)",
            confusion,
            "intended (rows) / judged (columns)",
        ),
    ]


def error_table(data: dict) -> pd.DataFrame | None:
    """Reversibility and, with true counterfactuals, the errors to them: over all pairs, from and to the rarest
    value."""
    reversibility, truth = data.get("reversibility"), data.get("truth")
    if not reversibility and not truth:
        return None
    word, rare = _word(parents_of(data)), _rare(data)
    rows = {
        "all pairs": "",
        f"from the rarest {word} ({rare})": "rare_as_source",
        f"to the rarest {word} ({rare})": "rare_as_target",
    }
    table = {}
    for label, key in rows.items():
        cells = {}
        if reversibility:
            cells["reversibility MAE"] = reversibility[key or "mae"]
        if truth:
            part = truth[key] if key else truth
            cells |= {PAIR_COLUMNS[k]: part[k] for k in ("mae_cf", "mae_identity", "ratio")}
        table[label] = cells
    return pd.DataFrame.from_dict(table, orient="index").map(readable)


def composition_table(composition: dict) -> pd.DataFrame:
    """MAE of images after repeated null interventions (nothing changed): all images, and per source after the last."""
    steps = sorted((k for k in composition if k.startswith("mae_")), key=lambda k: int(k.removeprefix("mae_")))
    columns = {k: f"MAE after {k.removeprefix('mae_')} null intervention(s)" for k in steps}
    rows = {"all images": {columns[k]: composition[k] for k in steps}}
    for source, value in (composition.get("per_source") or {}).items():
        rows[f"from {source}"] = {columns[steps[-1]]: value}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns.values())).map(readable)


def setup_table(data: dict) -> pd.DataFrame:
    """What was measured with what: every field that is not a measurement, named."""
    rows = {SETUP.get(k, k): readable(v) for k, v in data.items() if k not in MEASURED}
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))


def quality_tables(data: dict) -> list[Table]:
    """Every table of one ``cf_quality.json``, pass marks first."""
    parents = parents_of(data)
    word = _word(parents)
    tables: list[Table] = []
    if data.get("targets"):
        tables.append(
            (pass_caption(data, "Counterfactual quality against its pass marks"), pass_marks(data), "measure")
        )
    if data.get("pairs"):
        tables.append(
            (
                f"Per source → target {word}: images, judge accuracy and mean absolute errors (pixels in [0, 1])",
                pair_table(data["pairs"]),
                "pair",
            )
        )
    effectiveness = data.get("effectiveness") or {}
    if "confusion" in effectiveness:
        tables += judge_tables(effectiveness, word)
    else:  # several intervened parents: one judge each
        for parent, judged in effectiveness.items():
            tables += judge_tables(judged, _word([parent]), parent)
    errors = error_table(data)
    if errors is not None:
        tables.append(
            (
                "Mean absolute errors over the pairs: the image changed and changed back (reversibility) and, "
                "where the true counterfactuals are known, against them",
                errors,
                "pairs",
            )
        )
    if data.get("composition"):
        tables.append(
            (
                "Composition: how far an image drifts when the generator is asked to change nothing, "
                "once and repeatedly (MAE, pixels in [0, 1])",
                composition_table(data["composition"]),
                "images",
            )
        )
    setup = setup_table(data)
    if len(setup):
        tables.append(("What was measured, with what", setup, "field"))
    return tables
