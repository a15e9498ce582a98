"""Registers one upscaler per model file in models/ESRGAN, models/RealESRGAN and models/SwinIR.

Each becomes an UpscalerSpec (named after its file, without the suffix) that hires fix and the Extras
tab use by name. A model is loaded on first use (start-up reads no weights) and kept while the
extension is loaded; a file that turns out unusable raises a clear error when first used. The listed
scale is read from the file name ("4x-UltraSharp", "RealESRGAN_x2plus"), 4 when it says none.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from PIL import Image

from webui.plugins.api import ExtensionContext, Registry, UpscalerSpec, hookimpl

from .models import DEFAULT_TILE, Network, load_network, model_files, upscale


class ModelUpscaler:
    """One model file, loaded on first use (thread-safe)."""

    def __init__(self, path: Path, device: str = "cpu", tile: int = DEFAULT_TILE) -> None:
        self.path, self.device, self.tile = path, device, tile
        self._lock = threading.Lock()
        self._net: tuple[Network, float] | None = None

    def network(self) -> tuple[Network, float]:
        with self._lock:
            if self._net is None:
                self._net = load_network(self.path, self.device)
            return self._net

    def __call__(self, image: Image.Image, width: int, height: int) -> Image.Image:
        net, scale = self.network()
        return upscale(net, scale, image, width, height, self.tile, self.device)


def spec_for(
    path: Path, device: str = "cpu", tile: int = DEFAULT_TILE, name: str | None = None
) -> UpscalerSpec:
    """An UpscalerSpec for one model file (its network is loaded now, so a bad file fails here)."""
    runner = ModelUpscaler(path, device, tile)
    _, scale = runner.network()
    return UpscalerSpec(name or path.stem, runner, scale, path)


def scale_from_name(name: str) -> float:
    m = re.search(r"(?:^|[^a-z0-9])(\d)x|x(\d)(?:[^0-9]|$)", name.lower())
    return float((m.group(1) or m.group(2)) if m else 4)


def upscale_image(spec: UpscalerSpec, image: Image.Image, scale: float) -> Image.Image:
    """Extras' "upscale this image": the image resized by `scale` with the given upscaler."""
    if not 0 < scale <= 16:
        raise ValueError(f"scale must be between 0 and 16, got {scale}")
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    return spec.upscale(image, w, h)


@hookimpl
def register(registry: Registry, context: ExtensionContext) -> None:
    names: set[str] = set()
    for path in model_files(context.models_dir):
        name = path.stem if path.stem not in names else f"{path.parent.name}/{path.stem}"
        names.add(name)
        registry.add(
            UpscalerSpec(name, ModelUpscaler(path, context.device), scale_from_name(path.stem), path)
        )
