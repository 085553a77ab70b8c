"""A trained generator as a plain object, and ``cfcl cf apply``: counterfactuals of a user's files.

:class:`Generator` wraps the HVAE of a ``generator.pt`` with parent values given as names
(``{"domain": "scanner A", "sex": "F", "age": 61}``) instead of model codes. ``cfcl cf apply``
decodes PNG/JPEG/DICOM files as ``cfcl data prepare`` decoded the generator's training store
(:mod:`cfcl.data.inputs`) and writes one PNG per file and target scanner.

The source scanner of a file is never guessed: abduction depends on it and a file does not
reliably say which scanner it is from, so the caller names it (``--from``). A continuous parent
not given (e.g. age) takes its training mean; a discrete one other than the scanner must be given.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from cfcl import atomic
from cfcl.counterfactual.generator.checkpoint import generator_file, load_generator
from cfcl.counterfactual.generator.hvae import HVAE
from cfcl.counterfactual.generator.inference import Abduction, abduct, predict
from cfcl.counterfactual.parents import ParentError, ParentSpec
from cfcl.data.inputs import decode_options_of, image_batch_of, read_images
from cfcl.data.store import INFO, ImageStore
from cfcl.errors import CfclError, StoreError
from cfcl.plotting import image_grid, save_png
from cfcl.stage import locate_input, read_manifest

SCANNER = "domain"
ParentValue = str | int | float | Sequence[Any] | torch.Tensor


def _names(spec: ParentSpec, codes: Sequence[int]) -> list[str]:
    return [spec.names[c] if 0 <= c < len(spec.names) else str(c) for c in codes]


def _parent_label(spec: ParentSpec) -> str:
    return "scanner" if spec.name == SCANNER else f"parent '{spec.name}' value"


def parent_tensor(spec: ParentSpec, value: ParentValue, batch: int) -> torch.Tensor:
    """One parent for ``batch`` images from a scalar or one value per image: a discrete parent by
    name (e.g. a scanner's name) or code, a continuous one as a number in the column's units."""
    items = value.tolist() if isinstance(value, torch.Tensor) else value
    items = list(items) if isinstance(items, (list, tuple, np.ndarray)) else [items] * batch
    if len(items) != batch:
        raise ParentError(f"parent '{spec.name}' has {len(items)} values for {batch} images")
    if spec.kind == "continuous":
        try:
            return torch.tensor([float(v) for v in items], dtype=torch.float32)
        except (TypeError, ValueError):
            raise ParentError(f"parent '{spec.name}' is a number, got {items[:3]}") from None
    codes = []
    for item in items:
        code = spec.names.index(item) if isinstance(item, str) and item in spec.names else item
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or code not in spec.seen:
            raise ParentError(
                f"the generator was not trained on {_parent_label(spec)} {item!r} "
                f"(it knows: {', '.join(_names(spec, spec.seen))})"
            )
        codes.append(int(code))
    return torch.tensor(codes, dtype=torch.long)


@dataclass
class Generator:
    """A trained counterfactual generator (eval mode, CPU unless moved with :meth:`to`).

    Images are float32 ``[B, 1, H, W]`` in [0, 1] (or uint8 ``[B, H, W]`` as in an image store),
    ``H = W = image_size``. Parents are a mapping name -> value: a scanner or category by name
    (or integer code), a continuous parent (age) as a number; one value for all images or one
    per image. Counterfactuals are float32 ``[B, 1, H, W]`` in [0, 1].
    """

    model: HVAE
    info: dict[str, Any]
    path: Path

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def parents(self) -> list[str]:
        """The parents the model is conditioned on, e.g. ``['domain', 'sex', 'age']``."""
        return [spec.name for spec in self.model.specs]

    @property
    def scanners(self) -> list[str]:
        """The scanners (store domains) the generator was trained on: the valid targets."""
        return _names(self.spec(SCANNER), self.spec(SCANNER).seen)

    def spec(self, name: str) -> ParentSpec:
        """How parent ``name`` enters the model (kind, classes seen in training, mean of a continuous one)."""
        for spec in self.model.specs:
            if spec.name == name:
                return spec
        raise ParentError(f"generator {self.path} has no parent '{name}' (its parents: {', '.join(self.parents)})")

    def to(self, device: str | torch.device) -> Generator:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parent_values(self, parents: Mapping[str, ParentValue], batch: int) -> dict[str, torch.Tensor]:
        """Model-ready parent tensors of ``batch`` images; one-line error for an unknown name or value."""
        unknown = sorted(set(parents) - set(self.parents))
        if unknown:
            raise ParentError(
                f"generator {self.path} has no parent(s) {', '.join(unknown)} (its parents: {', '.join(self.parents)})"
            )
        missing = [name for name in self.parents if name not in parents]
        if missing:
            raise ParentError(
                f"parent(s) {', '.join(missing)} missing; generator {self.path} takes {', '.join(self.parents)}"
            )
        return {spec.name: parent_tensor(spec, parents[spec.name], batch).to(self.device) for spec in self.model.specs}

    def _images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        return image_batch_of(images, size, f"generator {self.path}").to(self.device)

    @torch.inference_mode()
    def abduct(self, images: np.ndarray | torch.Tensor, parents: Mapping[str, ParentValue]) -> Abduction:
        """The exogenous state of ``images`` with their factual ``parents``: latents and pixel noise."""
        x = self._images(images)
        return abduct(self.model, x, self.parent_values(parents, len(x)))

    @torch.inference_mode()
    def predict(self, abduction: Abduction, parents: Mapping[str, ParentValue]) -> torch.Tensor:
        """Decode an abduction under new ``parents``: float32 ``[B, 1, H, W]`` in [0, 1]."""
        return predict(self.model, abduction, self.parent_values(parents, abduction.u.shape[0]))

    def counterfactual(
        self,
        images: np.ndarray | torch.Tensor,
        parents: Mapping[str, ParentValue],
        target: str | int | Mapping[str, ParentValue],
    ) -> torch.Tensor:
        """What ``images`` (with factual ``parents``) would look like on scanner ``target`` (a name
        or code), or under the parent changes ``target`` maps; float32 ``[B, 1, H, W]`` in [0, 1]."""
        changes = dict(target) if isinstance(target, Mapping) else {SCANNER: target}
        return self.predict(self.abduct(images, parents), {**parents, **changes})


def open_generator(path: str | os.PathLike) -> Generator:
    """The generator in ``generator.pt`` or a ``cf train`` / ``cf finetune`` folder; one without a
    scanner (``domain``) parent is refused, as it cannot make scanner counterfactuals."""
    target = generator_file(path)
    model, info = load_generator(target)
    generator = Generator(model, info, target)
    generator.spec(SCANNER)
    return generator


def training_store(generator: Generator, data: str | os.PathLike | None = None) -> ImageStore:
    """The store ``generator`` was trained on: ``data``, or the one its stage folder's manifest records."""
    if data is None:
        manifest = read_manifest(generator.path.parent) or {}
        entry = manifest.get("inputs", {}).get("data")
        if entry is None:
            raise StoreError(
                f"{generator.path.parent} records no training store (not a cf train / cf finetune folder); pass "
                "--data STORE"
            )
        located = locate_input(entry, generator.path.parent).resolve()
        data = located.parent if located.name == INFO else located
    store = ImageStore.open(data)
    if generator.info.get("store") not in (None, store.content_hash):
        raise StoreError(
            f"image store {store.path} (content hash {store.content_hash}) is not the store generator "
            f"{generator.path} was trained on ({generator.info['store']})"
        )
    return store


def parse_parent(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` from the command line."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CfclError(f"--parent {text!r}: expected NAME=VALUE, e.g. --parent sex=F")
    return name, value


def command_line_value(spec: ParentSpec, text: str) -> str | int | float:
    """A parent value typed on the command line: a name of ``spec``, else a class code or a number."""
    if spec.kind == "continuous":
        try:
            return float(text)
        except ValueError:
            raise ParentError(f"parent '{spec.name}' is a number, got {text!r}") from None
    if text in spec.names:
        return text
    return int(text) if text.lstrip("-").isdigit() else text


def assumed_parents(generator: Generator, source: str, given: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The factual parents of every file from the command line, and how each was decided (for the user)."""
    extra = sorted(set(given) - set(generator.parents))
    if extra:
        raise ParentError(
            f"generator {generator.path} has no parent(s) {', '.join(extra)} (its parents: "
            f"{', '.join(generator.parents)})"
        )
    parents: dict[str, Any] = {SCANNER: command_line_value(generator.spec(SCANNER), source)}
    notes = [f"{SCANNER}={source} (--from)"]
    for spec in generator.model.specs:
        if spec.name == SCANNER:
            continue
        if spec.name in given:
            parents[spec.name] = command_line_value(spec, given[spec.name])
            notes.append(f"{spec.name}={given[spec.name]} (--parent)")
        elif spec.kind == "continuous":
            parents[spec.name] = spec.mean
            notes.append(f"{spec.name}={spec.mean:.4g} (training mean; set it with --parent {spec.name}=VALUE)")
        else:
            raise ParentError(
                f"parent '{spec.name}' is not given: pass --parent {spec.name}=VALUE "
                f"(one of {', '.join(_names(spec, spec.seen))})"
            )
    generator.parent_values(parents, 1)
    return parents, notes


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 ``[H, W]`` (or float in [0, 1]) as an 8-bit grayscale PNG."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def grid_figure(columns: Sequence[torch.Tensor], stems: Sequence[str], source: str, targets: Sequence[str]) -> Figure:
    """One row per file (named by its stem): the decoded input, labelled with its scanner, then its counterfactual
    on each target scanner; ``columns``: ``[N, H, W]`` images in [0, 1], the input first."""
    cells = [[column[row] for column in columns] for row in range(len(stems))]
    return image_grid(cells, list(stems), [f"input ({source})", *(f"as {target}" for target in targets)])


def apply(
    generator_path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    targets: Sequence[str],
    source: str,
    out: str | os.PathLike,
    given: Mapping[str, str] | None = None,
    data: str | os.PathLike | None = None,
    laterality: str = "",
    grid: bool = False,
) -> list[str]:
    """``cfcl cf apply``: write ``OUT/<file stem>_to_<scanner>.png`` per file and target (and
    ``grid.png``: one row per file, the decoded input then each target, with the scanners as column titles);
    returns the report lines."""
    generator = open_generator(generator_path)
    stems = [_file_name(Path(p).stem) for p in images]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise CfclError(f"several input files are named {repeated[0]!r}; outputs are named by file name, so rename one")
    scanner = generator.spec(SCANNER)
    codes = parent_tensor(scanner, [command_line_value(scanner, t) for t in targets], len(targets)).tolist()
    targets = _names(scanner, codes)
    parents, notes = assumed_parents(generator, source, given or {})
    store = training_store(generator, data)
    options, recorded = decode_options_of(store)
    x = read_images(images, store, laterality)
    abduction = generator.abduct(x, parents)
    columns = [x[:, 0].cpu()]
    out = Path(out)
    written = []
    for target in targets:
        x_star = generator.predict(abduction, {**parents, SCANNER: target})[:, 0].cpu()
        columns.append(x_star)
        for stem, image in zip(stems, x_star.numpy()):
            path = out / f"{stem}_to_{_file_name(target)}.png"
            atomic.write_bytes(path, png_bytes(image))
            written.append(path)
    if grid:
        source_name = _names(scanner, parent_tensor(scanner, parents[SCANNER], 1).tolist())[0]
        save_png(grid_figure(columns, stems, source_name, targets), out / "grid.png")
    how = (
        "as cfcl data prepare recorded"
        if recorded
        else "with cfcl data prepare's defaults (the store records no decoding)"
    )
    return [
        f"decoded {len(images)} file(s) like store {store.path}: {options.height}x{options.width}, "
        f"normalise={options.normalise}, breast_mask={options.breast_mask} ({how})",
        "assumed parents of every file: " + "; ".join(notes),
        f"wrote {len(written)} counterfactual(s) to {out}"
        + (" and grid.png (input, then " + ", ".join(targets) + ")" if grid else ""),
    ]
