"""What the abducted pixel noise carries into a counterfactual (docs/results.md): prints a table and one JSON line.

A counterfactual keeps the source image's pixel noise u = (x - mu) / sigma: x* = mu* + sigma* u. The
noise holds whatever of the image the decoder's mean misses, with the source scanner's look. For
``--n`` images of each source scanner of a split of a synthetic store, this reports how much the
mean misses (MAE(x, mu) and the mean sigma), then for each target scanner the judge's share of x*
on the target and its MAE to the true counterfactual, once as the generator makes it and once from
the mean alone (u = 0).

    python benchmarks/cf_pixel_noise.py --data RUN/data --generator RUN/cf_finetune --judge RUN/cf_judge
        [--split val] [--n 64]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cfcl.counterfactual.classifier.model import load_classifier
from cfcl.counterfactual.generator.checkpoint import load_generator
from cfcl.counterfactual.generator.inference import Abduction, abduct, predict
from cfcl.counterfactual.parents import intervene, parents_from_store
from cfcl.counterfactual.quality.inputs import store_images
from cfcl.data.store import ImageStore
from cfcl.layout import true_cf


@torch.no_grad()
def measure(store: ImageStore, truth: ImageStore, model, judge, split: str, n: int) -> dict:
    rows_of_split = store.indices(split)
    domains = np.asarray(store.meta["domain"])[rows_of_split]
    seen = sorted(set(domains.tolist()))
    table = truth.counterfactual_table(len(store), len(store.domains))
    cpu = torch.device("cpu")
    report = {}
    for source in seen:
        rows = rows_of_split[domains == source][:n]
        x, pa = store_images(store, rows, cpu), parents_from_store(store, rows, model.specs)
        exogenous = abduct(model, x, pa)
        factual = model.decode_latents(pa, exogenous.latents, batch_size=len(x))
        entry = {
            "n": len(rows),
            "mae_x_mu": float((x - factual.mu).abs().mean()),
            "sigma": float(factual.log_scale.exp().mean()),
            "targets": {},
        }
        mean_only = Abduction(exogenous.latents, torch.zeros_like(exogenous.u))
        for target in seen:
            if target == source:
                continue
            pa_star = intervene(pa, domain=target)
            x_true = store_images(truth, table[rows, target], cpu)
            cell = entry["targets"][store.domains[target]] = {"mae_identity": float((x - x_true).abs().mean())}
            for kind, state in (("with_noise", exogenous), ("mean_only", mean_only)):
                x_star = predict(model, state, pa_star)
                cell[kind] = {
                    "judged_target": float((judge(x_star).argmax(1) == target).float().mean()),
                    "mae_to_truth": float((x_star - x_true).abs().mean()),
                }
        report[store.domains[source]] = entry
    return report


def markdown(report: dict) -> str:
    lines = [
        "| source | MAE(x, mu) | sigma | target | judged target, with noise | mean only | "
        "MAE to truth, with noise | mean only | MAE identity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for source, entry in report.items():
        for target, cell in entry["targets"].items():
            noise, mean = cell["with_noise"], cell["mean_only"]
            lines.append(
                f"| {source} | {entry['mae_x_mu']:.3f} | {entry['sigma']:.3f} | {target} | "
                f"{noise['judged_target']:.2f} | {mean['judged_target']:.2f} | {noise['mae_to_truth']:.3f} | "
                f"{mean['mae_to_truth']:.3f} | {cell['mae_identity']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic image store with true_cf/")
    parser.add_argument("--generator", type=Path, required=True, help="generator folder (cfcl cf train / finetune)")
    parser.add_argument("--judge", type=Path, required=True, help="judge folder (cfcl cf classifier --config cf_judge)")
    parser.add_argument("--split", default="val", help="images the counterfactuals are made from (default: val)")
    parser.add_argument("--n", type=int, default=64, help="images per source scanner (the first of the split)")
    args = parser.parse_args()
    store = ImageStore.open(args.data)
    model, _ = load_generator(args.generator)
    judge, _ = load_classifier(args.judge)
    result = measure(store, ImageStore.open(true_cf(args.data)), model.eval(), judge.eval(), args.split, args.n)
    print(markdown(result))
    print(json.dumps(result))
