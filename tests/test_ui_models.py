"""The Models tab's rows: each checkpoint's family (SD3/Flux included), the text encoders of split files."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import FLUX_DEMO
from webui.api.services import Services
from webui.core.config import AppConfig
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.ui.context import StudioContext
from webui.ui.models_tab import model_rows


def test_rows_say_each_family_and_list_the_text_encoders(tiny_flux_data_dir: Path, tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tiny_flux_data_dir, cache_dir=tmp_path, hashing=False)
    manager = ModelManager(config, Precision())
    manager.refresh()
    ctx = StudioContext(Services(config, None, manager, None, None))  # type: ignore[arg-type]
    rows, shown = model_rows(ctx, "")
    kinds = {(kind, name): arch for kind, name, _hash, arch, _size in rows}
    assert kinds == {
        ("checkpoint", FLUX_DEMO): "Flux dev",
        ("checkpoint", "tiny-flux-schnell-split.safetensors"): "Flux schnell",
        ("checkpoint", "tiny-sd1.safetensors"): "SD1",
        ("VAE", "ae.safetensors"): "",
        ("text encoder", "clip_l.safetensors"): "",
        ("text encoder", "t5xxl_fp16.safetensors"): "",
    }
    assert shown == "6 matches"
    assert ctx.services.checkpoint_family("tiny-sd1") is not None
    assert ctx.services.checkpoint_family("no-such-model") is None
