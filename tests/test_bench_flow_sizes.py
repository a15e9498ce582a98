"""The official Flux.1 and SD3.5 Large transformer configs the load benchmark uses (bench/configs/):
their meta-device parameter counts are what the model cards say, and the random-weight files it writes
have the shapes our loader sizes a model from (no weights are made: meta device and headers only)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from webui.core.models import flow_infer, flux_layout

BENCH = Path(__file__).resolve().parent.parent / "bench" / "flow_sizes.py"


@pytest.fixture(scope="module")
def sizes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_flow_sizes", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "billions"), [("flux-dev", 11.9), ("sd3.5-large", 8.1)])
def test_official_configs_count_the_model_card_parameters(
    sizes: ModuleType, name: str, billions: float
) -> None:
    count = sizes.parameter_count(sizes.meta_transformer(name))
    assert round(count / 1e9, 1) == billions == sizes.OFFICIAL_BILLIONS[name]
    reduced = sizes.parameter_count(sizes.meta_transformer(name, 0.125))
    assert 0 < reduced < count / 4  # the reduced-depth bench is smaller, and says by how much


@pytest.mark.parametrize("name", ["flux-dev", "sd3.5-large"])
def test_bench_files_have_the_shapes_our_loader_reads(sizes: ModuleType, name: str) -> None:
    """The original-layout shapes the bench writes give back the official config when sized by the
    loader's own shape inference (so the bench loads what a real download would)."""
    shapes = sizes.original_shapes(name)
    official = sizes.official_config(name)
    if name.startswith("flux"):
        inferred = flux_layout.transformer_config(shapes)
    else:
        inferred = flow_infer.sd3_transformer_config(shapes, "model.diffusion_model.")
    for key, value in official.items():
        if key in inferred:
            assert inferred[key] == value, key
    assert sizes.file_bytes(name) == 2 * sum(
        p.numel() for p in sizes.meta_transformer(name).state_dict().values()
    )
