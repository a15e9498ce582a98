"""Face restoration models (GFPGAN, CodeFormer, RestoreFormer): find, load, run on images.

Files, as A1111 keeps them: `models/GFPGAN/*` (GFPGAN; a file whose name says "RestoreFormer" is
offered as RestoreFormer) and `models/Codeformer/*` (CodeFormer). The first file of each kind (sorted by
name) serves it. Files are read safely (safetensors, or a pickle of tensors only). GFPGAN (v1.3/v1.4,
the "clean" network) is built here in plain torch (gfpgan_arch.py), every key checked; CodeFormer and
RestoreFormer are built by spandrel (CodeFormer's architecture is in spandrel-extra-arches) where it
imports. A file that holds another architecture is refused naming the file.

`restore(image, net, ...)` runs a network over every face align.detect_faces finds: the 512 crop in,
the restored crop pasted back (pixels outside the faces stay exactly as they were), then the result is
blended with the original by `visibility` (A1111's Extras sliders; generation uses 1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import torch
from PIL import Image

from webui.core.faces import CODEFORMER, GFPGAN, KINDS, RESTOREFORMER, align, gfpgan_arch
from webui.core.models.checkpoint_file import CheckpointError, load_state_dict

FOLDERS: Final = {GFPGAN: "GFPGAN", CODEFORMER: "Codeformer", RESTOREFORMER: "GFPGAN"}
SUFFIXES: Final = (".pth", ".pt", ".safetensors", ".ckpt")

# A 512x512 RGB uint8 crop and the CodeFormer weight -> the restored crop, same shape.
FaceNet = Callable[[np.ndarray, float], np.ndarray]


class FaceRestorerError(ValueError):
    """A restorer that is not installed or cannot be loaded; the message names the folder or file."""


def _kind_of(path: Path, folder: str) -> str:
    if folder == FOLDERS[CODEFORMER]:
        return CODEFORMER
    return RESTOREFORMER if "restoreformer" in path.name.lower() else GFPGAN


def model_files(models_dir: Path) -> dict[str, Path]:
    """{kind: file} for each kind with a file in its folder (the first by name)."""
    out: dict[str, Path] = {}
    for folder in dict.fromkeys(FOLDERS.values()):
        d = models_dir / folder
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in SUFFIXES:
                out.setdefault(_kind_of(p, folder), p)
    return {k: out[k] for k in KINDS if k in out}


def _registry() -> Any:
    """spandrel's architectures plus spandrel-extra-arches' (CodeFormer), in a registry of our own."""
    try:
        import spandrel
    except Exception as e:  # ImportError, or torchvision failing inside it
        raise FaceRestorerError(
            "CodeFormer and RestoreFormer files need the spandrel package (and a torchvision built for "
            f"this torch); GFPGAN does not: {e}"
        ) from e
    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY.architectures())
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        return registry
    registry.add(*EXTRA_REGISTRY.architectures(), ignore_duplicates=True)
    return registry


def gfpgan_net(net: gfpgan_arch.GFPGANv1Clean, device: str = "cpu") -> FaceNet:
    """A GFPGAN network as a FaceNet: the 512 crop resized to the network's size (512 for the released
    files) and back, [-1, 1] in and out; the decoder's stored noise, so a face restores the same twice."""
    size = net.config.out_size

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        if face.shape[0] != size:
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(face).to(device).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
        with torch.inference_mode():
            y = net(x)
        out: np.ndarray = ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        if size != align.FACE_SIZE:
            out = cv2.resize(out, (align.FACE_SIZE, align.FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out)

    return run


def load_gfpgan(path: Path, device: str = "cpu") -> FaceNet:
    """GFPGAN v1.3/v1.4 from `path` (keys checked strictly; FaceRestorerError names the file)."""
    try:
        state = load_state_dict(path)
    except CheckpointError as e:
        raise FaceRestorerError(f"{path.name}: {e}") from e
    try:
        net = gfpgan_arch.build(state)
    except ValueError as e:
        raise FaceRestorerError(f"{path.name}: {e}") from e
    return gfpgan_net(net.float().to(device), device)


def load_net(path: Path, kind: str, device: str = "cpu") -> FaceNet:
    """The restorer in `path`: GFPGAN built here, the others by spandrel; FaceRestorerError names the
    file when it is not `kind`."""
    if kind == GFPGAN:
        return load_gfpgan(path, device)
    try:
        state = load_state_dict(path)
    except CheckpointError as e:
        raise FaceRestorerError(f"{path.name}: {e}") from e
    registry = _registry()
    try:
        descriptor = registry.load(state)
    except Exception as e:
        raise FaceRestorerError(f"{path.name}: not a model spandrel knows ({e})") from e
    found = descriptor.architecture.id
    if found != kind:
        raise FaceRestorerError(f"{path.name} holds a {found} model, not {kind}")
    descriptor = descriptor.to(device).eval()
    model = descriptor.model

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        x = torch.from_numpy(face).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        with torch.inference_mode():
            if kind == RESTOREFORMER:  # spandrel's call normalises to [-1, 1] and back
                y = descriptor(x)
            else:
                out = model(x * 2 - 1, weight=weight, adain=True)[0]  # CodeFormer
                y = (out + 1) / 2
        array: np.ndarray = y[0].clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
        return array.copy()

    return run


def restore(image: Image.Image, net: FaceNet, *, weight: float = 0.5, visibility: float = 1.0) -> Image.Image:
    """Every detected face restored by `net` and pasted back; blended with the original by visibility."""
    rgb = np.asarray(image.convert("RGB"))
    out = rgb
    for face in align.detect_faces(image):
        out = align.paste(out, net(align.crop(rgb, face), weight), face)
    result = Image.fromarray(out)
    if visibility < 1.0:
        result = Image.blend(image.convert("RGB"), result, float(visibility))
    return result


def spandrel_problem() -> str:
    """Why spandrel cannot build networks here ("" when it can)."""
    try:
        _registry()
    except FaceRestorerError as e:
        return str(e)
    return ""


Loader = Callable[[Path, str, str], FaceNet]  # (file, kind, device) -> network


SPANDREL_KINDS: Final = (CODEFORMER, RESTOREFORMER)  # the kinds `problem` (spandrel's absence) stops


@dataclass
class FaceRestorers:
    """The installed restorers of a models folder; each network is loaded when a request first asks for
    it (at submit: `check`) and kept while its file is unchanged.

    `loader` builds a network from a file (GFPGAN here, the others by spandrel, by default) and `problem`
    says why spandrel's kinds cannot run here ("" when they can; asked once)."""

    models_dir: Path
    device: str = "cpu"
    loader: Loader = load_net
    problem: Callable[[], str] = spandrel_problem

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._nets: dict[tuple[Path, int, int], FaceNet] = {}
        self._missing: str | None = None

    def installed(self) -> dict[str, Path]:
        return model_files(self.models_dir)

    def folder(self, kind: str) -> Path:
        return self.models_dir / FOLDERS[kind]

    def check(self, kind: str, field: str) -> FaceNet:
        """The network serving `kind`, loaded (or taken from the cache); RequestError naming `field`
        when none is installed (naming the folder), the loader cannot run here, or the file is not a
        `kind` model (naming the file)."""
        from webui.core.types import RequestError

        if kind not in KINDS:
            raise RequestError(field, f"unknown face restorer {kind!r}: valid are {', '.join(KINDS)}")
        installed = self.installed()
        path = installed.get(kind)
        others = [
            k for k in installed if k != kind and (k not in SPANDREL_KINDS or not self._spandrel_missing())
        ]
        hint = f"; {' and '.join(others)} can run here (Settings -> Face restoration model)" if others else ""
        if path is None:
            raise RequestError(
                field,
                f"{kind} is not installed: put its model file (.pth or .safetensors) in "
                f"models/{FOLDERS[kind]} (here {self.folder(kind)}){hint}",
            )
        if kind in SPANDREL_KINDS and self._spandrel_missing():
            raise RequestError(field, f"{kind} ({path.name}) cannot run: {self._missing}{hint}")
        try:
            stat = path.stat()
        except OSError as e:
            raise RequestError(field, f"{kind} ({path.name}) cannot be read: {e}") from e
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key not in self._nets:
                try:
                    net = self.loader(path, kind, self.device)
                except FaceRestorerError as e:
                    raise RequestError(field, f"{kind}: {e}") from e
                for old in [k for k in self._nets if k[0] == path]:  # the file was replaced
                    del self._nets[old]
                self._nets[key] = net
            return self._nets[key]

    def _spandrel_missing(self) -> bool:
        if self._missing is None:
            self._missing = self.problem()
        return bool(self._missing)

    def net(self, kind: str, field: str) -> FaceNet:
        return self.check(kind, field)
