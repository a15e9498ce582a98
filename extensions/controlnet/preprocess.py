"""Preprocessors (sd-webui-controlnet's "modules"): an input image -> the control map a ControlNet reads.

Each built-in one needs no downloaded weights and has the signature
`(image, resolution, threshold_a, threshold_b) -> map`, with sd-webui-controlnet's names, sliders and
defaults (a value of -1 means "the default"). The image is first scaled so its short side is
`resolution` (the map is later resized to the generation size by the unit's resize mode).

Those that need a network (depth, openpose, HED, ...) are listed with the file they load from
`models/ControlNet/annotators`; asking for one whose file is missing raises AnnotatorUnavailable naming
that file and folder. Of those, lineart_realistic and lineart_coarse (lineart.py), lineart_anime
(lineart_anime.py), openpose, openpose_hand, openpose_face and openpose_full (openpose.py),
depth_anything and depth_anything_v2 (depth_anything.py), depth_midas and normal_midas (midas.py),
softedge_hed, softedge_hedsafe and scribble_hed (hed.py), softedge_pidinet, softedge_pidisafe and
scribble_pidinet (pidinet.py), mlsd (mlsd.py) run; the others say they cannot run yet. Their networks
come from `nets` (annotator_files.Nets): the extension's model cache and the job's device, or, without
one, read for the call and run on the CPU.

OpenCV (`opencv-python-headless`) does the image work, as in the original annotators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from . import depth_anything, hed, lineart, lineart_anime, midas, mlsd, openpose, pidinet
from .annotator_files import AnnotatorFileError, Nets
from .clip_vision import MODULES as IP_MODULES

Preprocessor = Callable[[Image.Image, int, float, float], Image.Image]
ANNOTATOR_FOLDER = "ControlNet/annotators"  # under models/


class AnnotatorUnavailable(ValueError):
    """A preprocessor that needs weights which are missing, or that is not built in."""


@dataclass(frozen=True)
class Slider:
    label: str
    default: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Module:
    name: str
    run: Preprocessor
    resolution: int | None = 512  # None: the module takes no resolution
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _fit(image: Image.Image, resolution: int) -> np.ndarray:
    """RGB array scaled so its short side is `resolution` (area filter down, cubic up)."""
    img = _rgb(image)
    h, w = img.shape[:2]
    k = resolution / min(h, w)
    if k == 1:
        return img
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


def _gray_to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a)


def none(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """The image itself, for maps made elsewhere (a mask in the alpha channel is kept)."""
    return image.convert("RGBA") if image.mode == "RGBA" else image.convert("RGB")


def invert(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """Black lines on white -> white lines on black (how line ControlNets were trained)."""
    return Image.fromarray(255 - _fit(image, resolution))


def canny(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """Canny edges with low/high hysteresis thresholds `a`/`b`."""
    return _gray_to_rgb(cv2.Canny(_fit(image, resolution), int(a), int(b)))


def threshold(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """White where the grey level is above `a`, black elsewhere (a scribble from a clean drawing)."""
    gray = cv2.cvtColor(_fit(image, resolution), cv2.COLOR_RGB2GRAY)
    return _gray_to_rgb(np.where(gray > a, 255, 0).astype(np.uint8))


def scribble_xdog(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """A scribble from the difference of a fine and a coarse blur (XDoG), thresholded at `a`."""
    img = _fit(image, resolution).astype(np.float32)
    fine = cv2.GaussianBlur(img, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(img, (0, 0), 5.0)
    edge = np.clip(np.max(coarse - fine, axis=2), 0, 255)  # darker than the surroundings: a line
    return _gray_to_rgb(np.where(2 * edge > a, 255, 0).astype(np.uint8))


def lineart_standard(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """Lines where a pixel is darker than its blurred neighbourhood, normalised by their typical depth."""
    img = _fit(image, resolution).astype(np.float32)
    depth = np.clip(np.min(cv2.GaussianBlur(img, (0, 0), 6.0) - img, axis=2), 0, 255)
    lines = depth[depth > 8]
    scale = max(16.0, float(np.median(lines))) if lines.size else 16.0
    return _gray_to_rgb(np.clip(depth / scale * 127, 0, 255).astype(np.uint8))


def tile_resample(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """The image, optionally down-sampled by a factor `a` (tile/upscale ControlNets)."""
    img = _fit(image, resolution)
    if a > 1:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, int(w / a)), max(1, int(h / a))), interpolation=cv2.INTER_AREA)
    return Image.fromarray(img)


def blur_gaussian(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """A Gaussian blur of standard deviation `a` pixels (tile/blur ControlNets)."""
    return Image.fromarray(cv2.GaussianBlur(_fit(image, resolution), (0, 0), a))


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled by cubic interpolation."""
    coarse = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    fine = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    fine = fine[cell : cell + h, cell : cell + w]
    return (fine - fine.min()) / max(float(fine.max() - fine.min()), 1e-6)


