"""Has the benchmark headroom for counterfactuals? Its acquisition design's gates, on the VALIDATION split.

Per development seed a store is drawn with the given synth config (training split, an enlarged
validation split, no test or OOD image, so none is read); every validation patient is seen as
every scanner renders it (the true counterfactuals: same patient, pose, lesion and noise).

  (a) information kept: ceiling_s = a supervised small CNN trained on every training patient as
      scanner s renders them, scored on the validation patients as s renders them; each scanner's
      ceiling lies within 0.02 AUROC of the majority scanner's (mean over seeds).
With ``--pretrain``, SimCLR (demo augmentations), SimCLR with the strongest intensity and blur
augmentations the benchmark offers (``acquisition``) and ``oracle`` (CF-SimCLR with the true
counterfactuals) are pretrained per seed with the product's pretrain stage, and linear probes
(the evaluation's probe and labelled subsets, ``--fraction`` of the labels, ``--draws`` draws)
measure, per encoder and scanner s, the robustness gap
  G_s = AUROC(probe fitted on the labelled patients as s renders them, on validation as s renders it)
      - AUROC(the ID-mix probe: fitted on the labelled images as acquired, on validation as s renders it)
  (b) headroom: SimCLR's G >= 0.05 on the rare ID scanner and on the OOD scanner;
  (c) not an augmentation: SimCLR-acquisition's G >= 0.05 there too;
  (d) positive control: oracle closes >= 50 % of SimCLR's G there, (AUROC_oracle - AUROC_simclr) / G_simclr
      of the ID-mix probes, with the 95 % t-interval over seeds of that gain above 0.
Each gate prints its measured value, threshold and PASS / FAIL; one JSON line follows with every number.

    python benchmarks/calibrate_headroom.py [--synth FILE_OR_PRESET] [--set KEY=VALUE ...] [--seeds 0 1] [--pretrain]
        [--work DIR] [--n-val 1200] [--epochs 8] [--pretrain-epochs 10] [--fraction 0.05] [--draws 5]
        [--recipe pretrain_benchmark] [--pretrain-set KEY=VALUE ...]
    python benchmarks/calibrate_headroom.py --data DIR   # gate (a) on an existing development store
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from calibrate_synth import as_tensor, auroc, log, predict, train_classifier

from cfcl.atomic import write_json
from cfcl.config import build_config, config_hash
from cfcl.data.store import ImageStore
from cfcl.data.synthetic.config import SynthConfig
from cfcl.data.synthetic.generate import generate
from cfcl.evaluation.metrics import seed_interval
from cfcl.layout import true_cf
from cfcl.presets import resolve_config_path

KEPT = 0.02  # (a) largest ceiling deficit of a scanner below the majority scanner's
HEADROOM = 0.05  # (b), (c) smallest robustness gap on the rare and the OOD scanner
CLOSED = 0.5  # (d) smallest fraction of SimCLR's gap the oracle closes
# The encoders pretrained with --pretrain: name -> (method, augmentation preset).
ENCODERS = {"simclr": ("simclr", "demo"), "simclr-acquisition": ("simclr", "acquisition"), "oracle": ("oracle", "demo")}


class Gate(NamedTuple):
    name: str
    value: float | None  # None: not measurable (the note says why)
    threshold: float
    at_least: bool  # the value must be >= the threshold (else <=)
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def line(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:+.3f}"
        sign = ">=" if self.at_least else "<="
        verdict = "PASS" if self.passed else "FAIL"
        note = f"  {self.note}" if self.note else ""
        return f"{self.name:<44} {value:>7} {sign} {self.threshold:<5g} {verdict}{note}"


def mean_interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and 95 % t-interval over seeds (None, None for one seed): the evaluation's seed interval."""
    found = seed_interval(pd.Series(values, index=range(len(values))))
    return (found.mean, None, None) if found.n_seeds < 2 else (found.mean, found.ci_low, found.ci_high)


def information_gates(ceilings: dict[str, list[float]], majority: str) -> list[Gate]:
    """(a): per scanner, the mean over seeds of ceiling(majority) - ceiling(scanner), paired by seed, <= KEPT."""
    gates = []
    for scanner, values in ceilings.items():
        if scanner != majority:
            deficit = np.mean(np.asarray(ceilings[majority]) - np.asarray(values))
            gates.append(Gate(f"(a) ceiling deficit, {scanner} vs {majority}", float(deficit), KEPT, at_least=False))
    return gates


