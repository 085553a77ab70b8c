"""The table of pretraining methods: what each method is, and the help and config derived from it."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from cfcl.cli import main
from cfcl.contrastive.config import PretrainConfig
from cfcl.contrastive.methods import METHODS, default_cf_store
from cfcl.pipeline.config import RunConfig
from cfcl.pipeline.plan import plan
from support.pipeline import TINY_RUN

NAMES = [
    "simclr",
    "simclr+",
    "cf-simclr",
    "cf-simclr-multi",
    "oracle",
    "oracle-multi",
    "simclr-multi",
    "dino",
    "dino+",
    "cf-dino",
    "oracle-dino",
    "sex-cf-simclr",
    "sex-oracle",
    "oracle-renoised",
    "oracle-recon",
    "cf-simclr-base",
]
GENERATED = {"simclr+", "cf-simclr", "cf-simclr-multi", "dino+", "cf-dino", "sex-cf-simclr", "cf-simclr-base"}
TRUE = {"oracle", "oracle-multi", "oracle-dino", "sex-oracle", "oracle-renoised", "oracle-recon"}
DEFAULT_STORES = {
    "oracle": "true_cf",
    "oracle-multi": "true_cf",
    "oracle-dino": "true_cf",
    "sex-oracle": "true_cf_sex",
    "oracle-renoised": "true_cf_renoised",
}


def _where(predicate) -> set[str]:
    return {name for name, m in METHODS.items() if predicate(m)}


def test_every_method_is_what_it_was_declared_to_be():
    assert list(METHODS) == NAMES  # the order of error messages, and the planner's first DINO method
    assert _where(lambda m: m.uses_counterfactuals) == GENERATED | TRUE
    assert _where(lambda m: m.cf_source == "generated") == GENERATED
    assert _where(lambda m: m.cf_source == "true") == TRUE
    assert _where(lambda m: m.needs_generator) == GENERATED | {"oracle-recon"}
    assert _where(lambda m: m.multi_positive) == {"cf-simclr-multi", "oracle-multi", "simclr-multi"}
    assert _where(lambda m: m.family == "dino") == {"dino", "dino+", "cf-dino", "oracle-dino"}
    assert _where(lambda m: m.views == "self") == {"simclr", "dino"}
    assert _where(lambda m: not m.uses_counterfactuals) == {"simclr", "dino", "simclr-multi"}
    assert _where(lambda m: m.views == "replace") == {"simclr+", "dino+"}
    assert _where(lambda m: m.parents == ("sex",)) == {"sex-cf-simclr", "sex-oracle"}
    assert _where(lambda m: m.parents == ("domain",)) == set(NAMES) - {"sex-cf-simclr", "sex-oracle"}
    controls = {name: (m.base, m.store_variant) for name, m in METHODS.items() if m.base or m.store_variant}
    assert controls == {
        "oracle-renoised": ("oracle", "renoised"),
        "oracle-recon": ("oracle", "recon"),
        "cf-simclr-base": ("cf-simclr", "base"),
    }
    data = Path("D")
    assert {name: default_cf_store(name, data) for name in NAMES} == {
        name: data / DEFAULT_STORES[name] if name in DEFAULT_STORES else None for name in NAMES
    }


def test_a_control_is_the_method_it_controls_reading_another_store():
    for name, m in METHODS.items():
        assert m.name == name and m.description
        assert m.views != "self" or not m.uses_counterfactuals  # a method with counterfactuals uses them in its views
        assert m.uses_counterfactuals or m.views in ("self", "multi")
        if m.base is not None:
            base = METHODS[m.base]
            assert base.base is None and m.store_variant is not None
            assert (
                dataclasses.replace(m, name=base.name, description=base.description, base=None, store_variant=None)
                == base
            )


def test_a_run_of_simclr_multi_plans_no_generator_and_no_counterfactual_store(tmp_path):
    nodes = plan(RunConfig.model_validate({**TINY_RUN, "out": str(tmp_path), "methods": ["simclr", "simclr-multi"]}))
    assert not any(n.name.startswith("cf_") for n in nodes)
    multi = next(n.config for n in nodes if n.name == "pretrain/simclr-multi-s0")
    assert multi.method == "simclr-multi" and multi.cf_store is None and multi.n_cf_views is None


def _help_tokens(text: str) -> set[str]:
    """The words of a help text, with the words argparse broke at a hyphen joined again."""
    return set(re.split(r"[\s,;:()]+", re.sub(r"-\s+", "-", text)))


def test_cfcl_pretrain_help_names_every_method_and_every_store(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    text = text[text.index("options:") :]
    method_part = text[text.index("--method METHOD") : text.index("--data DATA")]
    store_part = text[text.index("--cf-store CF_STORE") : text.index("--resume")]
    assert set(NAMES) <= _help_tokens(method_part)
    store_words = _help_tokens(store_part)
    assert GENERATED | TRUE <= store_words and not {"simclr", "dino", "simclr-multi"} & store_words
    assert {f"DATA/{store}" for store in DEFAULT_STORES.values()} <= store_words


def test_dino_settings_exist_exactly_for_the_dino_family_and_a_bad_method_is_a_config_error():
    assert {name for name in NAMES if PretrainConfig(method=name, data="d").dino is not None} == {
        "dino",
        "dino+",
        "cf-dino",
        "oracle-dino",
    }
    for bad in ("byol", ["dino"]):
        with pytest.raises(ValidationError, match="method"):
            PretrainConfig.model_validate({"method": bad, "data": "d"})


def test_the_cli_reads_the_table_without_numpy_or_torch():
    code = "import sys, cfcl.registry; print(sorted({'numpy', 'torch', 'pandas'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
