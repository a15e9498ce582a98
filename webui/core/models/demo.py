"""`--demo-model ARCH`: a tiny random-weight checkpoint to try the app with (it draws noise, not pictures).

sd1, sdxl   the UNet fixtures (`tiny.py`), single files in the A1111 layout
sd3         a tiny SD3.5 in Stability's all-in-one layout (`tiny_flow.py`)
flux        a tiny Flux.1 dev in the ComfyUI/Forge all-in-one layout
"""

from __future__ import annotations

from pathlib import Path

# demo name -> (tiny arch, file layout: "ldm" for the UNet families, else a tiny_flow layout)
DEMO_PREFIX = "sfumato-demo-tiny-random-"  # the demo files' names: <prefix><arch>.safetensors


def is_demo(name: str) -> bool:
    """Whether a checkpoint name, title or path is one of the random-weight demo models."""
    return DEMO_PREFIX in name.replace("\\", "/").rsplit("/", 1)[-1]


DEMOS: dict[str, tuple[str, str]] = {
    "sd1": ("sd1", "ldm"),
    "sdxl": ("sdxl", "ldm"),
    "sd3": ("sd3.5", "stability"),
    "flux": ("flux-dev", "comfy"),
}


def write_demo(models_dir: Path, name: str = "sd1") -> Path:
    """`models_dir/Stable-diffusion/sfumato-demo-tiny-random-<arch>.safetensors` (seed 0)."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo model {name!r}; valid: {', '.join(DEMOS)}")
    arch, layout = DEMOS[name]
    if layout == "ldm":
        from webui.core.models.tiny import write_demo_checkpoint

        return write_demo_checkpoint(models_dir, arch)
    from webui.core.models.tiny_flow import build_tiny_flow, save, single_file

    path = models_dir / "Stable-diffusion" / f"{DEMO_PREFIX}{arch}.safetensors"
    return save(single_file(build_tiny_flow(arch, seed=0), layout), path)
