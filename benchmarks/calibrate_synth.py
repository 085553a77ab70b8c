"""Calibration of the synthetic benchmark (docs/benchmark.md, "Calibration"): prints one JSON line.

Measures on a synthetic store (made with the default config unless --store is given):
  a) scanner readability: balanced accuracy of logistic regression on the pixels;
  b) learnability: a small supervised CNN's ID test AUROC (target 0.80-0.95);
  c) acquisition shift: that model's AUROC drop on the OOD scanner, and the drop on the rare
     scanner of a model trained on the majority scanner alone (targets >= 0.05);
  e) self-supervision: linear probes (10 % of ID labels, logistic regression) on a randomly
     initialised encoder, a SimCLR encoder and a CF-SimCLR encoder whose positive pairs are
     true counterfactuals, all at the demo budget; plus scanner predictability from features.
Plain PyTorch loops on purpose: this script checks the data, it is not product code.

    python benchmarks/calibrate_synth.py [--store DIR] [--ssl-epochs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from cfcl.contrastive.encoders import build_encoder
from cfcl.data.store import ImageStore
from cfcl.layout import true_cf

LABEL_FRACTION = 0.1


def small_encoder() -> nn.Module:
    """The pretrain preset's encoder (configs/stage/pretrain.yaml): a narrow ResNet, 128 features."""
    return build_encoder("small", width=16, blocks=[1, 1, 1, 1], stem_stride=2)


def augmentations(size: int) -> nn.Module:
    """The `acquisition` augmentation preset's views, in kornia (docs/benchmark.md)."""
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.6, 1.0), ratio=(0.85, 1.15)),
        K.RandomAffine(degrees=8.0, p=0.5),
        K.RandomGamma(gamma=(0.6, 1.6), gain=(0.75, 1.25), p=0.8),
        K.RandomContrast(contrast=(0.6, 1.4), p=0.8),
        K.RandomGaussianBlur((5, 5), sigma=(0.1, 1.5), p=0.5),
        K.RandomSharpness(sharpness=(0.0, 1.0), p=0.3),
        K.RandomGaussianNoise(std=0.04, p=0.5),
    )


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1)


def features(encoder: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def train_classifier(x: torch.Tensor, y: np.ndarray, n_out: int, epochs: int, seed: int):
    """Supervised small CNN (encoder + linear head), Adam, cross-entropy."""
    torch.manual_seed(seed)
    model = nn.Sequential(small_encoder(), nn.Linear(128, n_out))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    target = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = F.cross_entropy(model(x[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(x[i : i + 512]).softmax(1) for i in range(0, len(x), 512)]).numpy()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def pretrain(x: torch.Tensor, partner, epochs: int, seed: int, size: int, batch: int = 128) -> nn.Module:
    """SimCLR (batch 128, temperature 0.1, Adam 1e-3 constant); ``partner(idx)`` pairs ``x[idx]``."""
    torch.manual_seed(seed)
    encoder = small_encoder()
    head = nn.Sequential(nn.Linear(encoder.feature_dim, 128), nn.ReLU(), nn.Linear(128, 64))
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    aug = augmentations(size)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        encoder.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            if len(idx) < batch // 2:
                continue
            v1, v2 = aug(x[idx]), aug(partner(idx))
            loss = nt_xent(head(encoder(v1)), head(encoder(v2)), 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return encoder


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return round(float(roc_auc_score(y, p)), 4) if len(np.unique(y)) == 2 else float("nan")


def probe_report(encoder, data, rng_seed: int) -> dict:
    """Logistic-regression probe on 10 % of ID training labels (stratified by scanner)."""
    f_train, f_test, f_ood = (features(encoder, data[k]) for k in ("x_train", "x_test", "x_ood"))
    scaler = StandardScaler().fit(f_train)
    f_train, f_test, f_ood = scaler.transform(f_train), scaler.transform(f_test), scaler.transform(f_ood)
    rng = np.random.default_rng(rng_seed)
    subset = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(data["d_train"] == d),
                max(2, int(LABEL_FRACTION * (data["d_train"] == d).sum())),
                replace=False,
            )
            for d in np.unique(data["d_train"])
        ]
    )
    probe = LogisticRegression(C=0.1, max_iter=3000).fit(f_train[subset], data["y_train"][subset])
    p_test, p_ood = probe.predict_proba(f_test)[:, 1], probe.predict_proba(f_ood)[:, 1]
    report = {"id": auroc(data["y_test"], p_test), "ood": auroc(data["y_ood"], p_ood)}
    for name, d in data["id_domains"].items():
        mask = data["d_test"] == d
        report[name] = auroc(data["y_test"][mask], p_test[mask])
    domain_probe = LogisticRegression(C=0.1, max_iter=3000).fit(f_train, data["d_train"])
    report["scanner_bacc"] = round(float(balanced_accuracy_score(data["d_test"], domain_probe.predict(f_test))), 4)
    return report


