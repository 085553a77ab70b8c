"""benchmarks/calibrate_headroom.py's gate arithmetic on hand-made numbers, and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from support.benchmarks import sibling_importing_benchmark


@pytest.fixture(scope="module")
def headroom():
    with sibling_importing_benchmark("calibrate_headroom") as module:
        yield module


def test_information_gate_is_the_mean_paired_deficit_below_the_majority(headroom):
    ceilings = {"flatpanel": [0.90, 0.86], "cr_plate": [0.89, 0.86], "legacy": [0.85, 0.83]}
    gates = {g.name: g for g in headroom.information_gates(ceilings, "flatpanel")}
    cr, legacy = gates["(a) ceiling deficit, cr_plate vs flatpanel"], gates["(a) ceiling deficit, legacy vs flatpanel"]
    assert cr.value == pytest.approx(0.005) and cr.passed
    assert legacy.value == pytest.approx(0.04) and not legacy.passed
    assert len(gates) == 2  # the majority is not compared with itself


def test_headroom_gate_is_the_mean_gap_over_seeds(headroom):
    assert headroom.robustness_gap(0.80, 0.72) == pytest.approx(0.08)
    gates = headroom.headroom_gates(
        "(b) SimCLR", {"portable": [0.08, 0.04], "legacy": [0.03, 0.05]}, ["portable", "legacy"]
    )
    assert [g.value for g in gates] == pytest.approx([0.06, 0.04])
    assert [g.passed for g in gates] == [True, False]
    assert "PASS" in gates[0].line() and "FAIL" in gates[1].line()


def test_closure_is_the_oracle_gain_over_simclrs_gap_with_an_interval_above_zero(headroom):
    simclr_mix = {"legacy": [0.70, 0.72, 0.71]}
    gaps = {"legacy": [0.10, 0.08, 0.12]}  # mean 0.10
    closed = headroom.closure_gates({"legacy": [0.77, 0.78, 0.77]}, simclr_mix, gaps, ["legacy"])[0]
    assert closed.value == pytest.approx(np.mean([0.07, 0.06, 0.06]) / 0.10) and closed.passed
    noisy = headroom.closure_gates({"legacy": [0.80, 0.70, 0.72]}, simclr_mix, gaps, ["legacy"])[0]
    assert noisy.value is None and not noisy.passed and "holds 0" in noisy.note  # mean 0.03, interval spans 0
    one_seed = headroom.closure_gates({"legacy": [0.80]}, {"legacy": [0.70]}, {"legacy": [0.10]}, ["legacy"])[0]
    assert one_seed.value is None and "+1.00 of the gap" in one_seed.note and ">= 2 seeds" in one_seed.note
    no_gap = headroom.closure_gates(
        {"legacy": [0.80, 0.8]}, {"legacy": [0.70, 0.7]}, {"legacy": [-0.01, 0.0]}, ["legacy"]
    )[0]
    assert no_gap.value is None and "no gap" in no_gap.note


@pytest.mark.parametrize("lacks", ["store", "true_cf"])
def test_a_folder_without_what_the_gates_need_is_a_one_line_refusal(headroom, tmp_path, lacks):
    folder = tmp_path / "data"
    folder.mkdir()
    if lacks == "true_cf":
        from cfcl.data.synthetic.config import SynthConfig
        from cfcl.data.synthetic.generate import generate

        generate(SynthConfig(image_size=16, n_train=4, n_val=4, n_test=0, n_ood_train=0, n_ood_test=0), folder)
        (folder / "true_cf" / "store.json").unlink()
    with pytest.raises(SystemExit) as err:
        headroom.main(["--data", str(folder)])
    message = str(err.value)
    assert message.startswith("calibrate_headroom: ") and "\n" not in message
    assert ("store.json" in message) if lacks == "store" else ("true_cf" in message)


def test_a_work_folder_keeps_its_draw_and_ceilings_and_refuses_another_config(headroom, tmp_path):
    from cfcl.data.synthetic.config import SynthConfig

    sizes = {"image_size": 16, "n_train": 4, "n_val": 4, "n_test": 0, "n_ood_train": 0, "n_ood_test": 0}
    out = tmp_path / "data-s0"
    store = headroom.draw_store(SynthConfig(**sizes), out)
    assert len(store.indices("val")) == 4 and headroom.read_record(out)["ceiling"] == {}
    record = headroom.read_record(out)
    record["ceiling"]["epochs=6"] = {"flatpanel": 0.9}
    (tmp_path / "data-s0.json").write_text(__import__("json").dumps(record))
    assert headroom.cached_ceilings(store, 6, 0, out) == {"flatpanel": 0.9}  # measured once, not trained again
    with pytest.raises(SystemExit, match="another synth config"):
        headroom.draw_store(SynthConfig(**sizes, frames=False), out)


def test_synth_is_a_file_or_a_stage_preset_and_anything_else_a_one_line_refusal(headroom, tmp_path):
    from cfcl.config import build_config
    from cfcl.data.synthetic.config import SynthConfig

    own = tmp_path / "mine.yaml"
    own.write_text("frames: false\n")
    assert headroom.synth_file(str(own)) == own
    preset = build_config(SynthConfig, headroom.synth_file("synth_headroom"))
    assert [s.display_inverted for s in preset.acquisition] == [False, False, True, True]
    with pytest.raises(SystemExit, match=r"^calibrate_headroom: --synth nosuch is neither a file nor a stage preset$"):
        headroom.main(["--synth", "nosuch"])
