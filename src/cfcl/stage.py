"""The stage contract: stage folders, their manifests, the up-to-date check and the resume policy.

Every stage writes one folder holding its artefacts, ``config.yaml`` (the resolved config)
and ``manifest.json`` (inputs with their fingerprints, code version, timings, status).
A stage whose manifest is complete and whose config and inputs are unchanged is up to date.
Every runner goes through :func:`run_stage`, so the CLI and ``cfcl run`` skip, resume and
start afresh by the same rules (docs/architecture.md, "The stage contract").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cfcl import atomic
from cfcl.config import config_dict, config_hash, is_input_path
from cfcl.errors import ConfigError, StoreError
from cfcl.lock import folder_lock
from cfcl.training import last_checkpoint
from cfcl.version import __version__

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
STORE_INFO = "store.json"
CHECKPOINTS = "checkpoints"
TRAINER_OUTPUTS = (CHECKPOINTS, "logs", "tensorboard", "wandb", "mlruns")  # a fresh start clears them


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def write_config(folder: str | Path, config: BaseModel) -> None:
    """The resolved config of a stage (or of a whole run) as ``config.yaml`` in ``folder``."""
    atomic.write_yaml(Path(folder) / CONFIG, config_dict(config))


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def fingerprint(path: str | Path) -> str:
    """Content fingerprint of an input: a stage folder's recorded fingerprint, a bare image
    store's content hash (e.g. ``DATA/true_cf``), or a file's sha256."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is not None and manifest.get("status") == "complete":
            return manifest["fingerprint"]
        store_info = path / STORE_INFO
        if manifest is None and store_info.is_file():
            return json.loads(store_info.read_text())["content_hash"]
        raise StoreError(f"{path} is not a complete stage output or image store (no complete {MANIFEST})")
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]
    raise StoreError(f"input {path} does not exist")


def _fingerprint_of(name: str, cfg_hash: str, inputs: dict[str, dict]) -> str:
    prints = {k: v["fingerprint"] for k, v in inputs.items()}
    text = json.dumps({"stage": name, "config": cfg_hash, "inputs": prints}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_inputs(config: BaseModel) -> dict[str, Path]:
    """Every existing file or folder a config points at (its ``Path`` values), by dotted key."""
    found: dict[str, Path] = {}

    def walk(value: Any, key: str) -> None:
        if is_input_path(value):
            found[key] = value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{key}.{name}" if key else name)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{key}.{i}")
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}")

    walk(config, "")
    return found


def stage_state(out: str | Path, config: BaseModel, name: str | None = None) -> str:
    """What ``out`` holds for this stage (of stage ``name``, if given), config and current inputs.

    ``complete``: finished with them (nothing to do); ``interrupted``: started with them and
    killed (resume from its checkpoints); ``stale``: made with something else; ``absent``.
    """
    manifest = read_manifest(out)
    if manifest is None:
        return "absent"
    if (name is not None and manifest.get("stage") != name) or manifest.get("config_hash") != config_hash(config):
        return "stale"
    try:
        same_inputs = all(
            fingerprint(locate_input(entry, out)) == entry["fingerprint"]
            for entry in manifest.get("inputs", {}).values()
        )
    except StoreError:
        same_inputs = False
    if not same_inputs:
        return "stale"
    return "complete" if manifest.get("status") == "complete" else "interrupted"


def record_input(path: Path, out: Path) -> dict:
    """A manifest's entry for one input: where it is, where it is from ``out``, its fingerprint."""
    path = Path(path).resolve()
    return {"path": str(path), "relative": os.path.relpath(path, Path(out).resolve()), "fingerprint": fingerprint(path)}


def locate_input(entry: dict, out: str | Path) -> Path:
    """Where a recorded input is now: at its place relative to the stage folder if that exists
    (the run folder was moved or copied), else where it was."""
    near = Path(out).resolve() / entry.get("relative", entry["path"])
    return near if near.exists() else Path(entry["path"])


def is_up_to_date(out: str | Path, config: BaseModel, name: str | None = None) -> bool:
    """True when ``out`` holds a complete run of this stage with this config and unchanged inputs."""
    return stage_state(out, config, name) == "complete"


@dataclass
class Stage:
    """A stage run in progress; :func:`run_stage` marks its folder complete with :meth:`finish`.

    ``resume_from`` is the Lightning checkpoint a training body continues from (None: start
    afresh); ``primary`` is False on the other ranks of a distributed run, whose body trains
    but writes nothing (rank 0 writes the folder).
    """

    name: str
    out: Path
    config: BaseModel
    inputs: dict[str, dict]
    resume_from: Path | None = None
    primary: bool = True
    started: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return _fingerprint_of(self.name, config_hash(self.config), self.inputs)

    def _manifest(self, status: str, extra: dict[str, Any]) -> dict:
        return {
            "stage": self.name,
            "status": status,
            "fingerprint": self.fingerprint,
            "config_hash": config_hash(self.config),
            "inputs": self.inputs,
            "code_version": code_version(),
            "started": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "timings": self.timings,
            **extra,
        }

    def timed(self, label: str, seconds: float) -> None:
        self.timings[label] = round(self.timings.get(label, 0.0) + seconds, 3)

    def finish(self, **extra: Any) -> dict:
        self.timings["total"] = round(time.time() - self.started, 3)
        manifest = self._manifest("complete", {"finished": datetime.now(UTC).isoformat(), **extra})
        atomic.write_json(self.out / MANIFEST, manifest)
        return manifest


