"""docs/python.md runs as written: its python blocks and its `cfcl` command lines, in order, on a tiny run."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from cfcl.cli import main
from support.api import tiny_run
from support.dicom import write_dicom
from support.paths import REPO

# torch deprecates TorchScript; loading an exported file is still what its users do
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

DOC = REPO / "docs" / "python.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def doc_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def test_the_python_guide_runs_as_written(tmp_path, monkeypatch):
    tiny_run(tmp_path)
    stored = np.random.default_rng(0).integers(200, 3800, (40, 32)).astype(np.uint16)
    write_dicom(tmp_path / "scan.dcm", stored, WindowCenter=2000, WindowWidth=4000)
    monkeypatch.chdir(tmp_path)
    blocks = doc_blocks()
    assert [kind for kind, _ in blocks].count("python") >= 4
    namespace: dict = {}
    commands = 0
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, str(DOC), "exec"), namespace)
        elif kind == "bash":
            for line in code.splitlines():
                assert line.startswith("cfcl "), line
                assert main(shlex.split(line)[1:]) == 0, line
                commands += 1
    assert commands == 3
    assert {"features", "auc", "x_star", "onnx_features"} <= set(namespace)
    assert sorted(p.name for p in (tmp_path / "cf_png").iterdir()) == [
        "grid.png",
        "scan_to_cr_plate.png",
        "scan_to_flatpanel.png",
    ]