def robustness_gap(ceiling: float, mix: float) -> float:
    """G_s: what the ID-mix probe loses on scanner s against a probe fitted on s's own rendering."""
    return ceiling - mix


def headroom_gates(label: str, gaps: dict[str, list[float]], scanners: list[str]) -> list[Gate]:
    """(b) / (c): the mean over seeds of an encoder's G on each of ``scanners`` >= HEADROOM."""
    return [Gate(f"{label} G, {s}", float(np.mean(gaps[s])), HEADROOM, at_least=True) for s in scanners]


def closure_gates(
    oracle_mix: dict[str, list[float]],
    simclr_mix: dict[str, list[float]],
    simclr_gaps: dict[str, list[float]],
    scanners: list[str],
) -> list[Gate]:
    """(d): per scanner, the oracle's ID-mix gain over SimCLR's as a fraction of SimCLR's mean G, >= CLOSED, and the
    gain's t-interval over seeds above 0 (one seed, or a gap of SimCLR's <= 0: not measurable)."""
    gates = []
    for s in scanners:
        gain = list(np.asarray(oracle_mix[s]) - np.asarray(simclr_mix[s]))
        gap = float(np.mean(simclr_gaps[s]))
        mean, low, high = mean_interval(gain)
        name = f"(d) oracle closes of SimCLR's G, {s}"
        if gap <= 0:
            gates.append(Gate(name, None, CLOSED, True, f"SimCLR has no gap ({gap:+.3f}) to close"))
        elif low is None:
            gates.append(Gate(name, None, CLOSED, True, f"{mean / gap:+.2f} of the gap; an interval needs >= 2 seeds"))
        elif low <= 0:
            gates.append(
                Gate(
                    name,
                    None,
                    CLOSED,
                    True,
                    f"{mean / gap:+.2f} of the gap, gain interval [{low:+.3f}, {high:+.3f}] holds 0",
                )
            )
        else:
            gates.append(Gate(name, mean / gap, CLOSED, True, f"gain {mean:+.3f} [{low:+.3f}, {high:+.3f}]"))
    return gates


# ---- measurement ------------------------------------------------------------------------------


def check_store(path: Path) -> ImageStore:
    """A development store this script can read: true counterfactuals, training and validation images; else one line."""
    if not (path / "store.json").is_file():
        raise SystemExit(
            f"calibrate_headroom: {path} is not an image store (no store.json); pass a `cfcl data synth` folder"
        )
    if not (true_cf(path) / "store.json").is_file():
        raise SystemExit(
            f"calibrate_headroom: {true_cf(path)} is missing; gates need the true counterfactuals of a synthetic store"
        )
    store = ImageStore.open(path)
    for split in ("train", "val"):
        if len(store.indices(split)) == 0:
            raise SystemExit(
                f"calibrate_headroom: {path} has no '{split}' images; the gates fit on train and score on val"
            )
    return store