def shuffle(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """The image's content moved along a smooth random flow (seeded: the same input, the same map)."""
    img = _fit(image, resolution)
    h, w = img.shape[:2]
    rng = np.random.default_rng(0)
    map_x = _noise_field(rng, h, w, 256) * float(w - 1)
    map_y = _noise_field(rng, h, w, 256) * float(h - 1)
    return Image.fromarray(cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR))


def inpaint(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
    """The image with its mask (white: repaint) in the alpha channel; the inpaint ControlNet reads the
    masked pixels as -1. An image without a mask is all kept."""
    rgb = image.convert("RGB")
    mask = image.getchannel("A") if image.mode == "RGBA" else Image.new("L", image.size, 0)
    rgb.putalpha(mask.point(lambda v: 255 if v > 127 else 0))
    return rgb


_T = Slider
MODULES: dict[str, Module] = {
    m.name: m
    for m in (
        Module("none", none, resolution=None),
        Module("invert", invert),
        Module("canny", canny, 512, _T("Low Threshold", 100, 1, 255), _T("High Threshold", 200, 1, 255)),
        Module("threshold", threshold, 512, _T("Binarization Threshold", 127, 0, 255)),
        Module("scribble_xdog", scribble_xdog, 512, _T("XDoG Threshold", 32, 1, 64)),
        Module("lineart_standard", lineart_standard),
        Module("tile_resample", tile_resample, 512, _T("Down Sampling Rate", 1, 1, 8)),
        Module("blur_gaussian", blur_gaussian, 512, _T("Sigma", 9, 0.01, 64)),
        Module("shuffle", shuffle),
        Module("inpaint", inpaint, resolution=None),
        Module("inpaint_only", inpaint, resolution=None),
    )
}
ALIASES = {  # sd-webui-controlnet's UI labels of some modules
    "invert (from white bg & black line)": "invert",
    "lineart_standard (from white bg & black line)": "lineart_standard",
}

NORMAL_BG = Slider("Normal Background Threshold", 0.4, 0.0, 1.0)  # normal_midas's threshold_a
MLSD_SLIDERS = (  # mlsd's threshold_a and threshold_b
    Slider("MLSD Value Threshold", 0.1, 0.01, 2.0),
    Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0),
)

# Preprocessors that need a network: the file(s) each loads from models/ControlNet/annotators.
NEEDS_WEIGHTS: dict[str, tuple[str, ...]] = {
    "depth_midas": ("dpt_hybrid-midas-501f0c75.pt",),
    "normal_midas": ("dpt_hybrid-midas-501f0c75.pt",),
    "depth_zoe": ("ZoeD_M12_N.pt",),
    "depth_leres": ("res101.pth",),
    "depth_anything": ("depth_anything_vitl14.pth",),
    "depth_anything_v2": ("depth_anything_v2_vitl.safetensors",),
    "normal_bae": ("scannet.pt",),
    **openpose.FILES,  # openpose, openpose_hand, openpose_face, openpose_full
    "dw_openpose_full": ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"),
    "lineart_realistic": ("sk_model.pth",),
    "lineart_coarse": ("sk_model2.pth",),
    "lineart_anime": ("netG.pth",),
    "softedge_hed": ("ControlNetHED.pth",),
    "softedge_hedsafe": ("ControlNetHED.pth",),
    "softedge_pidinet": ("table5_pidinet.pth",),
    "softedge_pidisafe": ("table5_pidinet.pth",),
    "scribble_hed": ("ControlNetHED.pth",),
    "scribble_pidinet": ("table5_pidinet.pth",),
    "mlsd": ("mlsd_large_512_fp32.pth",),
    "seg_ofade20k": ("250_16_swin_l_oneformer_ade20k_160k.pth",),
}


