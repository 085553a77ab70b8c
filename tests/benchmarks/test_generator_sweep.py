"""benchmarks/generator_sweep.py: variants parsed into each stage's overrides, bad ones refused in one
line, and the judge's confusion read as the share judged right per target scanner."""

from __future__ import annotations

import json
import sys

import pytest

from support.benchmarks import sibling_importing_benchmark


@pytest.fixture(scope="module")
def sweep():
    with sibling_importing_benchmark("generator_sweep") as module:
        yield module


def test_variant_overrides_go_to_their_stage_and_lists_keep_their_commas(sweep):
    name, overrides = sweep.parse_variant("wide:train.arch.widths=[16, 32,64],finetune.lr=1e-4,train.beta=2")
    assert name == "wide"
    assert overrides == {"train": ["arch.widths=[16, 32,64]", "beta=2"], "finetune": ["lr=1e-4"]}
    assert sweep.parse_variant("base:") == ("base", {"train": [], "finetune": []})


@pytest.mark.parametrize(
    ("spec", "message"),
    [("base", "expected NAME:KEY=VALUE"), ("x:guide.lr=1", "'guide.lr=1' is not train.KEY=VALUE"),
     ("x:train.beta", "'train.beta' is not train.KEY=VALUE")],
)  # fmt: skip
def test_bad_variant_is_a_one_line_refusal(sweep, spec, message):
    with pytest.raises(SystemExit, match=message) as refused:
        sweep.parse_variant(spec)
    assert "\n" not in str(refused.value)


def test_effectiveness_per_target_is_each_target_row_judged_right(sweep, tmp_path, monkeypatch):
    cf_quality = sys.modules["cf_quality"]
    result = {
        "effectiveness": {
            "balanced_accuracy": 0.5,
            "auroc_macro": 0.6,
            "confusion": {"labels": ["flatpanel", "cr_plate", "portable", "legacy"],
                          "matrix": [[3, 1, 0, 0], [0, 2, 0, 0], [1, 4, 5, 0], [0, 0, 0, 0]]},
        },
        "composition": {"mae_1": 0.0},
        "reversibility": {"mae": 0.01},
        "truth": {"ratio": 0.7, "rare_as_source": {"ratio": 0.8}, "rare_as_target": {"ratio": 0.6}},
        "passed": False,
    }  # fmt: skip

    def fake_cfcl(argv):
        out = tmp_path / "eval"
        out.mkdir()
        (out / "cf_quality.json").write_text(json.dumps(result))
        return 0

    monkeypatch.setattr(cf_quality, "cfcl", fake_cfcl)
    row = cf_quality.evaluate(tmp_path, tmp_path, tmp_path, tmp_path / "eval", [])
    assert row["effectiveness_per_target"] == {"flatpanel": 0.75, "cr_plate": 1.0, "portable": 0.5}
    assert (row["mae_ratio"], row["mae_ratio_rare_source"], row["mae_ratio_rare_target"]) == (0.7, 0.8, 0.6)
    table = sweep.markdown({"variants": {"base": {"seconds": {"train": 12.3}, "base": row, "finetuned": row}}})
    assert "| base | base | 12 | 0.500 | flatpanel 0.75 cr_plate 1.00 portable 0.50 | 0.700 |" in table
    assert len(table.splitlines()) == 4
