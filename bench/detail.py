"""Extra time of a detailer pass relative to the first pass (ratio from one run).

    python bench/detail.py [--device cpu|cuda] [--steps 20] [--size 512] [--ad-size 512]

The model is the tiny SD1 fixture (built here), run through `Engine.run`. The first pass is a txt2img
at --size; the detailer pass details the astronaut photo (skimage.data.astronaut(), scaled to --size,
standing in for a first-pass picture with a face, which the tiny model cannot draw) with the built-in
OpenCV face detector and one "only masked" inpaint at --ad-size, same steps and denoise 0.4 (ADetailer's
defaults). Prints the detection time, the inpaint time, and their sum over the first pass; one run
after a warm-up. Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from webui.core.config import AppConfig  # noqa: E402
from webui.core.engine import Engine  # noqa: E402
from webui.core.models.components import Precision  # noqa: E402
from webui.core.models.manager import ModelManager  # noqa: E402
from webui.core.models.tiny import build_tiny, save_single_file  # noqa: E402
from webui.core.types import Img2ImgRequest, Txt2ImgRequest  # noqa: E402
from webui.plugins.host import PluginHost  # noqa: E402


def extension(work: Path) -> dict[str, Any]:
    host = PluginHost.for_config(AppConfig.for_data_dir(work), include_pip=False)
    pkg = host.extension("detailer").module.__package__
    return {n: importlib.import_module(f"{pkg}.{n}") for n in ("detectors", "units", "detail")}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--ad-size", type=int, default=512)
    args = ap.parse_args()
    try:
        from skimage import data
    except ImportError:
        sys.exit("bench/detail.py needs scikit-image (pip install -r requirements-test.txt)")
    work = Path(tempfile.mkdtemp(prefix="bench-detail-"))
    ckpts = work / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    save_single_file(build_tiny("sd1"), ckpts / "tiny-sd1.safetensors")
    config = AppConfig.for_data_dir(work, outputs_dir=work / "outputs")
    manager = ModelManager(config, Precision(device=args.device))
    manager.refresh()
    engine = Engine(config, manager)
    ext = extension(work)
    first = Txt2ImgRequest(
        prompt="a portrait", steps=args.steps, seed=1, width=args.size, height=args.size,
        checkpoint="tiny-sd1", save_images=False,
    )  # fmt: skip
    photo = Image.fromarray(data.astronaut()).resize((args.size, args.size))
    unit = {"ad_model": "opencv_face", "ad_use_inpaint_width_height": True,
            "ad_inpaint_width": args.ad_size, "ad_inpaint_height": args.ad_size}  # fmt: skip
    ad_args = ext["units"].parse_args([True, False, unit])
    timings = {"inpaint": 0.0}

    def run(request: Img2ImgRequest) -> Image.Image:
        sync(args.device)
        t = time.perf_counter()
        image = engine.run(request).images[0].image
        sync(args.device)
        timings["inpaint"] += time.perf_counter() - t
        return image

    def once() -> tuple[float, float, int]:
        timings["inpaint"] = 0.0
        sync(args.device)
        t = time.perf_counter()
        engine.run(first)
        sync(args.device)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        result = ext["detail"].detail_image(
            photo, first, ad_args, find=ext["detectors"].find_detector, run=run
        )
        return first_s, time.perf_counter() - t, result.reports[0].regions_run

    once()  # warm-up: model load, caches
    first_s, detail_s, regions = once()
    detect_s = detail_s - timings["inpaint"]
    print(f"tiny SD1, {args.size}px first pass, {args.steps} steps, detail at {args.ad_size}px, "
          f"device {args.device}, {regions} region(s)")  # fmt: skip
    print(f"  first pass      {first_s * 1000:9.1f} ms")
    print(f"  detection+masks {detect_s * 1000:9.1f} ms")
    print(f"  inpaint pass    {timings['inpaint'] * 1000:9.1f} ms")
    print(f"  detailer extra  x{detail_s / first_s:.2f} of the first pass")


if __name__ == "__main__":
    main()
