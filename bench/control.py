"""Extra time per step of one and two ControlNet units, relative to none (ratios from one run).

    python bench/control.py [--device cpu|cuda] [--steps 10] [--size 256] [--repeats 3]

The model is the tiny SD1 fixture; each ControlNet is diffusers' `ControlNetModel.from_unet` of its UNet
(the real architecture: a copy of the UNet's encoder plus the hint encoder), so a unit costs what a
ControlNet of that model costs. Each configuration runs the core txt2img loop (CFG, Euler) with the
controlnet extension's hook; the median of the repeats is printed per step, and the ratio to no unit.
Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
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
from PIL import Image, ImageDraw  # noqa: E402

from webui.core.config import AppConfig  # noqa: E402
from webui.core.models.components import Precision  # noqa: E402
from webui.core.models.loader import load_model  # noqa: E402
from webui.core.models.tiny import build_tiny, save_single_file  # noqa: E402
from webui.core.prompts.encode import encode_prompts  # noqa: E402
from webui.core.sampling.noise import NoiseSource, initial_noise  # noqa: E402
from webui.core.sampling.samplers import make_scheduler  # noqa: E402
from webui.core.tasks.txt2img import run_txt2img  # noqa: E402
from webui.plugins.host import PluginHost  # noqa: E402


def extension(work: Path) -> Any:
    host = PluginHost.for_config(AppConfig.for_data_dir(work), include_pip=False)
    pkg = host.extension("controlnet").module.__package__
    return {n: importlib.import_module(f"{pkg}.{n}") for n in ("units", "images", "preprocess", "residuals")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
    ext = extension(work)
    path = save_single_file(build_tiny("sd1"), work / "tiny-sd1.safetensors")
    parts = load_model(path, Precision(device=args.device))
    cond, uncond = encode_prompts(parts, ["a house"]), encode_prompts(parts, [""])
    from diffusers import ControlNetModel

    nets = [ControlNetModel.from_unet(parts.unet).to(args.device).eval() for _ in range(2)]
    drawing = Image.new("RGB", (args.size, args.size), "white")
    ImageDraw.Draw(drawing).rectangle((20, 20, args.size - 30, args.size - 50), outline="black", width=4)
    control = ext["preprocess"].run("canny", drawing, args.size, 100, 200)
    mode = ext["images"].ResizeMode.CROP
    image = ext["images"].control_tensor(control, args.size, args.size, mode)
    units = [
        ext["residuals"].ActiveUnit(
            ext["units"].ControlUnit(index=i, module="canny", model="m"), net, image, control
        )
        for i, net in enumerate(nets)
    ]
    shape = (4, args.size // 8, args.size // 8)

    def run(count: int) -> float:
        hooks = [ext["residuals"].ControlNetHook(units[:count])] if count else []
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        run_txt2img(
            parts, make_scheduler("Euler", "Automatic", parts.scheduler_config), initial_noise(shape, [1]),
            NoiseSource.for_seeds(shape, [1]).generator_list(), cond, uncond, steps=args.steps, cfg_scale=7.0,
            width=args.size, height=args.size, model_hooks=hooks,
        )  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / args.steps

    run(0)  # warm-up
    per_step = {n: statistics.median(run(n) for _ in range(args.repeats)) for n in (0, 1, 2)}
    print(f"tiny SD1, {args.size}px, {args.steps} steps, CFG 7, device {args.device}")
    for n, t in per_step.items():
        print(f"  {n} unit(s): {t * 1000:8.2f} ms/step   x{t / per_step[0]:.2f} of no unit")


if __name__ == "__main__":
    main()
