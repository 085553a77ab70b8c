"""Layers only point down (docs/architecture.md, "Layers"): every ``cfcl`` import in every module,
at module level or inside a function, goes to the module's own layer or one below it. The package
face ``cfcl/__init__.py`` counts as a layer of its own, just above ``api`` (its lazy names reach
it), so ``from cfcl import __version__`` below it is an arrow up. The tests keep a layout of their own
(docs/architecture.md, "Tests"): a folder per package, and no test file imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cfcl

PACKAGE = Path(cfcl.__file__).parent
TESTS = Path(__file__).resolve().parent
# Highest first. The core modules may import each other; the other rooms of one layer may not.
CORE = (
    "config",
    "stage",
    "atomic",
    "layout",
    "training",
    "checkpoint",
    "errors",
    "presets",
    "plotting",
    "distributed",
    "lock",
    "loaders",
    "version",
)
FACE = "__init__"  # the room of ``cfcl`` itself
LAYERS = (
    ("__main__",),
    ("cli",),
    (FACE,),
    ("api",),
    ("pipeline",),
    ("registry",),
    ("report",),
    ("evaluation", "counterfactual"),
    ("contrastive",),
    ("data",),
    CORE,
)
RANK = {room: rank for rank, rooms in enumerate(reversed(LAYERS)) for room in rooms}


def room(module: str) -> str | None:
    """The room of a dotted ``cfcl`` module (``cfcl.data.store`` -> ``data``, ``cfcl`` -> the face); None outside
    cfcl."""
    parts = module.split(".")
    if parts[0] != "cfcl":
        return None
    return parts[1] if len(parts) > 1 else FACE


def module_name(path: Path, package: Path) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool, package: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``source``, relative ones resolved, functions included;
    a name taken from ``cfcl`` itself that is no module of ``package`` (``__version__``) is an import of the face."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base != "cfcl":
                found.append((node.lineno, base))
                continue
            for alias in node.names:  # ``from cfcl import layout`` imports the module cfcl.layout
                submodule = (package / alias.name).is_dir() or (package / f"{alias.name}.py").is_file()
                found.append((node.lineno, f"cfcl.{alias.name}" if submodule else "cfcl"))
    return found


def upward_imports(package: Path) -> list[str]:
    """Every import of a module from a higher layer, or from the other room of a shared layer."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(path, package)
        own = room(module)
        if own is None:
            continue
        if own not in RANK:
            problems.append(f"{path}: room '{own}' is in no layer")
            continue
        for line, target in imported_modules(path.read_text(), module, path.name == "__init__.py", package):
            other = room(target)
            if other is None or other == own:
                continue
            if other not in RANK:
                problems.append(f"{path}:{line} imports {target}, which is in no layer")
                continue
            if RANK[other] > RANK[own] or (RANK[other] == RANK[own] and own not in CORE):
                problems.append(f"{path}:{line} ({own}) imports {target} ({other})")
    return problems


def test_every_import_points_down():
    assert upward_imports(PACKAGE) == []


@pytest.mark.parametrize(
    ("room_name", "source", "needle"),
    [
        ("data", "from cfcl.contrastive.encoders import build_encoder\n", "imports cfcl.contrastive.encoders"),
        ("contrastive", "def f():\n    from cfcl.counterfactual import figures\n", "imports cfcl.counterfactual"),
        ("evaluation", "import cfcl.counterfactual.quality.metrics\n", "imports cfcl.counterfactual.quality.metrics"),
        ("report", "from ..pipeline import plan\n", "imports cfcl.pipeline"),
        ("stage.py", "from cfcl import layout, report\n", "imports cfcl.report"),
        ("counterfactual", "from cfcl.evaluation.metrics import auroc\n", "imports cfcl.evaluation.metrics"),
        ("stage.py", "from cfcl import __version__, layout\n", "imports cfcl (__init__)"),
        ("data", "import cfcl\n", "imports cfcl (__init__)"),
        ("evaluation", "def f():\n    from cfcl import embed\n", "imports cfcl (__init__)"),
        ("registry.py", "def load():\n    from cfcl.pipeline.plan import plan\n", "imports cfcl.pipeline.plan"),
    ],
)
def test_a_planted_upward_import_is_found(tmp_path, room_name, source, needle):
    package = tmp_path / "cfcl"
    for name in ("data", "contrastive", "counterfactual", "evaluation", "report", "pipeline"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "layout.py").write_text("")
    target = package / room_name if room_name.endswith(".py") else package / room_name / "planted.py"
    target.write_text(source)
    problems = upward_imports(package)
    assert len(problems) == 1 and needle in problems[0], problems


def imports_of_test_modules(tests: Path) -> list[str]:
    """Every import of a test file (``test_*``) or of ``conftest`` by a file of ``tests``: what tests share is
    in tests/support/ (builders) and tests/conftest.py (fixtures), so no test runs another's module."""
    problems = []
    for path in sorted(tests.rglob("*.py")):
        module = ".".join(path.relative_to(tests).with_suffix("").parts)
        for line, target in imported_modules(path.read_text(), module, False, PACKAGE):
            if any(part.startswith("test_") or part == "conftest" for part in target.split(".")):
                problems.append(f"{path}:{line} imports {target}")
    return problems


def test_no_test_imports_another_test_file():
    assert imports_of_test_modules(TESTS) == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from test_imageio import write_dicom\n", True),
        ("def f():\n    from contrastive.test_pretrain import SIZE\n", True),
        ("import conftest\n", True),
        ("from support.dicom import write_dicom\n", False),
    ],
)
def test_a_planted_test_file_import_is_found(tmp_path, source, found):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test_planted.py").write_text(source)
    assert bool(imports_of_test_modules(tmp_path)) == found


def test_test_folders_mirror_the_package():
    """tests/<package>/ holds the tests of cfcl/<package>/ (tests/benchmarks/: of the benchmarks/ scripts)."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders - {"support", "benchmarks"} <= packages, folders - packages
