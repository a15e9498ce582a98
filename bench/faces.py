"""Per-face time of GFPGAN or CodeFormer face restoration at the released sizes (512 px).

    python bench/faces.py [--model GFPGAN|CodeFormer] [--device cpu|cuda] [--runs 3]

Builds webui.core.faces' own network with random weights at the released file's sizes (GFPGANv1.4:
87,143,276 values; codeformer.pth: 94,112,707), saves it as a .pth in models/GFPGAN or models/Codeformer
of a temporary folder, loads it the way the app does (strict keys, weights_only), then restores the
astronaut photo (skimage.data.astronaut(), one face). Prints the load time, the network's time per 512
crop, and the whole restore (detect, align, network, paste) per face; the median of --runs after a
warm-up. Prints figures; never passes or fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from webui.core.faces import align, restorers  # noqa: E402
from webui.core.faces.codeformer_arch import CodeFormer  # noqa: E402
from webui.core.faces.gfpgan_arch import GFPGANv1Clean  # noqa: E402

# kind -> (network class, folder, file name as A1111 keeps it)
MODELS = {
    "GFPGAN": (GFPGANv1Clean, "GFPGAN", "GFPGANv1.4.pth"),
    "CodeFormer": (CodeFormer, "Codeformer", "codeformer-v0.1.0.pth"),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: object, runs: int, device: str) -> float:
    times = []
    for _ in range(runs + 1):  # the first is the warm-up
        sync(device)
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), default="GFPGAN")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        torch.manual_seed(0)
        network, folder, name = MODELS[args.model]
        state = network().state_dict()
        print(f"{network.__name__} 512: {len(state)} keys, {sum(v.numel() for v in state.values()):,} values")
        (models / folder).mkdir()
        torch.save({"params_ema": state}, models / folder / name)
        del state
        start = time.perf_counter()
        net = restorers.FaceRestorers(models, device=args.device).check(args.model, "bench")
        print(f"load (read + strict keys): {time.perf_counter() - start:.2f} s")
        faces = align.detect_faces(photo)
        crop = align.crop(np.asarray(photo), faces[0])
        per_net = timed(lambda: net(crop, 0.5), args.runs, args.device)
        per_face = timed(lambda: restorers.restore(photo, net), args.runs, args.device) / len(faces)
        threads = torch.get_num_threads()
        print(f"device {args.device} ({threads} torch threads), {len(faces)} face(s), median of {args.runs}")
        print(f"network per 512 crop: {per_net:.2f} s")
        print(f"restore per face (detect, align, network, paste): {per_face:.2f} s")


if __name__ == "__main__":
    main()