def rendered_rows(store: ImageStore, cf: ImageStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per scanner name: the counterfactual-store rows of ``rows`` (image order kept) as that scanner renders them."""
    table = cf.counterfactual_table(len(store), len(store.domains))
    return {name: table[rows, d] for d, name in enumerate(store.domains)}


def draw_store(synth: SynthConfig, out: Path) -> ImageStore:
    """The development store of ``synth`` in ``out``, drawn unless there already (no overview: it shows test images).
    ``out``'s record (``out.json``) names the config it was drawn with; a store of another config is refused."""
    record = read_record(out)
    if record and record["synth"] != config_hash(synth):
        raise SystemExit(f"calibrate_headroom: {out} holds a draw of another synth config; pass another --work")
    if not (out / "store.json").is_file():
        generate(synth, out)
    if not record:
        write_json(out.with_suffix(".json"), {"synth": config_hash(synth), "ceiling": {}})
    return check_store(out)


def read_record(out: Path) -> dict:
    """What was measured on the store in ``out`` (``out.json``): its synth config hash and its ceilings per CNN
    budget."""
    path = out.with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def ceilings(store: ImageStore, epochs: int, seed: int) -> dict[str, float]:
    """(a): per scanner, a supervised CNN fitted on every training patient as it renders them, on validation as it
    renders it."""
    cf = ImageStore.open(true_cf(store.path))
    train, val = store.indices("train"), store.indices("val")
    labels = store.meta["label"].to_numpy()
    train_rows, val_rows = rendered_rows(store, cf, train), rendered_rows(store, cf, val)
    result = {}
    for name in store.domains:
        model = train_classifier(as_tensor(cf.images[train_rows[name]]), labels[train], 2, epochs, seed)
        result[name] = auroc(labels[val], predict(model, as_tensor(cf.images[val_rows[name]]))[:, 1])
    return result


def cached_ceilings(store: ImageStore, epochs: int, seed: int, out: Path | None) -> dict[str, float]:
    """:func:`ceilings`, kept in the record of the store drawn in ``out`` (None: not kept), so a rerun only pretrains
    and probes."""
    record = read_record(out) if out else {}
    key = f"epochs={epochs}"
    if key not in record.get("ceiling", {}):
        found = ceilings(store, epochs, seed)
        if not out:
            return found
        record["ceiling"][key] = found
        write_json(out.with_suffix(".json"), record)
    return record["ceiling"][key]


def pretrained(store: ImageStore, name: str, seed: int, args: argparse.Namespace, work: Path) -> Path:
    """Encoder ``name`` pretrained with the ``--recipe`` preset and ``--pretrain-set`` overrides, in a folder of
    ``work`` named for its config's hash (so recipes do not overwrite each other's encoders)."""
    from cfcl.contrastive import pretrain
    from cfcl.contrastive.config import PretrainConfig

    method, preset = ENCODERS[name]
    recipe = [f"trainer.max_epochs={args.pretrain_epochs}", *args.pretrain_overrides]
    config = build_config(
        PretrainConfig,
        resolve_config_path(args.recipe),
        [
            *recipe,
            f"method={method}",
            f"data={store.path}",
            f"seed={seed}",
            "trainer.progress_bar=false",
            f"augment.preset={preset}",
        ],
    )
    out = work / f"{name}-{config_hash(config)[:8]}-s{seed}"
    pretrain.run(config, out)
    return out


def probe_scores(
    store: ImageStore, encoder_dir: Path, fraction: float, draws: int, seed: int
) -> dict[str, dict[str, float]]:
    """Per scanner: ``mix`` (ID-mix probe) and ``ceiling`` (probe on that scanner's rendering) validation AUROC, and
    ``id_val`` (the ID-mix probe on validation as acquired), each the mean over ``draws`` labelled subsets."""
    from cfcl.api import embed, load_encoder
    from cfcl.evaluation.probe import class_probabilities, fit_probe
    from cfcl.evaluation.subsets import labelled_subset

    cf = ImageStore.open(true_cf(store.path))
    encoder = load_encoder(encoder_dir)
    train, val = store.indices("train"), store.indices("val")
    labels = store.meta["label"].to_numpy()
    own = embed(encoder, store.images)
    train_rows, val_rows = rendered_rows(store, cf, train), rendered_rows(store, cf, val)
    rendered = {
        s: (embed(encoder, cf.images[train_rows[s]]), embed(encoder, cf.images[val_rows[s]])) for s in store.domains
    }
    position = {int(r): i for i, r in enumerate(train)}

    def score(features_fit, rows, features_val, y_val) -> float:
        probe = fit_probe(features_fit, labels[rows], seed=seed)
        return auroc(y_val, class_probabilities(probe, features_val, 2)[:, 1])

    totals: dict[str, dict[str, list[float]]] = {s: {"mix": [], "ceiling": []} for s in store.domains}
    id_val = []
    for draw in range(draws):
        rows = labelled_subset(store.meta, train, fraction, seed, draw=draw)
        at = np.array([position[int(r)] for r in rows])
        id_val.append(score(own[rows], rows, own[val], labels[val]))
        for s, (fit_s, val_s) in rendered.items():
            totals[s]["mix"].append(score(own[rows], rows, val_s, labels[val]))
            totals[s]["ceiling"].append(score(fit_s[at], rows, val_s, labels[val]))
    result = {s: {k: float(np.mean(v)) for k, v in parts.items()} for s, parts in totals.items()}
    return {**result, "id_val": {"mix": float(np.mean(id_val))}}


def synth_file(name: str) -> Path:
    """``--synth``'s config: a file, or a shipped stage preset such as ``synth_headroom``; else one line."""
    path = resolve_config_path(name)
    if not path.is_file():
        raise SystemExit(f"calibrate_headroom: --synth {name} is neither a file nor a stage preset")
    return path


def synth_config(args: argparse.Namespace, seed: int) -> SynthConfig:
    sizes = [f"seed={seed}", f"n_val={args.n_val}", "n_test=0", "n_ood_train=0", "n_ood_test=0"]
    return build_config(SynthConfig, args.synth, [*args.overrides, *sizes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synth",
        type=synth_file,
        help="synth config file or stage preset, e.g. synth_headroom (default: the default benchmark)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="synth config override, e.g. frames=false"
    )
    parser.add_argument(
        "--data", type=Path, help="an existing development store (train, val, true_cf) instead of drawing one"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-val", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=8, help="supervised CNN epochs (gate a)")
    parser.add_argument("--pretrain", action="store_true", help="also pretrain and measure gates (b)-(d)")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument(
        "--recipe", default="pretrain_benchmark", help="pretrain preset of the encoders (default: the benchmark's)"
    )
    parser.add_argument(
        "--pretrain-set",
        dest="pretrain_overrides",
        action="append",
        default=[],
        help="pretrain config override for every encoder, e.g. p_cf=0.5",
    )
    parser.add_argument("--fraction", type=float, default=0.05, help="label fraction of the probes")
    parser.add_argument("--draws", type=int, default=5, help="labelled subsets per seed")
    parser.add_argument("--work", type=Path, help="keep stores and encoders here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.data is not None and (args.pretrain or len(args.seeds) > 1):
        raise SystemExit(
            "calibrate_headroom: --data measures gate (a) on one existing store; drop --pretrain and extra --seeds"
        )
    torch.set_num_threads(args.threads)
    started = time.time()
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:
            store = (
                check_store(args.data) if args.data else draw_store(synth_config(args, seed), work / f"data-s{seed}")
            )
            roles = scanner_roles(store)
            found = {
                "ceiling": cached_ceilings(store, args.epochs, seed, None if args.data else work / f"data-s{seed}")
            }
            log("ceilings", seed, found["ceiling"])
            if args.pretrain:
                for name in ENCODERS:
                    encoder = pretrained(store, name, seed, args, work)
                    found[name] = probe_scores(store, encoder, args.fraction, args.draws, seed)
                    log(name, seed, found[name])
            per_seed.append(found)
    scanners = list(per_seed[0]["ceiling"])
    ceiling = {s: [r["ceiling"][s] for r in per_seed] for s in scanners}
    gates = information_gates(ceiling, roles["majority"])
    result = {
        "synth": str(args.synth or "default"),
        "overrides": args.overrides,
        "recipe": [args.recipe, f"trainer.max_epochs={args.pretrain_epochs}", *args.pretrain_overrides],
        "seeds": args.seeds,
        **roles,
        "ceiling": ceiling,
    }
    if args.pretrain:
        shifted = [roles["rare"], roles["ood"]]
        gaps = {
            name: {s: [robustness_gap(r[name][s]["ceiling"], r[name][s]["mix"]) for r in per_seed] for s in scanners}
            for name in ENCODERS
        }
        mix = {name: {s: [r[name][s]["mix"] for r in per_seed] for s in scanners} for name in ENCODERS}
        gates += headroom_gates("(b) SimCLR", gaps["simclr"], shifted)
        gates += headroom_gates("(c) SimCLR-acquisition", gaps["simclr-acquisition"], shifted)
        gates += closure_gates(mix["oracle"], mix["simclr"], gaps["simclr"], shifted)
        result.update(
            gaps=gaps, mix=mix, id_val={name: [r[name]["id_val"]["mix"] for r in per_seed] for name in ENCODERS}
        )
    print(
        f"majority {roles['majority']}, rare {roles['rare']}, OOD {roles['ood']}; seeds {args.seeds}; "
        "validation split only"
    )
    for gate in gates:
        print(gate.line())
    result.update(gates=[{**g._asdict(), "passed": g.passed} for g in gates], seconds=round(time.time() - started, 1))
    print(json.dumps(result), flush=True)


def scanner_roles(store: ImageStore) -> dict[str, str]:
    """The majority and the rare ID scanner (most and fewest training images) and the OOD scanner, by name."""
    train = store.meta.loc[store.indices("train"), "domain"].value_counts()
    ood = store.domains[store.ood_domains[0]] if store.ood_domains else None
    return {"majority": store.domains[int(train.idxmax())], "rare": store.domains[int(train.idxmin())], "ood": ood}


if __name__ == "__main__":
    main()
