"""IP-Adapter units of the controlnet extension: the real file layouts, the CLIP vision encoder, and jobs
on the tiny SD1 model through the real Engine and plugin host (weight 0, a unit's effect, two reference
images, plus / .bin files, start/end, no leak into the next job, clear refusals)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.fixtures_controlnet import extension_modules
from tests.fixtures_ipadapter import (
    CLIP,
    adapter_state,
    build_tiny_clip_vision,
    build_tiny_resampler,
    flat,
    write_ip_adapters,
)
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.checkpoint_file import load_state_dict
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.types import RequestError, Txt2ImgRequest
from webui.plugins.host import PluginHost

SMALL: dict[str, Any] = dict(
    prompt="a red apple", width=64, height=64, steps=3, seed=7, checkpoint="tiny-sd1", save_images=False
)


@pytest.fixture(scope="module")
def data(
    tiny_files: dict[str, Path], tiny_controlnet_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    data = tmp_path_factory.mktemp("ipa-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    (ckpts / tiny_files["sd1"].name).symlink_to(tiny_files["sd1"])
    (data / "models" / "ControlNet").mkdir()
    cn = tiny_controlnet_files["sd1", "diffusers"]
    (data / "models" / "ControlNet" / cn.name).symlink_to(cn)
    return data


@pytest.fixture(scope="module")
def files(data: Path) -> dict[str, Path]:
    return write_ip_adapters(data / "models")


@pytest.fixture(scope="module")
def cn(data: Path, files: dict[str, Path]) -> SimpleNamespace:
    mods = extension_modules(data)
    import importlib

    pkg = mods.models.__package__
    for name in ("ipadapter", "clip_vision", "image_prompt"):
        setattr(mods, name, importlib.import_module(f"{pkg}.{name}"))
    return mods


@pytest.fixture(scope="module")
def engine(data: Path, files: dict[str, Path]) -> Engine:
    torch.set_num_threads(1)
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    return Engine(config, manager, PluginHost.for_config(config, include_pip=False))


def reference(kind: str) -> Image.Image:
    image = Image.new("RGB", (48, 40), "white" if kind == "a" else (20, 60, 160))
    d = ImageDraw.Draw(image)
    if kind == "a":
        d.ellipse((8, 6, 40, 34), fill=(200, 30, 30))
    else:
        d.rectangle((4, 4, 30, 36), fill=(240, 220, 40))
    return image


def unit(title: str, image: Image.Image | None = None, **kw: Any) -> dict[str, Any]:
    return {"module": "ip-adapter_clip_sd15", "model": title, "image": image or reference("a"), **kw}


def run(engine: Engine, *units: dict[str, Any], **kw: Any) -> np.ndarray:
    args = {"controlnet": {"_units": list(units)}} if units else {}
    result = engine.run(Txt2ImgRequest(**{**SMALL, **kw}, extension_args=args))
    assert result.warnings == (), result.warnings
    pics = {i.seed: np.asarray(i.image).astype(int) for i in result.images if i.image.size == (64, 64)}
    return pics[SMALL["seed"]] if len(pics) == 1 else np.stack([pics[s] for s in sorted(pics)])


def title(cn: SimpleNamespace, data: Path, path: Path) -> str:
    return next(m.title for m in cn.models.list_models(data / "models") if m.path == path)


# ---- files ------------------------------------------------------------------------------------------


def test_listing_covers_controlnet_and_ipadapter_folders(
    cn: SimpleNamespace, data: Path, files: dict
) -> None:
    listed = {m.path for m in cn.models.list_models(data / "models")}
    assert {files[k] for k in ("base", "base-bin", "plus", "base-2", "sdxl")} <= listed
    assert files["encoder"] not in listed


def test_base_file_and_its_bin_twin_load_the_same_modules(cn: SimpleNamespace, files: dict) -> None:
    ref = adapter_state("base", 50)
    a = cn.ipadapter.build_ip_adapter(load_state_dict(files["base"]), "base")
    b = cn.ipadapter.build_ip_adapter(load_state_dict(files["base-bin"]), "bin")  # nested dicts, weights_only
    assert a.tokens == 4 and not a.uses_hidden_states and a.image_width == CLIP["projection_dim"]
    assert len(a.to_k) == 6  # the tiny SD1 UNet's cross-attention layers
    for i in range(6):
        assert torch.equal(a.to_k[i].weight, ref["ip_adapter"][f"{2 * i + 1}.to_k_ip.weight"])
        assert torch.equal(a.to_v[i].weight, ref["ip_adapter"][f"{2 * i + 1}.to_v_ip.weight"])
    assert torch.equal(a.image_proj.image_embeds.weight, ref["image_proj"]["proj.weight"])
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not any(p.is_meta for p in a.parameters())


def test_plus_resampler_loads_bit_equal(cn: SimpleNamespace, files: dict) -> None:
    plus = cn.ipadapter.build_ip_adapter(load_state_dict(files["plus"]), "plus")
    assert plus.uses_hidden_states and plus.tokens == 4 and plus.image_width == CLIP["hidden_size"]
    ref = build_tiny_resampler(60).state_dict()
    got = plus.image_proj.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_faceid_and_broken_files_are_refused(cn: SimpleNamespace) -> None:
    sd = flat(adapter_state("base", 1))
    faceid = {**sd, "image_proj.proj.0.weight": torch.zeros(8, 4)}
    with pytest.raises(cn.layout.ControlNetFileError, match="FaceID"):
        cn.ipadapter.build_ip_adapter(faceid, "faceid")
    gap = {k: v for k, v in sd.items() if not k.startswith("ip_adapter.3.")}
    with pytest.raises(cn.layout.ControlNetFileError, match="numbered 1, 3, 5"):
        cn.ipadapter.build_ip_adapter(gap, "gap")
    with pytest.raises(cn.layout.ControlNetFileError, match="an IP-Adapter, not a ControlNet"):
        cn.models._controlnet_state(sd, "ipa")


def test_encoder_config_from_weights_and_loads_bit_equal(cn: SimpleNamespace, files: dict) -> None:
    sd = load_state_dict(files["encoder"])
    cfg = cn.clip_vision.vision_config(sd)
    assert {k: cfg[k] for k in CLIP} == CLIP
    enc = cn.clip_vision.build_encoder(sd, "enc")
    ref = build_tiny_clip_vision()
    x = cn.clip_vision.pixels(reference("a"), 32)
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x).image_embeds, ref(x).image_embeds)
    real_h = {"vision_model.embeddings.patch_embedding.weight": torch.empty(1280, 3, 14, 14),
              "vision_model.embeddings.position_embedding.weight": torch.empty(257, 1280),
              "vision_model.encoder.layers.0.mlp.fc1.weight": torch.empty(5120, 1280),
              "visual_projection.weight": torch.empty(1024, 1280)}  # fmt: skip
    cfg = cn.clip_vision.vision_config(real_h)
    assert (cfg["image_size"], cfg["num_attention_heads"], cfg["hidden_act"]) == (224, 16, "gelu")


def test_encoder_is_found_by_name(cn: SimpleNamespace, data: Path, files: dict, tmp_path: Path) -> None:
    assert cn.clip_vision.find_encoder("ip-adapter_clip_sd15", data / "models") == files["encoder"]
    assert cn.clip_vision.find_encoder("ip-adapter_clip_h", data / "models") == files["encoder"]
    with pytest.raises(cn.clip_vision.EncoderMissing, match="CLIP-ViT-bigG-14-laion2B-39B-b160k"):
        cn.clip_vision.find_encoder("ip-adapter_clip_sdxl", data / "models")
    (tmp_path / "clip_vision").mkdir()
    (tmp_path / "clip_vision" / "model.safetensors").write_bytes(b"x")  # a lone file with another name
    assert cn.clip_vision.find_encoder("ip-adapter_clip_sdxl", tmp_path).name == "model.safetensors"


# ---- jobs -------------------------------------------------------------------------------------------


def test_weight_zero_equals_no_adapter_a_unit_changes_the_image_and_nothing_leaks(
    cn: SimpleNamespace, engine: Engine, data: Path, files: dict
) -> None:
    base = title(cn, data, files["base"])
    plain = run(engine)
    with engine.manager.acquire("tiny-sd1") as loaded:
        unet = loaded.components.unet
    own = dict(unet.attn_processors)
    assert np.array_equal(run(engine, unit(base, weight=0)), plain)
    steered = run(engine, unit(base))
    assert np.abs(steered - plain).max() > 8
    assert np.array_equal(run(engine), plain)  # the next job is exactly as before
    with engine.manager.acquire("tiny-sd1") as loaded:
        assert loaded.components.unet is unet  # the same cached model: its own processors are back
    assert dict(unet.attn_processors) == own
    assert not any(n.endswith("processor") for n, _ in unet.named_modules())
    half = run(engine, unit(base, weight=0.5))
    assert not np.array_equal(half, steered) and not np.array_equal(half, plain)


def test_two_reference_images_and_two_units(
    cn: SimpleNamespace, engine: Engine, data: Path, files: dict
) -> None:
    base = title(cn, data, files["base"])
    a = run(engine, unit(base, reference("a")))
    b = run(engine, unit(base, reference("b")))
    assert np.abs(a - b).max() > 4
    both = run(engine, unit(base, reference("a")), unit(base, reference("b"), weight=0.7))
    assert not np.array_equal(both, a) and not np.array_equal(both, b)


def test_plus_and_bin_files_and_start_end(
    cn: SimpleNamespace, engine: Engine, data: Path, files: dict
) -> None:
    base, bin_, plus = (title(cn, data, files[k]) for k in ("base", "base-bin", "plus"))
    plain = run(engine)
    steered = run(engine, unit(base))
    assert np.array_equal(run(engine, unit(bin_)), steered)  # the same weights in a .bin of nested dicts
    with_plus = run(engine, unit(plus))
    assert np.abs(with_plus - plain).max() > 8 and not np.array_equal(with_plus, steered)
    assert np.array_equal(run(engine, unit(base, guidance_start=1.0, guidance_end=1.0)), plain)
    late = run(engine, unit(base, guidance_start=0.5))
    assert not np.array_equal(late, plain) and not np.array_equal(late, steered)


def test_refusals_name_unit_and_field(cn: SimpleNamespace, engine: Engine, data: Path, files: dict) -> None:
    base, sdxl = title(cn, data, files["base"]), title(cn, data, files["sdxl"])

    def refused(*units: dict[str, Any]) -> RequestError:
        with pytest.raises(RequestError) as e:
            engine.run(Txt2ImgRequest(**SMALL, extension_args={"controlnet": {"_units": list(units)}}))
        return e.value

    e = refused(unit(base, module="ip-adapter_clip_sdxl"))
    assert e.field.endswith("_units[0].module") and "CLIP-ViT-bigG" in e.message, e
    e = refused(unit(base), unit(sdxl, index=1))
    assert e.field.endswith("[1].model") and "ip-adapter_sdxl_tiny is an IP-Adapter for" in e.message, e
    assert "cannot be used with this" in e.message, e
    e = refused(unit(base, mask=Image.new("L", (48, 40), 255)))
    assert e.field.endswith("_units[0].mask"), e
    e = refused(unit(base, module="canny"))
    assert e.field.endswith("model") and "is an IP-Adapter" in e.message, e
    assert np.array_equal(run(engine), run(engine))  # the engine carries on


def test_the_patch_lives_for_one_call_even_when_it_fails(
    cn: SimpleNamespace, engine: Engine, files: dict
) -> None:
    with engine.manager.acquire("tiny-sd1") as loaded:
        unet = loaded.components.unet
    own = dict(unet.attn_processors)
    adapter = cn.ipadapter.build_ip_adapter(load_state_dict(files["base"]), "base")
    layers = cn.ipadapter.cross_attention_layers(unet)
    cn.ipadapter.check_fits(adapter, layers, "base")
    procs = cn.ipadapter.attention_processors(layers, [(adapter, 0.5)])
    seen: list[Any] = []

    def boom(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs["encoder_hidden_states"], dict(unet.attn_processors)))
        raise RuntimeError("boom")

    call = cn.ipadapter.WithImagePrompt(boom, procs)
    with pytest.raises(RuntimeError, match="boom"):
        call(torch.zeros(1), 1, encoder_hidden_states="text", ip_adapter_tokens=("tokens",))
    ((text_and_image, during),) = seen
    assert text_and_image == ("text", ["tokens"])
    patched = [p for n, p in during.items() if n.endswith("attn2.processor")]
    assert [p.scale for p in patched] == [[0.5]] * 6 and patched[0].to_k_ip[0] is adapter.to_k[0]
    assert dict(unet.attn_processors) == own


def test_with_a_controlnet_unit_and_in_a_batch(
    cn: SimpleNamespace, engine: Engine, data: Path, files: dict
) -> None:
    from tests.test_ext_controlnet import drawing

    base = title(cn, data, files["base"])
    control_title = next(
        m.title for m in cn.models.list_models(data / "models") if m.name.startswith("tiny-cn")
    )
    control = {"module": "canny", "model": control_title, "image": drawing((64, 64)), "processor_res": 64}
    only_cn, only_ip = run(engine, control), run(engine, unit(base, index=1))
    both = run(engine, control, unit(base, index=1))
    assert not np.array_equal(both, only_cn) and not np.array_equal(both, only_ip)
    # in a batch each image is its single run with its seed (the tokens follow the model's rows)
    batch = run(engine, unit(base), batch_size=2)
    assert batch.shape[0] == 2 and np.array_equal(batch[0], run(engine, unit(base)))
    second = engine.run(
        Txt2ImgRequest(
            **{**SMALL, "seed": SMALL["seed"] + 1}, extension_args={"controlnet": {"_units": [unit(base)]}}
        )
    )
    assert np.array_equal(batch[1], np.asarray(second.images[0].image).astype(int))
