"""Model upscalers: find files in models/ESRGAN, models/RealESRGAN, models/SwinIR, load, run in tiles.

Loading: the file is read safely (safetensors, or a pickle through torch.load(weights_only=True));
`spandrel` builds the network when it is installed (it knows ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT and
more), otherwise the plain-torch networks in arch.py do (RRDBNet and SRVGGNetCompact families).

Tiling: a large image is cut into tiles of `tile` pixels, each run with `pad` pixels of surrounding
context (cut from the image itself, so a tile sees what the whole image would), and only the tile's
own area of the output is kept. With `pad` at least the network's receptive field the result equals
the untiled one up to float rounding, at a bounded memory cost.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .arch import UnsupportedModel, build, unwrap

FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR")
SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
DEFAULT_TILE = 192
DEFAULT_PAD = 24

Network = Callable[[torch.Tensor], torch.Tensor]


def model_files(models_dir: Path) -> list[Path]:
    """Upscaler files under the A1111 folders, sorted (sub-folders included)."""
    out: list[Path] = []
    for name in FOLDERS:
        folder = models_dir / name
        if folder.is_dir():
            out += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    return out


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file; pickles may hold only tensors and containers."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with open(path, "rb") as f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported class" in str(e):
            raise UnsupportedModel(
                f"{path.name}: refused, the pickle holds more than tensors (nothing ran)"
            ) from e
        raise UnsupportedModel(f"{path.name}: not a readable model file") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UnsupportedModel(f"{path.name}: not a readable model file: {str(e).splitlines()[0]}") from e
    return unwrap(obj)


def load_network(path: Path, device: str = "cpu") -> tuple[Network, float]:
    """(network, scale) for a model file."""
    sd = read_tensors(path)
    try:
        import spandrel  # optional: needs torchvision
    except Exception:
        spandrel = None
    if spandrel is not None:
        descriptor = spandrel.ModelLoader(device).load_from_state_dict(sd).eval()
        return descriptor, float(descriptor.scale)
    if path.parent.name == "SwinIR":
        raise UnsupportedModel(f"{path.name}: SwinIR models need the spandrel package")
    try:
        net = build(sd).to(device)
    except (KeyError, RuntimeError) as e:
        raise UnsupportedModel(f"{path.name}: the weights do not fit the architecture: {e}") from e
    return net, float(net.scale)  # type: ignore[arg-type]


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = tensor[0].clamp(0, 1).permute(1, 2, 0).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array, "RGB")


@torch.inference_mode()
def run_tiled(
    net: Network, x: torch.Tensor, scale: float, tile: int = DEFAULT_TILE, pad: int = DEFAULT_PAD
) -> torch.Tensor:
    """net(x) computed tile by tile (see the module docstring); tile <= 0 runs it whole."""
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return net(x)
    s = int(scale)
    out = torch.zeros((1, x.shape[1], h * s, w * s), dtype=x.dtype, device=x.device)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - pad, 0), max(left - pad, 0)
            t1, l1 = min(bottom + pad, h), min(right + pad, w)
            y = net(x[:, :, t0:t1, l0:l1])
            oy, ox = (top - t0) * s, (left - l0) * s
            out[:, :, top * s : bottom * s, left * s : right * s] = y[
                :, :, oy : oy + (bottom - top) * s, ox : ox + (right - left) * s
            ]
    return out


def upscale(
    net: Network,
    scale: float,
    image: Image.Image,
    width: int,
    height: int,
    tile: int = DEFAULT_TILE,
    device: str = "cpu",
) -> Image.Image:
    """The image at exactly width x height: the model run as many times as needed (a 4x model twice for
    8x), then a Lanczos resize to the exact size."""
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    passes = (
        max(1, math.ceil(math.log(max(width / image.width, height / image.height), scale)))
        if scale > 1
        else 1
    )
    current = image.convert("RGB")
    for _ in range(passes):
        current = to_image(run_tiled(net, to_tensor(current).to(device), scale, tile))
    if current.size != (width, height):
        current = current.resize((width, height), Image.Resampling.LANCZOS)
    return current
