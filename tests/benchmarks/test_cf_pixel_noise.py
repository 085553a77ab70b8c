"""benchmarks/cf_pixel_noise.py: each counterfactual made with the abducted pixel noise and from the mean
alone, compared with the right true counterfactual, and the judge's verdict counted per target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfcl.counterfactual.classifier.model import build_classifier
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.generator.inference import counterfactual
from cfcl.counterfactual.parents import intervene, parent_specs, parents_from_store
from cfcl.data.store import ImageStore
from support.benchmarks import load_benchmark


def test_with_and_without_noise_against_the_true_counterfactual(stores):
    script = load_benchmark("cf_pixel_noise")
    store, truth = ImageStore.open(stores / "data"), ImageStore.open(stores / "data" / "true_cf")
    torch.manual_seed(0)
    arch = HVAEArch(widths=[8, 8], blocks=[1, 1], latent_channels=2, stochastic_max_res=16)
    model = HVAE(store.images.shape[-1], arch, parent_specs(store, ["domain"], store.indices("train"))).eval()
    with torch.no_grad():
        model.head.bias[1] = 0.0  # a wide pixel noise, so that it matters
    judge = build_classifier("cnn", len(store.domains)).eval()
    report = script.measure(store, truth, model, judge, "val", n=2)
    assert set(report) == {"a", "b"} and set(report["a"]) == {"n", "mae_x_mu", "sigma", "targets"}
    assert set(report["a"]["targets"]) == {"b"}
    rows = store.indices("val")[np.asarray(store.meta["domain"])[store.indices("val")] == 0][:2]
    x = torch.from_numpy(np.ascontiguousarray(store.images[rows])).float()[:, None] / 255
    x_true = torch.from_numpy(
        np.ascontiguousarray(truth.images[truth.counterfactual_table(len(store), len(store.domains))[rows, 1]])
    )
    x_true = x_true.float()[:, None] / 255
    pa = parents_from_store(store, rows, model.specs)
    with torch.no_grad():
        x_star = counterfactual(model, x, pa, intervene(pa, domain=1))
        latents = model.decode_posterior(pa, model.encode(x)).latents
        mean = model.decode_latents(intervene(pa, domain=1), latents).mu.clamp(0, 1)
        judged = float((judge(x_star).argmax(1) == 1).float().mean())
    cell = report["a"]["targets"]["b"]
    assert report["a"]["n"] == 2
    assert cell["mae_identity"] == pytest.approx(float((x - x_true).abs().mean()))
    assert cell["with_noise"]["mae_to_truth"] == pytest.approx(float((x_star - x_true).abs().mean()), abs=1e-6)
    assert cell["mean_only"]["mae_to_truth"] == pytest.approx(float((mean - x_true).abs().mean()), abs=1e-6)
    assert cell["with_noise"]["mae_to_truth"] != pytest.approx(cell["mean_only"]["mae_to_truth"])
    assert cell["with_noise"]["judged_target"] == judged
    assert "| a | " in script.markdown(report) and len(script.markdown(report).splitlines()) == 4