def check_output_folder(path: Path, what: str) -> None:
    """Refuse an output folder that is a file, or lies under one, before anything is written;
    ``what`` names it as the user gave it (``--out runs/x``)."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            under = "" if folder == path else f" ({folder} is a file)"
            raise ConfigError(f"{what} is not a folder{under}; expected a folder or a path that does not exist yet")


def _resume_mode(config: BaseModel) -> str:
    """A config's ``resume`` key (``auto``, ``require`` or ``never``); ``auto`` for a config without one."""
    return getattr(config, "resume", "auto")


def start_stage(
    name: str,
    out: str | Path,
    config: BaseModel,
    inputs: dict[str, Path] | None = None,
    force: bool = False,
) -> Stage:
    """Claim ``out`` for a run of stage ``name``; refuses to overwrite a different complete output.

    The inputs recorded are every path in ``config`` that exists, plus ``inputs``; each is
    fingerprinted so that a changed upstream output makes this stage out of date. The trainer
    outputs in ``out`` (checkpoints, logs) survive only when ``out`` holds an interrupted run of
    this very stage and config and neither ``force`` nor ``resume: never`` asks for a fresh start,
    so a training loop resumes that run and never another one; ``resume: require`` refuses
    to start afresh.
    """
    out = Path(out)
    previous = read_manifest(out)
    mode = _resume_mode(config)
    resumable = stage_state(out, config, name) == "interrupted" and not force and mode != "never"
    if mode == "require" and (not resumable or last_checkpoint(out) is None):
        raise ConfigError(
            f"resume: {out} holds no unfinished run of this config to resume (no {CHECKPOINTS}/last.ckpt)"
        )
    paths = {**config_inputs(config), **(inputs or {})}
    recorded = {k: record_input(v, out) for k, v in paths.items()}
    if previous is not None and previous.get("status") == "complete" and not force:
        if previous.get("stage") != name or previous.get("fingerprint") != _fingerprint_of(
            name, config_hash(config), recorded
        ):
            raise StoreError(
                f"{out} already holds a complete '{previous.get('stage')}' output made with another "
                "config or inputs; pass --force to overwrite it"
            )
    check_output_folder(out, f"output {out}")
    if not resumable:
        for folder in TRAINER_OUTPUTS:
            shutil.rmtree(out / folder, ignore_errors=True)
    stage = Stage(name, out, config, recorded, resume_from=last_checkpoint(out) if resumable else None)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config)
    atomic.write_json(out / MANIFEST, stage._manifest("running", {}))
    return stage


StageBody = Callable[[Stage], "dict[str, Any] | None"]


def run_stage(
    name: str,
    out: str | Path,
    config: BaseModel,
    body: StageBody,
    force: bool = False,
    inputs: dict[str, Path] | None = None,
    every_rank: bool = False,
) -> dict:
    """Run stage ``name`` into ``out`` unless it is up to date; returns its manifest.

    An up-to-date ``out`` (complete, same config and inputs) is skipped with one line unless
    ``force``. Otherwise the folder is claimed (:func:`start_stage`) under its write lock
    (:func:`cfcl.lock.folder_lock`), ``body(stage)`` does the work and returns extra manifest
    fields (or None), and the folder is marked complete with one line: ``<stage>: <out> done in
    X s``, then the body's ``summary`` field (what it made, in a few words) if it returns one.

    Under several processes (docs/architecture.md, "Several processes") only rank 0 decides, claims,
    writes and finishes. A stage with ``every_rank`` (a Lightning training loop, the counterfactual
    store's shared chunks, evaluation's feature shards) runs its body on every rank, from the
    checkpoint rank 0 chose once it had claimed the folder; any other stage runs on rank 0 alone.
    The other ranks get ``{}``.
    """
    from cfcl.distributed import current

    coordinator = current()
    writer = coordinator.ranks.is_writer
    if not (writer or every_rank):
        return {}
    out = Path(out)
    skip = writer and not force and _resume_mode(config) != "require" and is_up_to_date(out, config, name)
    if every_rank:
        skip = coordinator.agree(skip, f"{name}: up to date?")
    if skip:
        if not writer:
            return {}
        print(f"{name}: {out} is up to date (same config and inputs); skipped", flush=True)
        return read_manifest(out)
    if not writer:
        resume_from = coordinator.agree(None, f"{name}: claimed")
        body(Stage(name, out, config, {}, resume_from=resume_from, primary=False))
        return {}
    with folder_lock(out):
        stage = start_stage(name, out, config, inputs=inputs, force=force)
        if every_rank:
            coordinator.agree(stage.resume_from, f"{name}: claimed")
        extra = body(stage)
        manifest = stage.finish(**(extra or {}))
    summary = f"; {manifest['summary']}" if manifest.get("summary") else ""
    print(f"{name}: {out} done in {manifest['timings']['total']:.1f} s{summary}", flush=True)
    return manifest
