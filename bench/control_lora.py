"""Cost of making a Control-LoRA dense for one job: time and memory of `control_lora.dense` on a UNet of
real SD 1.5 or SDXL shape (weights uninitialised: only shapes and bytes matter here).

    python bench/control_lora.py [--arch sd15|sdxl] [--rank 128] [--dtype float32|float16] [--repeats 2]

The Control-LoRA is written like Stability's: every 2-D+ encoder weight as a rank-r up/down pair, the
hint encoder, zero convolutions, biases and norms full. Prints figures; never passes or fails on time.
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
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402

from webui.core.config import AppConfig  # noqa: E402
from webui.plugins.host import PluginHost  # noqa: E402

SD15 = dict(
    sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)  # fmt: skip
SDXL = dict(
    sample_size=128, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
    up_block_types=("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)  # fmt: skip
ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")


def empty(cls: Any, dtype: torch.dtype, **cfg: Any) -> Any:
    with torch.device("meta"):
        model = cls(**cfg)
    return model.to_empty(device="cpu").to(dtype).eval()


def control_lora_file(unet: Any, rank: int, folder: Path) -> Path:
    """A Control-LoRA over `unet` in Stability's layout (original key names via the test fixture's map)."""
    from safetensors.torch import save_file

    from tests.fixtures_controlnet import ldm_names

    cn = empty(ControlNetModel, unet.dtype, **_cn_config(unet))
    names = ldm_names(cn)
    out: dict[str, torch.Tensor] = {"lora_controlnet": torch.tensor([])}
    for key, value in cn.state_dict().items():
        if key.startswith(ENCODER) and value.ndim >= 2:
            stem = names[key].removesuffix(".weight")
            out[f"{stem}.up"] = torch.randn(value.shape[0], rank).to(value.dtype) * 0.01
            out[f"{stem}.down"] = torch.randn(rank, *value.shape[1:]).to(value.dtype) * 0.01
        else:
            out[names[key]] = torch.zeros_like(value)
    path = folder / f"control-lora-rank{rank}.safetensors"
    save_file(out, str(path))
    return path


def _cn_config(unet: Any) -> dict[str, Any]:
    cfg = dict(unet.config)
    keep = (
        "in_channels", "down_block_types", "block_out_channels", "layers_per_block", "norm_num_groups",
        "cross_attention_dim", "attention_head_dim", "use_linear_projection", "transformer_layers_per_block",
        "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
    )  # fmt: skip
    return {k: cfg[k] for k in keep if cfg.get(k) is not None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        host = PluginHost.for_config(AppConfig.for_data_dir(Path(tmp)), include_pip=False)
        ext = host.extension("controlnet")
        assert ext.loaded, ext.error
        pkg = ext.module.__package__
        cl = importlib.import_module(f"{pkg}.control_lora")
        models = importlib.import_module(f"{pkg}.models")
        from webui.plugins.api import load_state_dict

        unet = empty(UNet2DConditionModel, dtype, **(SD15 if a.arch == "sd15" else SDXL))
        path = control_lora_file(unet, a.rank, Path(tmp))
        t0 = time.perf_counter()
        weights = models.build_control_model(load_state_dict(path), path, None)
        read_s = time.perf_counter() - t0
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            cn = cl.dense(weights, unet, path.stem)
            times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in cn.parameters())
        lora_mb = sum(b.numel() * b.element_size() for b in weights.buffers()) / 2**20
        print(f"{a.arch} {a.dtype} rank {a.rank}: file {path.stat().st_size / 2**20:.0f} MiB, "
              f"low-rank + full tensors {lora_mb:.0f} MiB, read+rename {read_s:.2f} s")  # fmt: skip
        print(f"dense ControlNet: {params / 1e6:.0f} M params, "
              f"{params * cn.dtype.itemsize / 2**20:.0f} MiB, built in {statistics.median(times):.2f} s "
              f"(median of {a.repeats}; torch threads {torch.get_num_threads()})")  # fmt: skip


if __name__ == "__main__":
    main()
