"""The HVAE mechanism and its maths: likelihood, KL, parents, abduction and counterfactuals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cfcl.config import build_config
from cfcl.counterfactual.classifier.model import build_classifier
from cfcl.counterfactual.config import CFTrainConfig
from cfcl.counterfactual.data import domain_balanced_weights
from cfcl.counterfactual.generator import module as generator_module
from cfcl.counterfactual.generator.checkpoint import load_generator, save_generator
from cfcl.counterfactual.generator.hvae import HVAE, HVAEArch
from cfcl.counterfactual.generator.inference import abduct, apply_noise, counterfactual, pixel_noise, predict
from cfcl.counterfactual.generator.likelihood import discretized_gaussian_log_likelihood, gaussian_kl
from cfcl.counterfactual.generator.losses import (
    ascend_multiplier,
    counterfactual_guidance,
    elbo_terms,
    guidance_terms,
    lagrangian,
    random_other_values,
    round_trip_mae,
)
from cfcl.counterfactual.generator.module import (
    GeneratorModule,
    adamw,
    ema_decay,
    scaled_lr_and_warmup,
    skipped_update,
    warmup_factor,
)
from cfcl.counterfactual.generator.train import training_module
from cfcl.counterfactual.parents import ParentError, encode_parents, intervene, parent_specs, parents_from_store
from cfcl.data.store import write_store
from cfcl.errors import CheckpointError, ConfigError, StoreError
from cfcl.presets import resolve_config_path

TINY = HVAEArch(widths=[8, 8, 16], blocks=[1, 1, 1], latent_channels=4, stochastic_max_res=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """16 px random images with domain (3 seen of 4), sex (text) and age (integer years) parents."""
    rng = np.random.default_rng(0)
    n = 24
    meta = pd.DataFrame(
        {
            "index": range(n),
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": ["train"] * 18 + ["val"] * 6,
            "domain": np.arange(n) % 3,
            "label": np.arange(n) % 2,
            "sex": ["F", "M"] * (n // 2),
            "age": rng.integers(20, 90, n),
        }
    )
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    return write_store(tmp_path_factory.mktemp("hvae") / "store", images, meta, ["a", "b", "c", "d"], ["neg", "pos"])


@pytest.fixture(scope="module")
def model(store):
    torch.manual_seed(0)
    return HVAE(16, TINY, parent_specs(store, ["domain", "sex", "age"], store.indices("train"))).eval()


def batch(store, specs, rows=range(6)):
    rows = np.asarray(list(rows))
    x = torch.from_numpy(np.ascontiguousarray(store.images[rows])).float()[:, None] / 255
    return x, parents_from_store(store, rows, specs)


def test_discretized_gaussian_matches_normal_cdf():
    x = torch.tensor([0.0, 1 / 255, 0.5, 200 / 255, 1.0, 0.02], dtype=torch.float64)
    mu = torch.tensor([0.1, 0.0, 0.52, 0.3, 0.9, 0.1], dtype=torch.float64)
    log_scale = torch.log(torch.tensor([0.05, 0.01, 0.2, 0.1, 0.03, 0.02], dtype=torch.float64))
    cdf, h = Normal(mu, log_scale.exp()).cdf, 0.5 / 255
    upper = torch.where(x > 1 - h, torch.ones_like(x), cdf(x + h))
    lower = torch.where(x < h, torch.zeros_like(x), cdf(x - h))
    expected = torch.log(upper - lower)
    got = discretized_gaussian_log_likelihood(x, mu, log_scale)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_discretized_gaussian_is_a_distribution_over_256_levels():
    x = torch.arange(256, dtype=torch.float32) / 255
    for mu, sigma in [(0.3, 0.1), (0.99, 0.001), (-0.2, 0.05), (0.5, 3.0)]:
        logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mu), torch.full_like(x, float(np.log(sigma))))
        assert torch.isfinite(logp).all()
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(10, generator=g) for _ in range(4))
    expected = kl_divergence(Normal(mq, lq.exp()), Normal(mp, lp.exp()))
    assert torch.allclose(gaussian_kl(mq, lq, mp, lp), expected, atol=1e-5)


def test_parent_specs_and_encoding(store):
    specs = parent_specs(store, ["domain", "sex", "age"], store.indices("train"))
    domain, sex, age = specs
    assert (domain.kind, domain.n_classes, domain.seen) == ("discrete", 4, (0, 1, 2))
    assert (sex.kind, sex.categories) == ("discrete", ("F", "M"))
    assert age.kind == "continuous"
    train_age = store.meta["age"].to_numpy()[store.indices("train")]
    assert age.mean == pytest.approx(train_age.mean()) and age.std == pytest.approx(train_age.std(ddof=1))
    pa = parents_from_store(store, np.array([0, 1, 5]), specs)
    assert pa["domain"].dtype == torch.long and pa["sex"].tolist() == [0, 1, 1] and pa["age"].dtype == torch.float32
    vec = encode_parents(pa, specs)
    assert vec.shape == (3, 4 + 2 + 1)
    assert vec[:, :4].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert torch.allclose(vec[:, 6], (pa["age"] - age.mean) / age.std)


def test_missing_parent_column_is_a_one_line_error(store):
    with pytest.raises(StoreError, match="parent 'scanner_model' is not a column"):
        parent_specs(store, ["domain", "scanner_model"])


def test_intervene_changes_only_the_named_parent(store, model):
    _, pa = batch(store, model.specs)
    before = {k: v.clone() for k, v in pa.items()}
    changed = intervene(pa, domain=2)
    assert changed["domain"].tolist() == [2] * 6
    assert torch.equal(changed["sex"], pa["sex"]) and torch.equal(changed["age"], pa["age"])
    assert all(torch.equal(pa[k], before[k]) for k in pa)
    with pytest.raises(ParentError, match="cannot intervene on 'scanner'"):
        intervene(pa, scanner=1)


def test_null_intervention_reproduces_the_image(store, model):
    x, pa = batch(store, model.specs)
    with torch.no_grad():
        x_star = counterfactual(model, x, pa, pa)
        sampled = counterfactual(model, x, pa, pa, t=1.0)
    assert (x_star * 255).round().equal(x * 255) and (x_star - x).abs().max() < 1e-5
    assert (sampled * 255).round().equal(x * 255)


def test_pixel_noise_by_hand(store, model):
    assert pixel_noise(
        torch.tensor([0.5]), torch.tensor([0.3]), torch.log(torch.tensor([0.1]))
    ).item() == pytest.approx(2.0)
    assert apply_noise(
        torch.tensor([0.9, 0.1]), torch.log(torch.tensor([0.1, 0.1])), torch.tensor([2.0, -0.5])
    ).tolist() == (pytest.approx([1.0, 0.05]))
    x, pa = batch(store, model.specs)
    with torch.no_grad():
        ab = abduct(model, x, pa)
        decoded = model.decode_latents(pa, ab.latents, batch_size=len(x))
        assert len(ab.latents) == 2  # one stochastic block at 8 px and one at 4 px
        assert torch.allclose(ab.u, (x - decoded.mu) / decoded.log_scale.exp(), atol=1e-5)
        x_star = predict(model, ab, intervene(pa, domain=1))
        dec_star = model.decode_latents(intervene(pa, domain=1), ab.latents, batch_size=len(x))
    assert torch.allclose(x_star, (dec_star.mu + dec_star.log_scale.exp() * ab.u).clamp(0, 1), atol=1e-6)
    assert not torch.allclose(x_star, x, atol=1e-3)


def test_parents_condition_prior_posterior_and_decoder(store, model):
    x, pa = batch(store, model.specs)
    model.zero_grad()
    elbo_terms(model, x, pa)["loss"].backward()
    blocks = [b for level in model.dec_levels for b in level]
    assert all(b.parents.weight.grad.abs().sum() > 0 for b in blocks)
    stochastic = [b for b in blocks if b.zdim]
    assert stochastic and all(b.posterior.convs[0].weight.grad.abs().sum() > 0 for b in stochastic)
    assert all(b.prior.convs[-1].weight.grad.abs().sum() > 0 for b in stochastic)  # zero-initialised output
    model.zero_grad()


def test_unseen_target_domain_is_refused(store, model):
    x, pa = batch(store, model.specs)
    with pytest.raises(ParentError, match="value\\(s\\) d never seen in training"):
        counterfactual(model, x, pa, intervene(pa, domain=3))
    with pytest.raises(ParentError, match="parent\\(s\\) age missing"):
        model.decode_prior({"domain": pa["domain"], "sex": pa["sex"]})


def test_generator_checkpoint_roundtrip_and_errors(tmp_path, store, model):
    x, pa = batch(store, model.specs)
    save_generator(tmp_path, model, {"store": store.content_hash, "domains": store.domains})
    loaded, info = load_generator(tmp_path)
    assert not loaded.training and info["store"] == store.content_hash and info["parents"][0]["name"] == "domain"
    with torch.no_grad():
        assert torch.equal(
            counterfactual(loaded, x, pa, intervene(pa, domain=2)),
            counterfactual(model, x, pa, intervene(pa, domain=2)),
        )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tmp_path / "generator.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_generator(corrupt)
    foreign = tmp_path / "classifier.pt"
    torch.save({"format": "cfcl-domain-classifier", "state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a cfcl HVAE generator checkpoint"):
        load_generator(foreign)
    other = HVAE(16, TINY.model_copy(update={"latent_channels": 2}), model.specs)
    save_generator(tmp_path / "other.pt", other, {})
    ckpt = torch.load(tmp_path / "other.pt", weights_only=True)
    ckpt["state_dict"] = model.state_dict()
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match its architecture") as error:
        load_generator(tmp_path / "mismatch.pt")
    assert "\n" not in str(error.value)


def test_architecture_is_validated():
    with pytest.raises(ConfigError, match="not divisible"):
        HVAE(18, TINY, [])
    with pytest.raises(ConfigError, match="stochastic_max_res"):
        HVAE(16, TINY.model_copy(update={"stochastic_max_res": 2}), [])


def test_224_preset_has_about_40m_parameters(store):
    config = build_config(CFTrainConfig, resolve_config_path("cf_train_224"), ["data=/nowhere"])
    specs = parent_specs(store, ["domain"])
    model = HVAE(224, config.arch, specs)
    n = sum(p.numel() for p in model.parameters())
    assert 35e6 <= n <= 45e6, n
    assert (
        model.resolutions[0] == 224 and max(r for r in model.resolutions if r <= config.arch.stochastic_max_res) >= 56
    )


def test_small_pure_functions():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    source = torch.randint(0, 3, (500,), generator=g)
    domains = torch.tensor([0, 1, 2])
    target = random_other_values(source, domains)
    assert (target != source).all() and set(target.tolist()) == {0, 1, 2}
    for d in range(3):
        assert set(target[source == d].tolist()) == {0, 1, 2} - {d}
    sexes = torch.tensor([0, 1, 2] * 100)  # code 0: an unknown sex, never a target; it goes to either known one
    target = random_other_values(sexes, torch.tensor([1, 2]))
    assert torch.equal(target[sexes > 0], 3 - sexes[sexes > 0]) and set(target[sexes == 0].tolist()) == {1, 2}
    assert ascend_multiplier(torch.tensor(0.5), 2.0, 1.0, 0.1).item() == pytest.approx(0.6)
    assert ascend_multiplier(torch.tensor(0.05), 0.0, 1.0, 0.1).item() == 0.0
    assert lagrangian(torch.tensor(1.0), [(torch.tensor(3.0), 2.0, torch.tensor(0.5))]).item() == pytest.approx(1.5)
    two = [(torch.tensor(3.0), 2.0, torch.tensor(0.5)), (torch.tensor(0.03), 0.01, torch.tensor(100.0))]
    assert lagrangian(torch.tensor(1.0), two).item() == pytest.approx(1.0 + 0.5 + 2.0)
    assert lagrangian(torch.tensor(1.0), []).item() == 1.0
    assert ema_decay(0, 0.999) == pytest.approx(0.1) and ema_decay(10**6, 0.9) == pytest.approx(0.9)
    assert [warmup_factor(s, 4) for s in (0, 1, 3, 10)] == [0.25, 0.5, 1.0, 1.0]
    weights = domain_balanced_weights(np.array([0, 0, 0, 1, 2, 2]))
    assert weights.tolist() == pytest.approx([1 / 3] * 3 + [1.0] + [0.5] * 2)


def test_guidance_terms_by_hand():
    guide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        guide[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x_star = torch.tensor([0.5, -0.25]).reshape(2, 1, 1, 1)  # logits [0.5, -0.5] and [-0.25, 0.25]
    terms = guidance_terms(guide, x_star, torch.tensor([1, 1]))
    expected = (np.log(1 + np.exp(1.0)) + np.log(1 + np.exp(-0.5))) / 2  # -log softmax_1 = log(1 + e^(l0 - l1))
    assert terms["ce"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["accuracy"].item() == 0.5


def test_counterfactual_guidance_of_the_scanner_alone_is_the_step_before_other_parents_and_of_several_their_mean(
    store, model
):
    x, pa = batch(store, model.specs)
    torch.manual_seed(1)
    guides = {
        "domain": build_classifier("cnn", 4, widths=[4]).eval(),
        "sex": build_classifier("cnn", 2, widths=[4]).eval(),
    }
    values = {"domain": torch.tensor([0, 1, 2]), "sex": torch.tensor([0, 1])}
    with torch.no_grad():
        torch.manual_seed(0)
        scanner = counterfactual_guidance(model, {"domain": guides["domain"]}, values, x, pa, round_trip=True)
        # the fine-tuning step's maths when only the scanner could guide it
        torch.manual_seed(0)
        target = random_other_values(pa["domain"], values["domain"])
        pa_star = intervene(pa, domain=target)
        x_star = counterfactual(model, x, pa, pa_star)
        before = {
            **guidance_terms(guides["domain"], x_star, target),
            "round_trip_mae": round_trip_mae(model, x, x_star, pa, pa_star),
        }
        assert all(torch.equal(scanner[k], before[k]) for k in ("ce", "accuracy", "round_trip_mae"))
        assert "ce_sex" not in scanner and "round_trip_mae" not in counterfactual_guidance(
            model, guides, values, x, pa, False
        )
        torch.manual_seed(0)
        both = counterfactual_guidance(model, guides, values, x, pa, round_trip=True)
        torch.manual_seed(0)
        domain_target, sex_target = (
            random_other_values(pa["domain"], values["domain"]),
            random_other_values(pa["sex"], values["sex"]),
        )
        x_sex = counterfactual(model, x, pa, intervene(pa, sex=sex_target))  # sex alone changed, the domain kept
        of_sex = guidance_terms(guides["sex"], x_sex, sex_target)
    assert torch.equal(domain_target, target) and torch.equal(sex_target, 1 - pa["sex"])
    assert torch.equal(both["ce_domain"], scanner["ce"]) and torch.allclose(both["ce_sex"], of_sex["ce"])
    assert torch.allclose(both["ce"], (scanner["ce"] + of_sex["ce"]) / 2) and not torch.allclose(
        both["ce"], scanner["ce"]
    )
    assert torch.allclose(both["accuracy"], (scanner["accuracy"] + of_sex["accuracy"]) / 2)
    assert torch.allclose(both["round_trip_mae"], (both["round_trip_mae_domain"] + both["round_trip_mae_sex"]) / 2)
    assert torch.equal(both["round_trip_mae_domain"], scanner["round_trip_mae"])


def test_round_trip_mae_matches_a_hand_rolled_cycle(store, model):
    x, pa = batch(store, model.specs)
    pa_star = intervene(pa, domain=(pa["domain"] + 1) % 3)
    with torch.no_grad():
        x_star = counterfactual(model, x, pa, pa_star)
        there = model.decode_posterior(pa_star, model.encode(x_star))  # re-abduct z' from (x*, pa*)
        u = (x_star - there.mu) / there.log_scale.exp()
        back = model.decode_latents(pa, there.latents, batch_size=len(x))
        expected = ((back.mu + back.log_scale.exp() * u).clamp(0, 1) - x).abs().mean()
        assert round_trip_mae(model, x, x_star, pa, pa_star).item() == pytest.approx(expected.item(), rel=1e-5)
        assert round_trip_mae(model, x, counterfactual(model, x, pa, pa), pa, pa).item() < 1e-5
        assert expected > 1e-3  # a random model does not invert its own counterfactuals


def test_round_trip_mae_trains_the_decoder_towards_reversibility(store):
    torch.manual_seed(0)
    model = HVAE(16, TINY, parent_specs(store, ["domain"], store.indices("train")))
    for module in model.encoder_modules():
        module.requires_grad_(False)
    x, pa = batch(store, model.specs, range(12))
    pa_star = intervene(pa, domain=(pa["domain"] + 1) % 3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    errors = []
    for _ in range(30):
        loss = round_trip_mae(model, x, counterfactual(model, x, pa, pa_star), pa, pa_star)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(loss.item())
    blocks = [b for level in model.dec_levels for b in level if b.zdim]
    assert all(b.posterior.convs[0].weight.grad.abs().sum() > 0 for b in blocks)  # through the re-abduction
    assert errors[-1] < 0.5 * errors[0], errors


def test_generator_ema_follows_the_ramped_decay_step_by_step():
    model = torch.nn.Linear(3, 2)
    module = GeneratorModule(model, grad_clip=1.0, grad_skip=10.0, ema_decay=0.2)
    expected = None
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step + 1))
        module.ema.update_parameters(model)
        d = ema_decay(step, 0.2)  # the first update copies; update k > 0 is given n_averaged = k
        expected = 1.0 if step == 0 else d * expected + (1 - d) * (step + 1)
        for p in module.ema_model.parameters():
            assert torch.allclose(p, torch.full_like(p, expected)), step
    assert expected != pytest.approx(4.0)  # the decay did hold weights back


def test_the_skip_rule_on_the_device_skips_what_the_host_rule_skipped():
    for grad_skip in (25000.0, 0.1):  # norms are >= 0, NaN or inf; 0.1 lies between two float32 values
        limit = torch.tensor(grad_skip)
        norms = torch.cat(
            [
                torch.tensor([0.0, 1.0, 350.0, 3e4, 1e38, math.inf, math.nan]),
                limit[None],
                torch.nextafter(limit, torch.tensor(math.inf))[None],
                torch.nextafter(limit, torch.tensor(0.0))[None],
            ]
        )
        flags = skipped_update(norms, grad_skip)
        assert flags.dtype == torch.float32
        host_rule = [
            float(not math.isfinite(float(v)) or float(v) > grad_skip) for v in norms
        ]  # read on the host before
        assert flags.tolist() == host_rule and 0 < sum(host_rule) < len(host_rule), grad_skip


def _step(module: GeneratorModule, optimizer: torch.optim.Optimizer, grad: float) -> torch.Tensor:
    """One update with every gradient set to ``grad``; returns the gradient norm."""
    for p in module.trainable():
        p.grad = torch.full_like(p, grad)
    norm = module.clip_and_skip(optimizer, "32-true")
    optimizer.step()
    optimizer.zero_grad()
    return norm


@pytest.mark.parametrize("implementation", ["default", "foreach", "fused"])
def test_a_nan_or_huge_gradient_leaves_the_weights_and_adam_state_unchanged_and_a_normal_one_updates(implementation):
    torch.manual_seed(0)
    module = GeneratorModule(torch.nn.Linear(3, 2), grad_clip=1.0, grad_skip=10.0, ema_decay=0.9)
    optimizer = adamw(module.trainable(), 0.1, 0.01, implementation)
    assert optimizer.defaults["fused"] is (True if implementation == "fused" else None)

    def snapshot():
        state = [optimizer.state[p] for p in module.trainable()]
        return [p.detach().clone() for p in module.trainable()], [{k: v.clone() for k, v in s.items()} for s in state]

    weights, _ = snapshot()
    _step(module, optimizer, 0.5)
    after_first, state = snapshot()
    assert all(not torch.equal(a, b) for a, b in zip(weights, after_first))
    for grad in (math.nan, math.inf, 100.0):  # norms nan, inf, 200 > grad_skip
        _step(module, optimizer, grad)
        now, now_state = snapshot()
        assert all(torch.equal(a, b) for a, b in zip(after_first, now)), grad
        assert all(torch.equal(s[k], t[k]) for s, t in zip(state, now_state) for k in s), grad  # step count included
    _step(module, optimizer, 0.5)
    assert all(not torch.equal(a, b) for a, b in zip(after_first, snapshot()[0]))
    assert int(module.skipped) == 3
    assert [int(optimizer.state[p]["step"]) for p in module.trainable()] == [2, 2]


class HostRead(AssertionError):
    pass


class NoHostRead(torch.Tensor):
    """A tensor (and every tensor computed from it) that fails when its value is read on the host."""

    def _fail(self, *args):
        raise HostRead("the gradient norm was read on the host")

    __float__ = __int__ = __bool__ = __index__ = item = tolist = _fail


def test_the_fused_optimiser_skips_without_reading_the_norm_on_the_host(monkeypatch):
    clip = generator_module.clip_grad_norm_
    monkeypatch.setattr(generator_module, "clip_grad_norm_", lambda *a, **k: clip(*a, **k).as_subclass(NoHostRead))
    for implementation, reads in (("fused", False), ("default", True)):
        torch.manual_seed(0)
        module = GeneratorModule(torch.nn.Linear(3, 2), grad_clip=1.0, grad_skip=10.0, ema_decay=0.9)
        optimizer = adamw(module.trainable(), 0.1, 0.0, implementation)
        weights = [p.detach().clone() for p in module.trainable()]
        if reads:  # the test would see a host read: the other optimisers need one
            with pytest.raises(HostRead):
                _step(module, optimizer, math.nan)
            continue
        _step(module, optimizer, math.nan)
        assert all(torch.equal(a, b) for a, b in zip(weights, module.trainable()))
        _step(module, optimizer, 0.5)
        assert all(not torch.equal(a, b) for a, b in zip(weights, module.trainable()))
        assert module.skipped.as_subclass(torch.Tensor).item() == 1


def test_scaled_lr_and_warmup_by_hand():
    assert scaled_lr_and_warmup(1e-3, 100, 128, 32, "none") == (1e-3, 100)
    assert scaled_lr_and_warmup(1e-3, 100, 128, 32, "linear") == (pytest.approx(4e-3), 25)
    assert scaled_lr_and_warmup(1e-3, 100, 128, 32, "sqrt") == (pytest.approx(2e-3), 25)
    assert scaled_lr_and_warmup(1e-3, 100, 64, 16, "sqrt") == (pytest.approx(2e-3), 25)
    assert scaled_lr_and_warmup(1e-3, 100, 48, 32, "sqrt") == (pytest.approx(1.2247449e-3), 67)  # ceil(100 / 1.5)
    assert scaled_lr_and_warmup(1e-3, 100, 16, 32, "linear") == (pytest.approx(5e-4), 200)
    assert scaled_lr_and_warmup(1e-3, 1, 128, 32, "linear")[1] == 1
    assert scaled_lr_and_warmup(1e-3, 0, 128, 32, "sqrt")[1] == 0


def test_the_levers_are_off_by_default_and_reach_the_module_and_its_optimiser(store, monkeypatch):
    specs = parent_specs(store, ["domain"], store.indices("train"))
    arch = [f"arch.{k}={v}" for k, v in TINY.model_dump().items()]
    plain = training_module(build_config(CFTrainConfig, None, ["data=unused", *arch]), 16, specs)
    assert plain.training_elbo is elbo_terms and (plain.lr, plain.warmup_steps) == (1e-3, 100)
    assert plain.configure_optimizers()["optimizer"].defaults["fused"] is None
    assert not plain.model.enc_levels[0][0].convs[1].weight.is_contiguous(memory_format=torch.channels_last)

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or torch._dynamo.optimize("eager")(fn))
    levers = [
        "optim.implementation=fused",
        "optim.lr_scaling=sqrt",
        "optim.reference_batch=8",
        "batch_size=32",
        "trainer.compile=true",
        "trainer.channels_last=true",
    ]
    torch.manual_seed(0)
    module = training_module(build_config(CFTrainConfig, None, ["data=unused", *arch, *levers]), 16, specs)
    assert compiled == [elbo_terms] and (module.lr, module.warmup_steps) == (pytest.approx(2e-3), 25)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True and optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 25)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in module.model.parameters() if p.dim() == 4)
    x, pa = batch(store, specs)
    torch.manual_seed(1)
    loss = module.training_elbo(module.model, x, pa, 1.0)["loss"]  # one training step through the compiled ELBO
    torch.manual_seed(1)
    assert loss.item() == pytest.approx(elbo_terms(module.model, x, pa, 1.0)["loss"].item(), rel=1e-5)
    weights = [p.detach().clone() for p in module.trainable()]
    loss.backward()
    module.clip_and_skip(optimizer, "32-true")
    optimizer.step()
    assert all(
        not torch.equal(a, b) for a, b in zip(weights, module.trainable()) if b.grad is not None and b.grad.any()
    )
    assert int(module.skipped) == 0
