"""Starter models offered to a user with none: shown with their size and license, fetched only when
someone clicks (or submits one as a download job). Sizes are the published files' sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Starter:
    name: str
    url: str
    size_bytes: int
    license: str
    license_url: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


STARTERS: tuple[Starter, ...] = (
    Starter(
        "Stable Diffusion 1.5 (pruned, EMA only)",
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
        "v1-5-pruned-emaonly.safetensors",
        4_265_146_304,
        "CreativeML Open RAIL-M",
        "https://huggingface.co/spaces/CompVis/stable-diffusion-license",
        "512x512; the most widely supported base model",
    ),
    Starter(
        "Stable Diffusion XL base 1.0",
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
        "sd_xl_base_1.0.safetensors",
        6_938_078_334,
        "CreativeML Open RAIL++-M",
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/LICENSE.md",
        "1024x1024",
    ),
    Starter(
        "FLUX.1 [schnell] (fp8, all in one)",
        "https://huggingface.co/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell-fp8.safetensors",
        17_236_000_000,
        "Apache-2.0",
        "https://huggingface.co/black-forest-labs/FLUX.1-schnell/blob/main/LICENSE.md",
        "4 steps, CFG 1; needs about 17 GB of disk and 12 GB or more of GPU memory",
    ),
)
