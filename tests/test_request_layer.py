"""types.py is the bottom of the house: validating any request imports no task code and no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from PIL import Image
from webui.core.types import Img2ImgRequest, RequestError, Txt2ImgRequest

Txt2ImgRequest(prompt="a", enable_hr=True, hr_scale=1.5, hr_sampler_name="Euler a").validate()
Txt2ImgRequest(prompt="a", enable_hr=True, hr_resize_x=640, hr_resize_y=512).validate()
pic = Image.new("RGB", (64, 48))
Img2ImgRequest(init_images=(pic,), mask=Image.new("L", (128, 96)), outpaint_pixels=16,
               outpaint_directions=("left", "up")).validate()
for bad in (dict(hr_scale=8.0, width=1024), dict(hr_sampler_name="nope")):
    try:
        Txt2ImgRequest(prompt="a", enable_hr=True, **bad).validate()
    except RequestError:
        pass
    else:
        raise SystemExit(f"{bad} was accepted")
try:
    Img2ImgRequest(init_images=(pic,), mask=Image.new("L", (64, 64))).validate()
except RequestError as e:
    assert e.field == "mask", e
else:
    raise SystemExit("a mask of another aspect ratio was accepted")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("webui.core.tasks", "diffusers")))
print(loaded)
"""


def test_validating_requests_loads_no_task_code_and_no_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
