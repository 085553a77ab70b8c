"""cfcl run: the plan, caching, --only/--from, and a run killed midway that finishes like an uninterrupted one."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cfcl.config import build_config, config_hash, read_yaml
from cfcl.data.synthetic.config import SynthConfig
from cfcl.errors import ConfigError
from cfcl.pipeline.config import RunConfig
from cfcl.pipeline.plan import plan
from cfcl.pipeline.run import load_run_config, run_pipeline
from cfcl.presets import resolve_config_path
from cfcl.training import DevicesConfig, TrainerConfig
from support.datasets import CSV_OPTIONS, csv_root
from support.pipeline import QUIET, TINY_RUN


def tiny_run(out: Path, **changes) -> RunConfig:
    return RunConfig.model_validate({**TINY_RUN, "out": str(out), **changes})


def test_plan_wires_stages_in_dependency_order(tmp_path):
    nodes = plan(tiny_run(tmp_path))
    names = [n.name for n in nodes]
    assert names[0] == "data" and names[-1] == "eval"
    assert (
        names.index("cf_model")
        < names.index("cf_finetune")
        < names.index("cf_store")
        < names.index("pretrain/cf-simclr-s0")
    )
    by_name = {n.name: n for n in nodes}
    assert by_name["pretrain/oracle-s0"].config.cf_store == tmp_path / "data" / "true_cf"
    assert by_name["pretrain/cf-simclr-s0"].config.cf_store == tmp_path / "cf_store"
    assert by_name["pretrain/simclr-s0"].config.cf_store is None
    assert by_name["cf_store"].config.generator == tmp_path / "cf_finetune"
    assert by_name["cf_quality_base"].config.generator == tmp_path / "cf_model"
    assert [Path(e).name for e in by_name["eval"].config.encoders] == ["simclr-s0", "cf-simclr-s0", "oracle-s0"]
    assert by_name["cf_guide"].config.role == "guide" and by_name["cf_judge"].config.role == "judge"
    assert all(
        n.config.trainer.progress_bar is False
        for n in nodes
        if isinstance(getattr(n.config, "trainer", None), TrainerConfig)
    )
    # The counterfactual store takes only the run trainer's device keys, which stay out of its config hash.
    devices = plan(tiny_run(tmp_path, trainer={**QUIET, "accelerator": "cpu", "devices": 2}))
    store = next(n.config for n in devices if n.name == "cf_store")
    assert type(store.trainer) is DevicesConfig and store.trainer.devices == 2 and store.trainer.accelerator == "cpu"
    assert config_hash(store) == config_hash(by_name["cf_store"].config)
    assert config_hash(next(n.config for n in devices if n.name == "cf_model")) != config_hash(
        by_name["cf_model"].config
    )


def test_plan_judges_the_sex_counterfactuals_only_with_a_generated_sex_method(tmp_path):
    scanner = {n.name: n for n in plan(tiny_run(tmp_path))}
    oracle = {n.name for n in plan(tiny_run(tmp_path, methods=[*TINY_RUN["methods"], "sex-oracle"]))}
    assert not {"cf_judge_sex", "cf_quality_sex", "cf_guide_sex"} & (set(scanner) | oracle)
    sexed = {n.name: n for n in plan(tiny_run(tmp_path, methods=[*TINY_RUN["methods"], "sex-cf-simclr"]))}
    judge, quality, guide = sexed["cf_judge_sex"], sexed["cf_quality_sex"], sexed["cf_guide_sex"]
    assert (guide.group, guide.config.role, guide.config.parent) == ("cf_guide", "guide", "sex")
    assert (
        guide.config.arch_kwargs == sexed["cf_guide"].config.arch_kwargs
        and guide.config.seed == sexed["cf_guide"].config.seed
    )
    # fine-tuning is guided by the scanner and by sex, so that the sex counterfactuals change sex
    assert sexed["cf_finetune"].config.guide == [tmp_path / "cf_guide", tmp_path / "cf_guide_sex"]
    assert [n.name for n in plan(tiny_run(tmp_path, methods=["sex-cf-simclr"]))].index("cf_guide_sex") < list(
        sexed
    ).index("cf_finetune")
    assert "cf_guide_sex" not in {
        n.name for n in plan(tiny_run(tmp_path, methods=["sex-cf-simclr"], finetune={"enabled": False}))
    }
    assert (judge.group, judge.config.role, judge.config.parent) == ("cf_judge", "judge", "sex")
    assert judge.config.arch_kwargs == sexed["cf_judge"].config.arch_kwargs  # the judge section and preset
    assert quality.group == "cf_quality" and quality.config.intervene == ["sex"]
    assert quality.config.judge == [tmp_path / "cf_judge_sex"]
    assert quality.config.generator == sexed["cf_store_sex"].config.generator == tmp_path / "cf_finetune"
    # the scanner's classifiers, quality and store keep their configs, so a run made before resumes with the new
    # stages only
    # (cf_finetune's changes with its guides: it and what reads it run again)
    for name in ("cf_guide", "cf_judge", "cf_quality_base", "cf_store", "cf_quality"):
        assert config_hash(sexed[name].config) == config_hash(scanner[name].config)
    assert sexed["cf_guide"].config.parent == "domain" and scanner["cf_finetune"].config.guide == tmp_path / "cf_guide"
    # a single guide, or a list of one, dumps as the single path it was before several guides could be given
    one = scanner["cf_finetune"].config
    assert one.model_dump()["guide"] == tmp_path / "cf_guide"
    assert config_hash(type(one).model_validate({**one.model_dump(), "guide": [tmp_path / "cf_guide"]})) == config_hash(
        one
    )


def test_plan_without_generated_counterfactuals_skips_the_generator(tmp_path):
    nodes = plan(tiny_run(tmp_path, methods=["simclr", "oracle", "oracle-multi"]))
    assert not any(n.name.startswith("cf_") for n in nodes)
    by_name = {n.name: n for n in nodes}
    for oracle in ("oracle", "oracle-multi"):
        assert by_name[f"pretrain/{oracle}-s0"].config.cf_store == tmp_path / "data" / "true_cf"


def test_run_config_errors_name_the_section(tmp_path):
    bad = {**TINY_RUN, "pretrain": {**TINY_RUN["pretrain"], "temprature": 0.2}}
    with pytest.raises(ConfigError, match=r"section 'pretrain'.*temprature"):
        plan(RunConfig.model_validate(bad))
    real = {**TINY_RUN, "data": {"source": "prepare", "prepare": {"dataset": "csv", "root": str(tmp_path)}}}
    with pytest.raises(ConfigError, match="oracle"):
        plan(RunConfig.model_validate(real))
    with pytest.raises(ValueError, match="methods"):
        RunConfig.model_validate({"methods": ["byol"]})
    empty_preset = {**TINY_RUN, "data": {"source": "prepare", "prepare": {"preset": None}}}
    with pytest.raises(ConfigError, match=r"section 'data.prepare': preset is empty"):
        plan(RunConfig.model_validate(empty_preset))


def test_draws_plan_one_whole_run_per_draw_each_the_run_of_that_synthetic_seed(tmp_path):
    single = plan(tiny_run(tmp_path))
    nodes = plan(tiny_run(tmp_path, draws=[100, 7]))
    assert len(nodes) == 2 * len(single)
    for k, draw in enumerate((100, 7)):
        own = nodes[k * len(single) : (k + 1) * len(single)]
        synth = {**TINY_RUN["data"]["synth"], "seed": draw}
        alone = plan(tiny_run(tmp_path / f"draw-{draw}", data={**TINY_RUN["data"], "synth": synth}))
        assert [n.name for n in own] == [f"draw-{draw}/{n.name}" for n in alone]
        assert [(n.out, n.group, n.section, n.config) for n in own] == [
            (n.out, n.group, n.section, n.config) for n in alone
        ]
        assert own[0].out == tmp_path / f"draw-{draw}" / "data" and own[0].config.seed == draw
    by_name = {n.name: n.config for n in nodes}
    assert by_name["draw-7/pretrain/cf-simclr-s0"].cf_store == tmp_path / "draw-7" / "cf_store"
    assert by_name["draw-7/cf_model"].data == tmp_path / "draw-7" / "data"
    assert by_name["draw-100/eval"].encoders[0] == tmp_path / "draw-100" / "pretrain" / "simclr-s0"


def test_a_run_without_draws_plans_as_before(tmp_path):
    without = plan(tiny_run(tmp_path))
    assert [(n.name, n.out, n.config) for n in without] == [
        (n.name, n.out, n.config) for n in plan(tiny_run(tmp_path, draws=[]))
    ]
    assert all(n.out == tmp_path / n.name for n in without)


def test_draws_need_the_synthetic_benchmark_and_set_its_seed_alone(tmp_path):
    real = {"source": "prepare", "prepare": {"dataset": "csv", "root": str(tmp_path)}}
    with pytest.raises(ConfigError) as err:
        plan(tiny_run(tmp_path, methods=["simclr"], data=real, draws=[1, 2]))
    assert re.fullmatch(
        r"run config: draws \[1, 2\] need data.source synth .*a real dataset \('prepare'\) has one draw: remove draws",
        str(err.value),
    )
    seeded = {**TINY_RUN["data"], "synth": {**TINY_RUN["data"]["synth"], "seed": 3}}
    with pytest.raises(ConfigError, match=r"data.synth.seed and draws both set .*: remove data.synth.seed$"):
        plan(tiny_run(tmp_path, data=seeded, draws=[1]))
    with pytest.raises(ValueError, match="draws must be a list of distinct non-negative integers"):
        tiny_run(tmp_path, draws=[1, 1])


def test_each_draw_is_a_run_folder_of_its_own_and_is_skipped_when_done(tmp_path, capsys):
    run, source = load_run_config("demo", out=tmp_path / "r", overrides=["draws=[1,2]"])
    assert run.draws == [1, 2] and plan(run, source)[0].name == "draw-1/data"  # cfcl run NAME --set draws=...
    run = tiny_run(tmp_path / "r", methods=["simclr"], draws=[1, 2])
    run_pipeline(run, only="data")
    draws = [tmp_path / "r" / f"draw-{d}" for d in (1, 2)]
    first, second = (np.load(d / "data" / "images.npy") for d in draws)
    assert first.shape == second.shape and not np.array_equal(first, second)  # another draw of the benchmark
    for draw, folder in zip((1, 2), draws):
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["data"]["synth"]["seed"] == draw and config["draws"] == [] and config["out"] == str(folder)
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["draws"] == [1, 2]
    capsys.readouterr()
    run_pipeline(tiny_run(tmp_path / "r", methods=["simclr"], draws=[1, 2, 3]), dry_run=True)
    planned = capsys.readouterr().out
    for name, action in (("draw-1/data", "up to date"), ("draw-2/data", "up to date"), ("draw-3/data", "run")):
        assert re.search(rf"^  {name} +{action}$", planned, re.M), name
    assert re.search(r"^  draw-2/pretrain/simclr-s0 +run$", planned, re.M)


def test_the_deciding_preset_runs_the_benchmark_with_headroom_on_five_fresh_draws(tmp_path):
    benchmark = {n.name: n.config for n in plan(load_run_config("benchmark", out=tmp_path)[0])}
    headroom = build_config(SynthConfig, resolve_config_path("synth_headroom"))
    decide, source = load_run_config("benchmark_decide", out=tmp_path)
    nodes = {n.name: n.config for n in plan(decide, source)}
    assert decide.draws == [100, 101, 102, 103, 104] and 0 not in decide.draws and 1 not in decide.draws
    # the default benchmark is one draw of it, the development draw
    assert benchmark["data"] == headroom and headroom.seed == 0
    for draw in decide.draws:
        folder = tmp_path / f"draw-{draw}"
        # the benchmark with headroom (its synth preset) with the draw's seed, and the benchmark's pretraining
        # recipe with half of the positive pairs across scanners
        assert nodes[f"draw-{draw}/data"] == headroom.model_copy(update={"seed": draw})
        simclr = nodes[f"draw-{draw}/pretrain/simclr-s0"]
        assert simclr == benchmark["pretrain/simclr-s0"].model_copy(update={"data": folder / "data", "p_cf": 0.5})
        assert {"oracle-multi-s3", "cf-simclr-multi-s3"} <= {p.name for p in nodes[f"draw-{draw}/eval"].encoders}
        assert nodes[f"draw-{draw}/eval"].label_draws == 10


def test_the_sex_preset_keeps_the_benchmark_its_tissue_was_calibrated_on(tmp_path):
    synth = build_config(SynthConfig, resolve_config_path("synth"))
    nodes = {n.name: n.config for n in plan(load_run_config("benchmark_sex", out=tmp_path)[0])}
    # the previous default design (frames, faint lesions) with breast tissue, and every positive pair across
    # scanners, whatever the default benchmark has become
    assert nodes["data"].model_copy(update={"sex": synth.sex}) == synth and nodes["data"].sex != synth.sex
    assert nodes["pretrain/sex-cf-simclr-s0"].p_cf == nodes["pretrain/cf-simclr-s0"].p_cf == 1.0


def _metrics(run: Path) -> pd.DataFrame:
    return (
        pd.read_csv(run / "eval" / "metrics.csv")
        .sort_values(["method", "seed", "protocol", "label_fraction", "test_set", "domain", "metric"])
        .reset_index(drop=True)
    )


def _run_until(config_file: Path, stage_dir: Path) -> None:
    """Start `cfcl run` and kill it as soon as ``stage_dir`` holds a running manifest."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfcl.cli", "run", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    manifest = stage_dir / "manifest.json"
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and '"running"' in manifest.read_text():
            time.sleep(1.0)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_run_finishes_with_the_metrics_of_an_uninterrupted_one(tmp_path, capsys):
    reference = tmp_path / "reference"
    run_pipeline(tiny_run(reference))
    assert (reference / "report" / "index.html").is_file()

    printed = capsys.readouterr().out  # every stage says in one line what it did
    for node in plan(tiny_run(reference)):
        assert re.search(rf"^\S+: {re.escape(str(node.out))} done in [\d.]+ s", printed, re.M), node.name
    assert re.search(
        r"^cf_store: \S+ done in [\d.]+ s; 192 counterfactuals of the train images \(domain changed\)$", printed, re.M
    )
    assert re.search(
        r"^cf_quality: \S+ done in [\d.]+ s; \d+ of \d+ quality targets met.*; cf_quality.json$", printed, re.M
    )
    run_pipeline(tiny_run(reference))
    second = capsys.readouterr().out
    assert second.count("up to date") == len(plan(tiny_run(reference)))

    moved = tmp_path / "moved"
    shutil.copytree(reference, moved)
    shutil.rmtree(reference / "data")
    run_pipeline(tiny_run(moved), dry_run=True)
    assert capsys.readouterr().out.count("up to date") == len(plan(tiny_run(moved)))
    shutil.rmtree(moved)

    killed = tmp_path / "killed"
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump({**TINY_RUN, "out": str(killed)}))
    _run_until(config_file, killed / "cf_model")
    _run_until(config_file, killed / "pretrain" / "cf-simclr-s0")
    assert not (killed / "eval" / "metrics.csv").exists()
    run_pipeline(tiny_run(killed))
    pd.testing.assert_frame_equal(_metrics(killed), _metrics(reference))


