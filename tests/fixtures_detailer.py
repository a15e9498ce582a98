"""Detailer test helpers: the extension's modules, a tiny YOLOv8-shaped ONNX detector, the photo."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

# The astronaut photo's face (skimage.data.astronaut(), 512x512), measured by eye on the picture:
# hairline to chin, ear to ear. A detector must land within 20 px of each side.
ASTRONAUT_FACE = (175, 62, 275, 165)
YOLO_SIZE = 640


def extension_modules(data_dir: Path) -> SimpleNamespace:
    """The detailer extension's modules, imported the way the plugin host imports them."""
    from webui.core.config import AppConfig
    from webui.plugins.host import PluginHost

    host = PluginHost.for_config(AppConfig.for_data_dir(data_dir), include_pip=False)
    ext = host.extension("detailer")
    assert ext.loaded, ext.error
    pkg = ext.module.__package__
    names = ("yolo", "detectors", "masks", "units", "infotext", "detail")
    return SimpleNamespace(**{n: importlib.import_module(f"{pkg}.{n}") for n in names})


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


class TinyYolo(torch.nn.Module):
    """YOLOv8's detection output layout, (1, 4 + classes, candidates), from fixed candidates whose
    class scores are scaled by the image's brightest pixel (through a real 1x1 convolution): a white
    image gives the scores as written, a black one scores 0."""

    def __init__(self, candidates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("candidates", candidates.float())
        self.gray = torch.nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.gray.weight.fill_(1 / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = self.gray(x).amax(dim=(1, 2, 3)).reshape(1, 1, 1)
        c = self.candidates.unsqueeze(0)
        return torch.cat([c[:, :4], c[:, 4:] * bright], dim=1)


def yolo_candidates(rows: list[tuple[float, float, float, float, list[float]]]) -> torch.Tensor:
    """(4 + classes, n) from [(cx, cy, w, h, [score per class]), ...] in 640x640 input pixels."""
    return torch.tensor([[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows]).T


def save_tiny_yolo(path: Path, candidates: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            TinyYolo(candidates).eval(),
            (torch.zeros(1, 3, YOLO_SIZE, YOLO_SIZE),),
            str(path),
            input_names=["images"],
            output_names=["output0"],
            opset_version=12,
            dynamo=False,
        )
    return path


def white(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), 255, np.uint8))