def load(store_path: Path) -> dict:
    store = ImageStore.open(store_path)
    cf = ImageStore.open(true_cf(store_path))
    meta = store.meta
    ood = store.ood_domains
    id_domains = {store.domains[d]: d for d in store.id_domains}
    pick = lambda split: store.indices(split)  # noqa: E731
    data = {"store": store, "cf": cf, "id_domains": id_domains, "ood_domains": ood}
    for key, split in (("train", "train"), ("test", "test"), ("ood", "ood_test"), ("ood_train", "ood_train")):
        idx = pick(split)
        data[f"i_{key}"] = idx
        data[f"x_{key}"] = as_tensor(store.images[idx])
        data[f"y_{key}"] = meta["label"].to_numpy()[idx]
        data[f"d_{key}"] = meta["domain"].to_numpy()[idx]
    data["cf_table"] = cf.counterfactual_table(len(store), len(store.domains))
    return data


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def scanner_readability(data: dict) -> float:
    """a) Balanced accuracy of a logistic regression telling the scanner from the pixels."""
    x_all = torch.cat([data["x_train"], data["x_ood_train"]])
    d_all = np.concatenate([data["d_train"], data["d_ood_train"]])
    classifier = LogisticRegression(C=0.01, max_iter=500).fit(x_all.flatten(1).numpy(), d_all)
    x_eval = torch.cat([data["x_test"], data["x_ood"]]).flatten(1).numpy()
    d_eval = np.concatenate([data["d_test"], data["d_ood"]])
    return round(float(balanced_accuracy_score(d_eval, classifier.predict(x_eval))), 4)


def supervised_reports(data: dict, epochs: int, seed: int, majority: int, rare: int) -> tuple[dict, dict]:
    """b) A supervised CNN on every ID scanner, c) one on the majority scanner only: AUROCs and drops."""
    names = data["store"].domains
    model = train_classifier(data["x_train"], data["y_train"], 2, epochs, seed)
    p_test, p_ood = predict(model, data["x_test"])[:, 1], predict(model, data["x_ood"])[:, 1]
    sup = {"id": auroc(data["y_test"], p_test), "ood": auroc(data["y_ood"], p_ood)}
    for name, d in data["id_domains"].items():
        sup[name] = auroc(data["y_test"][data["d_test"] == d], p_test[data["d_test"] == d])
    sup["ood_drop"] = round(sup["id"] - sup["ood"], 4)
    on_major = data["d_train"] == majority
    model = train_classifier(data["x_train"][on_major], data["y_train"][on_major], 2, epochs, seed)
    p_test = predict(model, data["x_test"])[:, 1]
    maj = {
        names[d]: auroc(data["y_test"][data["d_test"] == d], p_test[data["d_test"] == d])
        for d in data["id_domains"].values()
    }
    maj["ood"] = auroc(data["y_ood"], predict(model, data["x_ood"])[:, 1])
    maj["rare_drop"] = round(maj[names[majority]] - maj[names[rare]], 4)
    return sup, maj


def true_counterfactual_views(data: dict, seed: int, size: int):
    """Second views for CF-SimCLR with true counterfactuals: each image under a random ID scanner."""
    targets = np.array(sorted(data["id_domains"].values()))
    gen = np.random.default_rng(seed)
    table = data["cf_table"][data["i_train"]]
    cf_images = data["cf"].images

    def counterfactual(idx: torch.Tensor) -> torch.Tensor:
        rows = table[idx.numpy(), gen.choice(targets, len(idx))]
        order = np.argsort(rows)
        out = np.empty((len(rows), size, size), dtype=np.uint8)
        out[order] = cf_images[rows[order]]
        return as_tensor(out)

    return counterfactual


def ssl_reports(data: dict, args: argparse.Namespace, size: int, result: dict, timings: dict) -> None:
    """e) Linear probes on a random encoder, SimCLR and CF-SimCLR with true counterfactuals."""
    x = data["x_train"]
    torch.manual_seed(args.seed)
    result["e_random"] = probe_report(small_encoder(), data, args.seed)
    log(result["e_random"])
    tic = time.time()
    simclr = pretrain(x, lambda idx: x[idx], args.ssl_epochs, args.seed, size)
    result["e_simclr"] = probe_report(simclr, data, args.seed)
    timings["simclr"] = round(time.time() - tic, 1)
    log(result, timings)
    tic = time.time()
    cf_simclr = pretrain(x, true_counterfactual_views(data, args.seed, size), args.ssl_epochs, args.seed, size)
    result["e_cf_simclr_true"] = probe_report(cf_simclr, data, args.seed)
    timings["cf_simclr"] = round(time.time() - tic, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="synthetic store (default: generate the default config)")
    parser.add_argument("--ssl-epochs", type=int, default=10, help="contrastive pretraining epochs (demo: 10)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the supervised CNNs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], help="parts to skip: scanner supervised ssl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = None
    if args.store is None:
        from cfcl.data.synthetic.config import SynthConfig
        from cfcl.data.synthetic.generate import run

        tmp = tempfile.TemporaryDirectory()
        args.store = Path(tmp.name) / "synth"
        run(SynthConfig(), args.store)
    data = load(args.store)
    size = data["x_train"].shape[-1]
    result: dict = {"store": str(args.store), "n_train": len(data["x_train"])}
    timings = {}
    majority = min(data["id_domains"].values(), key=lambda d: -(data["d_train"] == d).sum())
    rare = min(data["id_domains"].values(), key=lambda d: (data["d_train"] == d).sum())
    if "scanner" not in args.skip:
        tic = time.time()
        result["a_scanner_bacc"] = scanner_readability(data)
        timings["scanner"] = round(time.time() - tic, 1)
        log(result, timings)
    if "supervised" not in args.skip:
        tic = time.time()
        result["b_supervised"], result["c_majority_only"] = supervised_reports(
            data, args.epochs, args.seed, majority, rare
        )
        timings["supervised"] = round(time.time() - tic, 1)
        log(result, timings)
    if "ssl" not in args.skip:
        ssl_reports(data, args, size, result, timings)
    result["rare_scanner"] = data["store"].domains[rare]
    result["timings_s"] = timings
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
