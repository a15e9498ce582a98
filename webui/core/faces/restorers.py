"""Face restoration models (GFPGAN, CodeFormer, RestoreFormer): find, load, run on images.

Files, as A1111 keeps them: `models/GFPGAN/*` (GFPGAN; a file whose name says "RestoreFormer" is
offered as RestoreFormer) and `models/Codeformer/*` (CodeFormer). The first file of each kind (sorted by
name) serves it. Files are read safely (safetensors, or a pickle of tensors only). GFPGAN (v1.3/v1.4,
the "clean" network, gfpgan_arch.py) and CodeFormer (the released codeformer.pth, codeformer_arch.py) are
built here in plain torch, every key and shape checked; RestoreFormer is built by the optional spandrel
package where it imports. A file that holds another architecture is refused naming the file.

`restore(image, net, ...)` runs a network over every face align.detect_faces finds: the 512 crop in,
the restored crop pasted back (pixels outside the faces stay exactly as they were), then the result is
blended with the original by `visibility` (A1111's Extras sliders; generation uses 1). CodeFormer takes
its fidelity weight w (`code_former_weight`, Extras' `codeformer_weight`); the others ignore it.
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

from webui.core.faces import CODEFORMER, GFPGAN, KINDS, RESTOREFORMER, align, codeformer_arch, gfpgan_arch
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
    """spandrel's architectures (RestoreFormer is one of them), in a registry of our own."""
    try:
        import spandrel
    except Exception as e:  # ImportError, or torchvision failing inside it
        raise FaceRestorerError(
            "RestoreFormer files need the spandrel package (and a torchvision built for this torch); "
            f"GFPGAN and CodeFormer do not: {e}"
        ) from e
    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY.architectures())
    return registry


def _to_tensor(face: np.ndarray, device: str) -> torch.Tensor:
    """An HxWx3 uint8 crop as a (1, 3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(face).to(device).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1


def _to_crop(y: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) network output in [-1, 1] (clamped) as an HxWx3 uint8 crop."""
    out: np.ndarray = ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(out)


def gfpgan_net(net: gfpgan_arch.GFPGANv1Clean, device: str = "cpu") -> FaceNet:
    """A GFPGAN network as a FaceNet: the 512 crop resized to the network's size (512 for the released
    files) and back, [-1, 1] in and out; the decoder's stored noise, so a face restores the same twice."""
    size = net.config.out_size

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        if face.shape[0] != size:
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            out = _to_crop(net(_to_tensor(face, device)))
        if size != align.FACE_SIZE:
            out = cv2.resize(out, (align.FACE_SIZE, align.FACE_SIZE), interpolation=cv2.INTER_LINEAR)
        return out

    return run


def codeformer_net(net: codeformer_arch.CodeFormer, device: str = "cpu") -> FaceNet:
    """A CodeFormer network as a FaceNet: the 512 crop in [-1, 1], the fidelity weight w, AdaIN on (as
    A1111 and CodeFormer's own inference call it); deterministic."""

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        with torch.inference_mode():
            return _to_crop(net(_to_tensor(face, device), w=float(weight), use_adain=True))

    return run


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path)
    except CheckpointError as e:  # its message names the file
        raise FaceRestorerError(str(e)) from e


def load_gfpgan(path: Path, device: str = "cpu") -> FaceNet:
    """GFPGAN v1.3/v1.4 from `path` (keys checked strictly; FaceRestorerError names the file)."""
    state = _read(path)
    try:
        net = gfpgan_arch.build(state)
    except ValueError as e:
        raise FaceRestorerError(f"{path.name}: {e}") from e
    return gfpgan_net(net.float().to(device), device)


def load_codeformer(path: Path, device: str = "cpu") -> FaceNet:
    """CodeFormer (codeformer.pth) from `path` (keys checked strictly; FaceRestorerError names the file)."""
    state = _read(path)
    try:
        net = codeformer_arch.build(state)
    except ValueError as e:
        raise FaceRestorerError(f"{path.name}: {e}") from e
    return codeformer_net(net.float().to(device), device)


def load_net(path: Path, kind: str, device: str = "cpu") -> FaceNet:
    """The restorer in `path`: GFPGAN and CodeFormer built here, RestoreFormer by spandrel;
    FaceRestorerError names the file when it is not `kind`."""
    if kind == GFPGAN:
        return load_gfpgan(path, device)
    if kind == CODEFORMER:
        return load_codeformer(path, device)
    state = _read(path)
    registry = _registry()
    try:
        descriptor = registry.load(state)
    except Exception as e:
        raise FaceRestorerError(f"{path.name}: not a model spandrel knows ({e})") from e
    found = descriptor.architecture.id
    if found != kind:
        raise FaceRestorerError(f"{path.name} holds a {found} model, not {kind}")
    descriptor = descriptor.to(device).eval()

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        x = torch.from_numpy(face).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        with torch.inference_mode():
            y = descriptor(x)  # spandrel's call normalises to [-1, 1] and back
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


SPANDREL_KINDS: Final = (RESTOREFORMER,)  # the kinds `problem` (spandrel's absence) stops


@dataclass
class FaceRestorers:
    """The installed restorers of a models folder; each network is loaded when a request first asks for
    it (at submit: `check`) and kept while its file is unchanged.

    `loader` builds a network from a file (GFPGAN and CodeFormer here, RestoreFormer by spandrel, by
    default) and `problem`
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

    def runnable(self) -> dict[str, Path]:
        """The installed restorers whose loader can run here (RestoreFormer only with spandrel)."""
        return {
            k: p
            for k, p in self.installed().items()
            if k not in SPANDREL_KINDS or not self._spandrel_missing()
        }

    def folder(self, kind: str) -> Path:
        return self.models_dir / FOLDERS[kind]

    def check(self, kind: str, field: str) -> FaceNet:
        """The network serving `kind`, loaded (or taken from the cache); RequestError naming `field`
        when none is installed (naming the folder), the loader cannot run here, or the file is not a
        `kind` model (naming the file)."""
        from webui.core.types import RequestError

        if kind not in KINDS:
            raise RequestError(field, f"unknown face restorer {kind!r}: valid are {', '.join(KINDS)}")
        path = self.installed().get(kind)
        others = [k for k in self.runnable() if k != kind]
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