def _network(name: str, folder: Path, nets: Nets) -> Callable[[np.ndarray, float, float], Image.Image] | None:
    """How module `name` runs its network from `folder` (loaded and placed by `nets`): (the image at the
    preprocessor resolution, threshold_a, threshold_b) -> the map; None if no network module of that name
    is built in yet."""
    if name in openpose.FILES:
        paths = [folder / f for f in NEEDS_WEIGHTS[name]]
        return lambda rgb, a, b: openpose.run(paths, rgb, nets)
    if name in lineart_anime.FILES:
        anime = folder / lineart_anime.FILES[name]
        return lambda rgb, a, b: lineart_anime.run(anime, rgb, nets)
    if name in lineart.FILES:
        sketch = folder / lineart.FILES[name]
        return lambda rgb, a, b: lineart.run(sketch, rgb, nets)
    if name in depth_anything.FILES:
        depth, version = folder / depth_anything.FILES[name], 2 if name.endswith("_v2") else 1
        return lambda rgb, a, b: depth_anything.run(depth, version, rgb, nets)
    if name in hed.MODULES:
        edges = folder / hed.FILE
        return lambda rgb, a, b: hed.run(edges, name, rgb, nets)
    if name in pidinet.MODULES:
        pidi = folder / pidinet.FILE
        return lambda rgb, a, b: pidinet.run(pidi, name, rgb, nets)
    if name == "mlsd":
        lines = folder / mlsd.FILE
        return lambda rgb, a, b: mlsd.run(lines, rgb, a, b, nets)
    if name in midas.MODULES:
        dpt = folder / midas.FILE
        return lambda rgb, a, b: midas.run(dpt, name, rgb, a, nets)
    return None


def _weighted(name: str, folder: Path, nets: Nets) -> Module | None:
    """The module `name` that runs a network from `folder` (its files present) through `nets`, or None if
    it is not built in yet."""
    net = _network(name, folder, nets)
    if net is None:
        return None

    def run_net(image: Image.Image, resolution: int, a: float, b: float) -> Image.Image:
        try:
            return net(_fit(image, resolution), a, b)
        except AnnotatorFileError as e:
            raise AnnotatorUnavailable(f"the {name} preprocessor cannot use {e}") from e

    if name in midas.MODULES:
        return Module(name, run_net, 512, NORMAL_BG if name == "normal_midas" else None)
    if name == "mlsd":
        return Module(name, run_net, 512, *MLSD_SLIDERS)
    return Module(name, run_net)


def module_names() -> list[str]:
    """Every module name a unit may use (built in first, then those needing weights, then the
    IP-Adapter encoders)."""
    return [*MODULES, *NEEDS_WEIGHTS, *IP_MODULES]


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def get_module(name: str, models_dir: Path | None = None, nets: Nets | None = None) -> Module:
    """The module `name` (one that needs weights runs them from models_dir through `nets`, by default
    read for each call on the CPU); AnnotatorUnavailable for one whose weights are missing or that is
    not built in, KeyError if unknown."""
    name = canonical(name)
    if name in MODULES:
        return MODULES[name]
    if name in NEEDS_WEIGHTS:
        files = NEEDS_WEIGHTS[name]
        where = f"models/{ANNOTATOR_FOLDER}"
        missing = [
            f for f in files if models_dir is None or not (models_dir / ANNOTATOR_FOLDER / f).is_file()
        ]
        if missing:
            raise AnnotatorUnavailable(
                f"the {name} preprocessor needs {', '.join(missing)} in {where}; add the file, or use "
                "preprocessor 'none' with a map made elsewhere"
            )
        assert models_dir is not None
        module = _weighted(name, models_dir / ANNOTATOR_FOLDER, nets or Nets())
        if module is not None:
            return module
        raise AnnotatorUnavailable(
            f"the {name} preprocessor's weights are in {where}, but this version cannot run it yet; "
            "use preprocessor 'none' with a map made elsewhere"
        )
    if name in IP_MODULES:
        raise AnnotatorUnavailable(
            f"{name} encodes the image for an IP-Adapter (CLIP vision); it makes no map to preview"
        )
    raise KeyError(name)


def run(
    name: str,
    image: Image.Image,
    resolution: int = -1,
    threshold_a: float = -1,
    threshold_b: float = -1,
    models_dir: Path | None = None,
    nets: Nets | None = None,
) -> Image.Image:
    """The control map of `image` by module `name` (its network, if any, through `nets`); -1 takes the
    module's default (units.py checks the ranges of other values)."""
    module = get_module(name, models_dir, nets)
    res = resolution if module.resolution is not None and resolution > 0 else (module.resolution or 512)
    a = _value(module.threshold_a, threshold_a)
    b = _value(module.threshold_b, threshold_b)
    return module.run(image, res, a, b)


def _value(slider: Slider | None, value: float) -> float:
    if slider is None:
        return value
    return slider.default if value == -1 else value