def test_only_and_from_select_stages(tmp_path, capsys):
    run = tiny_run(tmp_path / "r", methods=["simclr"])
    run_pipeline(run, only="data")
    out = capsys.readouterr().out
    assert "data" in out and "pretrain" not in out
    with pytest.raises(ConfigError, match="--from"):
        run_pipeline(run, start="nonsense")
    run_pipeline(run, dry_run=True)
    plan_text = capsys.readouterr().out
    assert re.search(r"^  data +up to date$", plan_text, re.M) and re.search(
        r"^  pretrain/simclr-s0 +run$", plan_text, re.M
    )


@pytest.mark.slow
def test_dino_methods_run_through_evaluation_and_report(tmp_path):
    pretrain = {
        **TINY_RUN["pretrain"],
        "optimizer": "adamw",
        "encoder": {
            "arch": "vit",
            "arch_kwargs": {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
        },
        "dino": {
            "prototypes": 32,
            "head_hidden": 16,
            "head_bottleneck": 8,
            "n_local": 2,
            "local_size": 16,
            "ibot_weight": 1.0,
        },
    }
    generated = {n.name: n.config for n in plan(tiny_run(tmp_path, methods=["dino", "cf-dino"], pretrain=pretrain))}
    assert (
        generated["pretrain/cf-dino-s0"].cf_store == tmp_path / "cf_store"
        and generated["pretrain/dino-s0"].cf_store is None
    )
    # the true counterfactuals keep the run small (no generator) and still train on counterfactual views
    run = tiny_run(tmp_path, methods=["dino", "oracle-dino"], pretrain=pretrain)
    run_pipeline(run)
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert {"dino", "oracle-dino"} <= set(metrics["method"])
    assert (tmp_path / "report" / "index.html").is_file()


def test_sex_methods_condition_the_generator_on_sex_and_add_the_sex_store(tmp_path):
    plain = {n.name: n.config for n in plan(tiny_run(tmp_path, methods=["simclr", "cf-simclr"]))}
    assert plain["cf_model"].parents == ["domain"] and "cf_store_sex" not in plain
    nodes = {n.name: n.config for n in plan(tiny_run(tmp_path, methods=["cf-simclr", "sex-cf-simclr", "sex-oracle"]))}
    assert nodes["cf_model"].parents == ["domain", "sex"]
    assert nodes["cf_store"].intervene == ["domain"] and nodes["cf_store_sex"].intervene == ["sex"]
    assert nodes["cf_store_sex"].generator == tmp_path / "cf_finetune"
    assert nodes["pretrain/cf-simclr-s0"].cf_store == tmp_path / "cf_store"
    assert nodes["pretrain/sex-cf-simclr-s0"].cf_store == tmp_path / "cf_store_sex"
    assert nodes["pretrain/sex-oracle-s0"].cf_store == tmp_path / "data" / "true_cf_sex"
    # the scanner store's config (and so its cache) is the same with or without the sex methods
    assert config_hash(nodes["cf_store"]) == config_hash(plain["cf_store"])
    only_sex = [n.name for n in plan(tiny_run(tmp_path, methods=["sex-cf-simclr"]))]
    assert "cf_store_sex" in only_sex and "cf_store" not in only_sex
    assert not any(n.name.startswith("cf_") for n in plan(tiny_run(tmp_path, methods=["simclr", "sex-oracle"])))


@pytest.mark.slow
def test_sex_methods_run_through_evaluation_and_report(tmp_path):
    from cfcl.data.store import ImageStore

    run_pipeline(tiny_run(tmp_path, methods=["sex-cf-simclr", "sex-oracle"], finetune={"enabled": False}))
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert {"sex-cf-simclr", "sex-oracle"} <= set(metrics["method"])
    store = ImageStore.open(tmp_path / "cf_store_sex")
    assert (
        store.intervened == {"sex": ["F", "M"]}
        and store.info["source_store"] == ImageStore.open(tmp_path / "data").content_hash
    )
    assert (tmp_path / "report" / "index.html").is_file()


CONTROLS = ["cf-simclr-base", "oracle-renoised", "oracle-recon"]


def test_the_oracle_controls_add_their_stores_only_when_listed(tmp_path):
    plain = {n.name: n.config for n in plan(tiny_run(tmp_path, methods=["simclr", "cf-simclr", "oracle"]))}
    assert not {"cf_store_base", "cf_store_recon"} & set(plain) and plain["data"].renoised_counterfactuals is False
    assert plain["cf_store"].source is None
    nodes = {n.name: n.config for n in plan(tiny_run(tmp_path, methods=["simclr", "cf-simclr", "oracle", *CONTROLS]))}
    assert nodes["data"].renoised_counterfactuals is True
    assert nodes["cf_store_base"].generator == tmp_path / "cf_model" and nodes["cf_store_base"].source is None
    assert nodes["cf_store_recon"].generator == tmp_path / "cf_finetune"
    assert nodes["cf_store_recon"].source == tmp_path / "data" / "true_cf"
    assert nodes["pretrain/cf-simclr-base-s0"].cf_store == tmp_path / "cf_store_base"
    assert nodes["pretrain/oracle-renoised-s0"].cf_store == tmp_path / "data" / "true_cf_renoised"
    assert nodes["pretrain/oracle-recon-s0"].cf_store == tmp_path / "cf_store_recon"
    # Every other stage keeps its config hash, but data's (only when oracle-renoised is listed) and eval's (more
    # encoders).
    for name, config in plain.items():
        assert config_hash(nodes[name]) == config_hash(config) or name in ("data", "eval"), name
    generated_only = {
        n.name: n.config for n in plan(tiny_run(tmp_path, methods=["simclr", "cf-simclr-base", "oracle-recon"]))
    }
    assert config_hash(generated_only["data"]) == config_hash(plain["data"]) and "cf_store" not in generated_only
    # Without fine-tuning the generator before it is the generator: cf-simclr-base reads cf_store.
    unfinetuned = [
        n for n in plan(tiny_run(tmp_path, methods=["cf-simclr", "cf-simclr-base"], finetune={"enabled": False}))
    ]
    assert [n.name for n in unfinetuned].count("cf_store") == 1 and not any(
        n.name == "cf_store_base" for n in unfinetuned
    )
    assert {n.name: n.config for n in unfinetuned}["pretrain/cf-simclr-base-s0"].cf_store == tmp_path / "cf_store"


def test_every_shipped_run_preset_plans_and_the_benchmark_presets_share_one_recipe(tmp_path):
    from cfcl.presets import preset_names, resolve_config_path

    run_presets = preset_names("run")
    assert {"benchmark", "benchmark_science", "demo", "padchest"} <= set(run_presets)
    planned = {name: {n.name: n.config for n in plan(load_run_config(name, out=tmp_path)[0])} for name in run_presets}
    # The decisive preset and the full science differ in methods and baselines, not in how an encoder is trained.
    simclr = [
        planned[name]["pretrain/simclr-s0"] for name in ("benchmark", "benchmark_science", "benchmark_oracle_controls")
    ]
    assert len({config_hash(c) for c in simclr}) == 1 and simclr[0].trainer.precision == "bf16-mixed"
    assert planned["benchmark"]["eval"].label_draws == planned["benchmark_science"]["eval"].label_draws == 10
    # That recipe is the pretrain preset in bfloat16 with channels-last, and nothing else.
    recipe = read_yaml(resolve_config_path("pretrain_benchmark"))
    assert (recipe.pop("channels_last"), recipe["trainer"].pop("precision")) == (True, "bf16-mixed")
    assert recipe == read_yaml(resolve_config_path("pretrain"))


def test_the_benchmark_preset_keeps_its_stages_and_hashes_beside_the_controls(tmp_path):
    benchmark, source = load_run_config("benchmark", out=tmp_path)
    controls, _ = load_run_config("benchmark_oracle_controls", out=tmp_path)
    before = {n.name: config_hash(n.config) for n in plan(benchmark, source)}
    same_runs = controls.model_copy(update={"methods": benchmark.methods, "seeds": benchmark.seeds})
    after = {n.name: config_hash(n.config) for n in plan(same_runs, source)}
    # The controls preset holds the benchmark's settings (but evaluation's label draws and supervised baseline).
    assert before.pop("eval") != after.pop("eval") and before == after
    # Without a generated sex method fine-tuning is guided by the scanner alone, one path as before (so its hash holds).
    for preset in ("benchmark", "demo", "benchmark_oracle_controls", "benchmark_dino"):
        nodes = {n.name: n.config for n in plan(load_run_config(preset, out=tmp_path)[0])}
        assert (
            not any(name.startswith("cf_guide_") for name in nodes)
            and nodes["cf_finetune"].guide == tmp_path / "cf_guide"
        )
    planned = [n.name for n in plan(controls)]
    assert {"cf_store", "cf_store_base", "cf_store_recon", "pretrain/oracle-renoised-s2"} <= set(planned)


def test_every_section_is_validated_whether_the_run_uses_it_or_not(tmp_path):
    real = {"source": "prepare", "prepare": {"dataset": "csv", "root": str(tmp_path)}}
    unused = {  # section -> a run that does not use it, with a mistake in it
        "data.prepare": {"data": {**TINY_RUN["data"], "prepare": {"rooot": "/x"}}},
        "data.synth": {"methods": ["simclr"], "data": {**real, "synth": {"n_trian": 5}}},
        "generator": {"methods": ["simclr", "oracle"], "generator": {**TINY_RUN["generator"], "bta": 3}},
        "guide": {"methods": ["simclr"], "guide": {"lr": "fast"}},
        "finetune.config": {"finetune": {"enabled": False, "config": {"bound_batchs": 2}}},
        "pretrain": {"pretrain": {**TINY_RUN["pretrain"], "dino": {"protoypes": 32}}},  # DINO settings of a SimCLR run
    }
    for section, changes in unused.items():
        with pytest.raises(ConfigError, match=rf"section '{re.escape(section)}': (unknown key|invalid value)"):
            plan(tiny_run(tmp_path, **changes))
    assert not list(tmp_path.iterdir())


def test_the_dataset_root_is_checked_before_anything_runs_unless_the_data_is_up_to_date(tmp_path, capsys):
    root = csv_root(tmp_path)
    data = {"source": "prepare", "prepare": {"dataset": "csv", "root": str(root), "size": 16, "csv": CSV_OPTIONS}}
    run = tiny_run(tmp_path / "run", methods=["simclr"], data=data)
    run_pipeline(run, only="data")
    assert re.search(r"^data: \S+ done in [\d.]+ s; 12 images written \(train: ", capsys.readouterr().out, re.M)
    written = {name: (tmp_path / "run" / name).read_bytes() for name in ("config.yaml", "data/manifest.json")}
    root.rename(tmp_path / "moved")  # the store is made: a run that does not prepare it again needs no root
    run_pipeline(run, dry_run=True)
    assert re.search(r"^  data +up to date$", capsys.readouterr().out, re.M)
    for start in ("data", None):
        changed = (
            run
            if start
            else tiny_run(
                tmp_path / "run", methods=["simclr"], data={**data, "prepare": {**data["prepare"], "seed": 1}}
            )
        )
        with pytest.raises(
            ConfigError,
            match=rf"section 'data.prepare': dataset root {re.escape(str(root))} \(config key 'root'\) is not a folder",
        ):
            run_pipeline(changed, start=start, dry_run=True)
        with pytest.raises(ConfigError, match="not a folder"):
            run_pipeline(changed, start=start)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "data"]
    assert written == {name: (tmp_path / "run" / name).read_bytes() for name in written}


def test_a_run_config_builds_on_a_run_preset(tmp_path):
    (tmp_path / "mine.yaml").write_text("preset: benchmark\nseeds: [5]\n")
    mine, _ = load_run_config(tmp_path / "mine.yaml", out=tmp_path / "r")
    shipped, _ = load_run_config("benchmark", out=tmp_path / "r")
    assert mine.seeds == [5] and shipped.seeds != [5]
    assert mine.model_dump(exclude={"seeds"}) == shipped.model_dump(exclude={"seeds"})
