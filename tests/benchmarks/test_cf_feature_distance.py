"""benchmarks/cf_feature_distance.py on a tiny synthetic run: its distances equal a plain NumPy computation from
the encoders' own forward passes, and what is missing is named in one line."""

from __future__ import annotations

import json
import shutil
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch

from cfcl.contrastive.encoders import load_encoder
from cfcl.data.store import write_store
from support.benchmarks import load_benchmark
from support.cf_stores import DOMAINS, make_store
from support.evaluation import tiny_encoder

SIZE = 16
ENCODERS = ("cf-simclr-s0", "simclr-s1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """data/ with true_cf/ (3 ID scanners, 1 OOD), cf_store/ with noisy copies of the true counterfactuals of the
    training images to the other ID scanners (one pair left out; two rows to ignore: a validation image's and a
    training image under its own scanner) and two encoders."""
    root = tmp_path_factory.mktemp("run")
    data = make_store(root / "data", n_per_domain=(8, 8, 8), n_ood=2, size=SIZE)
    true = np.load(root / "data" / "true_cf" / "images.npy")
    meta = data.meta
    train = data.indices("train").tolist()
    pairs = [(i, d) for i in train for d in range(3) if d != meta["domain"][i]][1:]
    val = int(data.indices("val")[0])
    ignored = [(val, (meta["domain"][val] + 1) % 3), (train[0], meta["domain"][train[0]])]
    pairs += ignored
    noise = np.random.default_rng(1).integers(-40, 41, (len(pairs), SIZE, SIZE))
    images = np.clip(np.stack([true[i * len(DOMAINS) + d] for i, d in pairs]) + noise, 0, 255).astype(np.uint8)
    cf_meta = pd.DataFrame(
        {
            "index": range(len(pairs)),
            "source_index": [i for i, _ in pairs],
            "target_domain": [d for _, d in pairs],
            "split": [meta["split"][i] for i, _ in pairs],
            "domain": [d for _, d in pairs],
        }
    )
    write_store(
        root / "cf_store",
        images,
        cf_meta,
        DOMAINS,
        ["neg", "pos"],
        kind="counterfactuals",
        extra={"source_store": data.content_hash},
    )
    for name in ENCODERS:
        method, seed = name.rsplit("-s", 1)
        tiny_encoder(root / "pretrain" / name, method, int(seed), size=SIZE)
    return root, pairs[: -len(ignored)], images[: -len(ignored)], true


def _run_script(capsys, *args) -> tuple[str, dict]:
    load_benchmark("cf_feature_distance").main([str(a) for a in args])
    out = capsys.readouterr().out.strip().splitlines()
    return "\n".join(out[:-1]), json.loads(out[-1])


def _features(encoder, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.from_numpy(images).float().div(255)[:, None]).double().numpy()


def _expected(folder, data_images, pairs, generated, true, scanner=None) -> dict:
    """The three distances by plain loops: means over the pairs, over the median distance between the paired
    training images of different patients (every image here is its own patient)."""
    encoder = load_encoder(folder)[0].eval()
    sources = sorted({i for i, _ in pairs})
    fx = dict(zip(sources, _features(encoder, data_images[sources])))
    fg = _features(encoder, generated)
    ft = _features(encoder, np.stack([true[i * len(DOMAINS) + d] for i, d in pairs]))
    median = np.median([np.linalg.norm(fx[a] - fx[b]) for a, b in combinations(sources, 2)])
    keep = [k for k, (_, d) in enumerate(pairs) if scanner is None or d == scanner]
    return {
        "n": len(keep),
        "x_to_generated": np.mean([np.linalg.norm(fx[pairs[k][0]] - fg[k]) for k in keep]) / median,
        "x_to_true": np.mean([np.linalg.norm(fx[pairs[k][0]] - ft[k]) for k in keep]) / median,
        "generated_to_true": np.mean([np.linalg.norm(fg[k] - ft[k]) for k in keep]) / median,
    }


def test_distances_equal_a_plain_numpy_computation_per_scanner_and_overall(run, capsys):
    root, pairs, generated, true = run
    table, result = _run_script(capsys, root)
    data_images = np.load(root / "data" / "images.npy")
    assert result["images"] == 12 and set(result["encoders"]) == set(ENCODERS)
    for name in ENCODERS:
        got = result["encoders"][name]
        assert set(got) == {"major", "middle", "rare", "all"}
        for scanner, key in ((0, "major"), (1, "middle"), (2, "rare"), (None, "all")):
            want = _expected(root / "pretrain" / name, data_images, pairs, generated, true, scanner)
            assert got[key]["n"] == want["n"]
            for measure in ("x_to_generated", "x_to_true", "generated_to_true"):
                assert got[key][measure] == pytest.approx(want[measure], abs=2e-4), (name, key, measure)
        assert got["all"]["n"] == 2 * 12 - 1  # every training image to both other ID scanners, one pair left out
        assert got["all"]["generated_to_true"] > 0
    assert "generated_to_true" in table and "cf-simclr-s0" in table
    _, one = _run_script(capsys, root, "--encoder", "simclr-s1")
    assert list(one["encoders"]) == ["simclr-s1"] and one["encoders"]["simclr-s1"] == result["encoders"]["simclr-s1"]


def test_what_is_missing_is_named_in_one_line(run, tmp_path, capsys):
    root = run[0]
    with pytest.raises(SystemExit, match=r"no encoder.pt of dino-s0 \(it has cf-simclr-s0, simclr-s1\)"):
        _run_script(capsys, root, "--encoder", "dino-s0")
    with pytest.raises(SystemExit, match=r"cf_store_base does not exist; run a method that needs a generator and "):
        _run_script(capsys, root, "--cf-store", "cf_store_base")
    shutil.copytree(root, tmp_path / "no_cf", ignore=shutil.ignore_patterns("cf_store"))
    with pytest.raises(SystemExit, match=r"reads it \(simclr\+, cf-simclr, cf-simclr-multi, dino\+, cf-dino\)"):
        _run_script(capsys, tmp_path / "no_cf")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "data" / "true_cf")
    with pytest.raises(SystemExit, match="true_cf does not exist: not a synthetic run"):
        _run_script(capsys, copy)
