"""The upscalers extension: tiny random ESRGAN/Real-ESRGAN files written here, found, loaded, run."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from webui.core.config import AppConfig
from webui.plugins.api import UpscalerSpec
from webui.plugins.host import PluginHost


@pytest.fixture(scope="module")
def ext(tmp_path_factory: pytest.TempPathFactory) -> PluginHost:
    data = tmp_path_factory.mktemp("data")
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    assert host.extension("upscalers").loaded, host.extension("upscalers").error
    return host


def modules(host: PluginHost) -> tuple:
    pkg = host.extension("upscalers").module.__package__
    return tuple(importlib.import_module(f"{pkg}.{m}") for m in ("arch", "models", "main"))


def basicsr_rrdb(
    nf: int = 8, nb: int = 2, gc: int = 4, scale: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random RRDBNet in BasicSR's key layout (Real-ESRGAN), written from the key names alone."""
    g = torch.Generator().manual_seed(seed)
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]

    def conv(name: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
        return {
            f"{name}.weight": torch.randn(cout, cin, 3, 3, generator=g) * (0.5 / cin) ** 0.5,
            f"{name}.bias": torch.randn(cout, generator=g) * 0.01,
        }

    sd = conv("conv_first", 3 * unshuffle * unshuffle, nf)
    for b in range(nb):
        for r in (1, 2, 3):
            for c in range(1, 6):
                sd |= conv(f"body.{b}.rdb{r}.conv{c}", nf + (c - 1) * gc, nf if c == 5 else gc)
    sd |= conv("conv_body", nf, nf) | conv("conv_up1", nf, nf) | conv("conv_up2", nf, nf)
    return sd | conv("conv_hr", nf, nf) | conv("conv_last", nf, 3)


def to_old_esrgan(sd: dict[str, torch.Tensor], nb: int) -> dict[str, torch.Tensor]:
    """The same weights in the original ESRGAN layout (model.0, model.1.sub.N.RDBk.convj.0, ...)."""
    top = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    out = {}
    for k, v in sd.items():
        head, kind = k.rsplit(".", 1)
        if head in top:
            out[f"model.{top[head]}.{kind}"] = v
        elif head == "conv_body":
            out[f"model.1.sub.{nb}.{kind}"] = v
        else:
            _, b, rdb, conv = head.split(".")
            out[f"model.1.sub.{b}.RDB{rdb[-1]}.{conv}.0.{kind}"] = v
    return out


def compact(nf: int = 8, n_conv: int = 2, scale: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd, i = {}, 0
    for cin, cout in [(3, nf)] + [(nf, nf)] * n_conv:
        sd[f"body.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.1
        sd[f"body.{i}.bias"] = torch.zeros(cout)
        sd[f"body.{i + 1}.weight"] = torch.full((cout,), 0.25)
        i += 2
    sd[f"body.{i}.weight"] = torch.randn(3 * scale * scale, nf, 3, 3, generator=g) * 0.1
    sd[f"body.{i}.bias"] = torch.zeros(3 * scale * scale)
    return sd


def picture(w: int = 40, h: int = 28) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def test_both_key_layouts_load_to_the_same_network(ext: PluginHost, tmp_path: Path) -> None:
    _, models, main = modules(ext)
    sd = basicsr_rrdb()
    new = tmp_path / "RealESRGAN_x4plus.safetensors"
    save_file(sd, str(new))
    old = tmp_path / "4x_old.pth"
    torch.save(to_old_esrgan(sd, nb=2), old)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params_ema": sd}, wrapped)
    a, b, c = (main.spec_for(p, tile=0) for p in (new, old, wrapped))
    assert a.scale == b.scale == c.scale == 4.0
    image = picture()
    out = [np.asarray(s.upscale(image, 160, 112)) for s in (a, b, c)]
    assert out[0].shape == (112, 160, 3)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    assert out[0].std() > 1, "a random network still makes a non-flat image"


def test_tiles_match_the_whole_image(ext: PluginHost, tmp_path: Path) -> None:
    arch, models, _ = modules(ext)
    net = arch.build(basicsr_rrdb(nb=1))
    x = models.to_tensor(picture(70, 50))
    whole = models.run_tiled(net, x, 4, tile=0)
    tiled = models.run_tiled(net, x, 4, tile=24, pad=24)
    assert tiled.shape == whole.shape == (1, 3, 200, 280)
    assert torch.allclose(tiled, whole, atol=1e-4)
    assert not torch.allclose(models.run_tiled(net, x, 4, tile=24, pad=0), whole, atol=1e-4)


def test_x2_unshuffle_and_compact_models(ext: PluginHost, tmp_path: Path) -> None:
    _, _, main = modules(ext)
    save_file(basicsr_rrdb(scale=2), str(tmp_path / "RealESRGAN_x2plus.safetensors"))
    save_file(compact(), str(tmp_path / "realesr-general-x4v3.safetensors"))
    x2 = main.spec_for(tmp_path / "RealESRGAN_x2plus.safetensors")
    small = main.spec_for(tmp_path / "realesr-general-x4v3.safetensors")
    assert (x2.scale, small.scale) == (2.0, 4.0)
    assert x2.upscale(picture(), 80, 56).size == (80, 56)
    image = picture()
    assert main.upscale_image(small, image, 8).size == (320, 224)  # two passes of a 4x model


def test_registered_from_the_model_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "models" / "ESRGAN").mkdir(parents=True)
    (data / "models" / "RealESRGAN").mkdir(parents=True)
    torch.save(to_old_esrgan(basicsr_rrdb(), nb=2), data / "models" / "ESRGAN" / "4x-Tiny.pth")
    save_file(basicsr_rrdb(scale=2), str(data / "models" / "RealESRGAN" / "RealESRGAN_x2plus.safetensors"))
    (data / "models" / "ESRGAN" / "junk.pth").write_bytes(b"not a model")
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    specs = host.upscalers()
    assert sorted(specs) == ["4x-Tiny", "RealESRGAN_x2plus", "junk"]
    assert (specs["4x-Tiny"].scale, specs["RealESRGAN_x2plus"].scale) == (4.0, 2.0)
    out = specs["4x-Tiny"].upscale(picture(16, 16), 64, 64)
    assert out.size == (64, 64)
    with pytest.raises(Exception, match="junk.pth: not a readable model file"):
        specs["junk"].upscale(picture(16, 16), 64, 64)


def test_refresh_lists_model_files_added_and_removed_since_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    esrgan = data / "models" / "ESRGAN"
    esrgan.mkdir(parents=True)  # empty at start: the first model file is the common case
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    assert "upscalers" not in {n for n, _ in host._registered(UpscalerSpec)}
    assert list(host.picture_upscalers()) == ["Lanczos", "Nearest"]
    sections = host.ui_sections()

    torch.save(to_old_esrgan(basicsr_rrdb(), nb=2), esrgan / "4x-Tiny.pth")
    assert host.rescan_upscalers() == []
    assert list(host.picture_upscalers()) == ["Lanczos", "Nearest", "4x-Tiny"]
    tiny = host.upscalers()["4x-Tiny"]
    assert tiny.upscale(picture(16, 16), 64, 64).size == (64, 64)  # loads its network now

    torch.save(to_old_esrgan(basicsr_rrdb(), nb=2), esrgan / "2x-Other.pth")
    assert host.rescan_upscalers() == []
    assert sorted(host.upscalers()) == ["2x-Other", "4x-Tiny"]
    assert host.upscalers()["4x-Tiny"] is tiny  # same file: the same upscaler, its network kept

    (esrgan / "4x-Tiny.pth").unlink()
    host.rescan_upscalers()
    assert sorted(host.upscalers()) == ["2x-Other"]
    assert host.ui_sections() == sections  # nothing else of any extension changed


def test_refresh_runs_only_extensions_whose_manifest_allows_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    user = data / "extensions" / "counting"
    user.mkdir(parents=True)
    (user / "extension.toml").write_text(
        'name = "counting"\nversion = "1"\napi_version = "2.4"\nentry = "main"\n'
    )
    (user / "main.py").write_text(
        "from webui.plugins.api import UpscalerSpec, hookimpl\n"
        "CALLS = []\n"
        "@hookimpl\n"
        "def register(registry):\n"
        "    CALLS.append(1)\n"
        "    registry.add(UpscalerSpec(f'count-{len(CALLS)}', lambda im, w, h: im.resize((w, h))))\n"
    )
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    assert host.extension("counting").loaded, host.extension("counting").error
    host.rescan_upscalers()
    assert "count-1" in host.upscalers() and "count-2" not in host.upscalers()  # not run again
    (user / "extension.toml").write_text(
        'name = "counting"\nversion = "1"\napi_version = "2.4"\nentry = "main"\nrescan = true\n'
    )
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    before = set(host.upscalers())
    host.rescan_upscalers()
    after = set(host.upscalers())
    assert len(before - after) == 1 and len(after - before) == 1  # its register ran again


def test_a_bad_rescan_flag_is_a_manifest_error(tmp_path: Path) -> None:
    from webui.plugins.manifest import ManifestError, parse_manifest

    path = tmp_path / "extension.toml"
    path.write_text('name = "x"\napi_version = "2.4"\nentry = "main"\nrescan = "yes"\n')
    with pytest.raises(ManifestError, match="rescan must be true or false"):
        parse_manifest(path)


def test_pickles_with_code_are_refused(ext: PluginHost, tmp_path: Path) -> None:
    _, models, _ = modules(ext)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": Evil()}, f, protocol=2)
    with pytest.raises(Exception, match="refused"):
        models.read_tensors(path)
    assert not marker.exists()


def test_an_extension_upscaler_runs_in_hires_fix(tiny_data_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    from webui.core.engine import Engine
    from webui.core.models.components import Precision
    from webui.core.models.manager import ModelManager
    from webui.core.outputs.infotext import parse_infotext
    from webui.core.types import RequestError, Txt2ImgRequest

    data = tmp_path / "data"
    (data / "models" / "ESRGAN").mkdir(parents=True)
    save_file(basicsr_rrdb(scale=2), str(data / "models" / "ESRGAN" / "2x-Tiny.safetensors"))
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    config = AppConfig.for_data_dir(tiny_data_dir, outputs_dir=tmp_path / "outputs")
    manager = ModelManager(config, Precision())
    manager.refresh()
    engine = Engine(config, manager, host)
    assert "2x-Tiny" in engine.upscaler_names() and "Latent" in engine.upscaler_names()
    base = dict(
        prompt="a cat", steps=3, seed=4, width=64, height=64, checkpoint="tiny-sd1", save_images=False
    )
    hr = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5)
    by_model = engine.run(Txt2ImgRequest(**base, **hr, hr_upscaler="2x-Tiny"))
    by_lanczos = engine.run(Txt2ImgRequest(**base, **hr, hr_upscaler="Lanczos"))
    assert by_model.images[0].image.size == (96, 96)
    assert parse_infotext(by_model.images[0].infotext)["Hires upscaler"] == "2x-Tiny"
    assert not np.array_equal(np.asarray(by_model.images[0].image), np.asarray(by_lanczos.images[0].image))
    with pytest.raises(RequestError) as e:
        engine.run(Txt2ImgRequest(**base, **hr, hr_upscaler="4x-Missing"))
    assert e.value.field == "hr_upscaler" and "2x-Tiny" in e.value.message
