"""--medvram and --lowvram on the real tiny models: which part sits on the compute device in each phase,
the moves the offloader makes, and pictures bit-equal to a run without offloading.

On this CPU-only machine storage and compute are both the CPU, so the offloader here stores weights in
float64: a part that left the compute place is then visibly float64, and float32 -> float64 -> float32
is exact, so outputs must still equal the plain run bit for bit. Forward hooks on the real modules look
at every part's weights at the moment each part (or block) runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.components import Precision
from webui.core.models.demo import write_demo
from webui.core.models.manager import ModelManager
from webui.core.models.offload import Move, Offloader, Place, blocks
from webui.core.types import Txt2ImgRequest

STORED = torch.float64  # the storage dtype these tests give the offloader (see the module doc)
ARCH_NAMES = {"sd1": "tiny-sd1", "sd2-v": "tiny-sd2-v", "sdxl": "tiny-sdxl"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (float sums in one order: bit-equal comparisons)."""


@pytest.fixture(scope="module")
def data(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD1, SD2-v and SDXL files and the SD3 and Flux demo models in one data folder."""
    root = tmp_path_factory.mktemp("offload")
    models = root / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    for arch in ARCH_NAMES:
        shutil.copy(tiny_files[arch], models / "Stable-diffusion" / tiny_files[arch].name)
    ARCH_NAMES["sd3"] = write_demo(models, "sd3").stem
    ARCH_NAMES["flux"] = write_demo(models, "flux").stem
    return root


def make_engine(data: Path, mode: str, block_bytes: int = 2**40, hooks: Any = None) -> Engine:
    config = AppConfig.for_data_dir(data, outputs_dir=data / "outputs")
    offloader = None if mode == "none" else Offloader(mode, "cpu", Place("cpu", STORED), block_bytes)
    manager = ModelManager(config, Precision(vram=mode), offloader=offloader)
    manager.refresh()
    return Engine(config, manager, hooks) if hooks is not None else Engine(config, manager)


@pytest.fixture(scope="module")
def plain(data: Path) -> Engine:
    return make_engine(data, "none")


def request(arch: str, **kw: Any) -> Txt2ImgRequest:
    flux = arch == "flux"
    args: dict[str, Any] = dict(
        prompt="a red apple", negative_prompt="" if flux else "blurry", checkpoint=ARCH_NAMES[arch], width=64,
        height=64, steps=2, seed=5, cfg_scale=1.0 if flux else 5.0, save_images=False,
    )  # fmt: skip
    args.update(kw)
    return Txt2ImgRequest(**args)


def pixels(engine: Engine, req: Txt2ImgRequest) -> list[np.ndarray]:
    return [np.asarray(i.image) for i in engine.run(req).images]


def stored(module: torch.nn.Module) -> bool:
    return all(p.dtype == STORED for p in module.parameters())


def computing(module: torch.nn.Module) -> bool:
    return all(p.dtype == torch.float32 for p in module.parameters())


def where_all(parts: dict[str, torch.nn.Module]) -> dict[str, str]:
    out = {}
    for name, m in parts.items():
        out[name] = "compute" if computing(m) else "storage" if stored(m) else "mixed"
    return out


def test_medvram_puts_only_the_part_in_use_on_the_device_and_changes_no_bit(
    data: Path, plain: Engine
) -> None:  # noqa: E501
    engine = make_engine(data, "medvram")
    req = request(
        "sd1", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
        hr_upscaler="Lanczos",  # a picture upscaler: decode, upscale, encode between the passes
    )  # fmt: skip
    seen: list[tuple[str, dict[str, str]]] = []
    outputs: dict[str, list[torch.Tensor]] = {"plain": [], "medvram": []}
    with (
        engine.manager.acquire("tiny-sd1") as loaded,
        plain.manager.acquire("tiny-sd1") as plain_loaded,
    ):
        parts = loaded.components.modules()
        assert set(parts) == {"unet", "vae", "text_encoder"} and all(stored(m) for m in parts.values())
        handles = [
            plain_loaded.components.unet.register_forward_hook(lambda m, a, o: outputs["plain"].append(o[0])),
            loaded.components.unet.register_forward_hook(lambda m, a, o: outputs["medvram"].append(o[0])),
        ]
        for name, watched in (("text_encoder", parts["text_encoder"]), ("unet", parts["unet"]),
                              ("vae", parts["vae"].decoder), ("vae", parts["vae"].encoder)):  # fmt: skip
            hook = lambda m, a, name=name: seen.append((name, where_all(parts)))  # noqa: E731
            handles.append(watched.register_forward_pre_hook(hook))
        try:
            ours = pixels(engine, req)
            theirs = pixels(plain, req)
        finally:
            for h in handles:
                h.remove()
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)) and len(ours) == 1
    assert len(outputs["medvram"]) == len(outputs["plain"]) == 3  # 2 steps, then 1 hires step (strength 0.5)
    assert all(torch.equal(a, b) for a, b in zip(outputs["medvram"], outputs["plain"], strict=True))
    # in every phase the part at work is on the compute device and every other part waits in storage
    for name, placement in seen:
        assert placement == {p: "compute" if p == name else "storage" for p in parts}, (name, placement)
    order = [name for name, _ in seen]
    assert order[0] == "text_encoder" and order.count("unet") == 3 and "vae" in order  # hires: decode+encode
    expected = [
        Move("text_encoder", "compute"), Move("text_encoder", "storage"), Move("unet", "compute"),
        Move("unet", "storage"), Move("vae", "compute"), Move("vae", "storage"), Move("unet", "compute"),
        Move("unet", "storage"), Move("vae", "compute"),
    ]  # fmt: skip
    assert engine.manager.offloader is not None and engine.manager.offloader.moves == expected


@pytest.mark.parametrize("block_bytes", [2**40, 40_000])
def test_lowvram_streams_one_unet_block_at_a_time(data: Path, plain: Engine, block_bytes: int) -> None:
    engine = make_engine(data, "lowvram", block_bytes)
    seen: list[tuple[str, list[str], dict[str, str]]] = []
    with engine.manager.acquire("tiny-sd1") as loaded:
        parts = loaded.components.modules()
        unet = loaded.components.unet
        plan = [(name, m) for name, m, whole in blocks(unet, block_bytes) if whole]
        others = {k: v for k, v in parts.items() if k != "unet"}
        handles = []
        for name, block in plan:

            def hook(m: Any, a: Any, name: str = name) -> None:
                on_device = [n for n, b in plan if computing(b)]
                seen.append((name, on_device, where_all(others)))

            handles.append(block.register_forward_pre_hook(hook))
        try:
            ours = pixels(engine, request("sd1"))
        finally:
            for h in handles:
                h.remove()
        assert stored(unet)  # after the run every block is back in storage
    assert all(np.array_equal(a, b) for a, b in zip(ours, pixels(plain, request("sd1")), strict=True))
    names = [n for n, _ in plan]
    if block_bytes > 10**9:
        assert {"conv_in", "down_blocks.0", "mid_block", "conv_out"} <= set(names)
    else:  # split finer: the big blocks gave their children
        assert "down_blocks.0" not in names
        assert any(n.startswith("down_blocks.0.attentions.0.") for n in names)
    assert {name for name, _, _ in seen} == set(names)
    for name, on_device, rest in seen:
        assert on_device == [name], (name, on_device)  # the block that runs, no other
        assert rest == {"text_encoder": "storage", "vae": "storage"}


@pytest.mark.parametrize("arch", ["sd2-v", "sdxl", "sd3", "flux"])
def test_every_family_gives_the_same_bits_offloaded(data: Path, plain: Engine, arch: str) -> None:
    want = pixels(plain, request(arch))
    for mode in ("medvram", "lowvram"):
        engine = make_engine(data, mode)
        got = pixels(engine, request(arch))
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), mode
        with engine.manager.acquire(ARCH_NAMES[arch]) as loaded:
            placement = where_all(loaded.components.modules())
        assert placement == {p: "compute" if p == "vae" else "storage" for p in placement}, (mode, placement)
        moved = {m.part.split(".")[0] for m in engine.manager.offloader.moves}  # type: ignore[union-attr]
        assert moved == set(placement)  # every text encoder, the denoiser and the VAE took their turn


def test_a_second_model_leaves_the_device_when_another_runs(data: Path) -> None:
    """Two checkpoints in one worker's RAM cache: the one not running waits in storage."""
    engine = make_engine(data, "medvram")
    engine.run(request("sd1"))
    engine.run(request("sd2-v"))
    with engine.manager.acquire("tiny-sd1") as first, engine.manager.acquire("tiny-sd2-v") as second:
        assert all(stored(m) for m in first.components.modules().values())
        assert computing(second.components.vae) and stored(second.components.unet)


class _Report:
    def progress(self, info: Any, preview_png: bytes | None) -> None:
        pass

    def images(self, images: Any) -> None:
        pass


def test_out_of_memory_mid_denoise_fails_the_job_with_advice_and_the_next_runs(
    data: Path, plain: Engine, tmp_path: Path
) -> None:
    """The real UNet runs out of memory on its first call (after the offloader moved it in): the job
    fails saying what to try, the UNet goes back to storage, the model stays loaded, the next job runs."""
    from webui.core.jobs.worker import execute
    from webui.core.sampling.loop import CancelToken

    engine = make_engine(data, "medvram")
    tripped: list[bool] = []

    def oom(_m: Any, _a: Any) -> None:
        if not tripped:
            tripped.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with engine.manager.acquire("tiny-sd1") as loaded:
        unet = loaded.components.unet
        handle = unet.register_forward_pre_hook(oom)
        try:
            failed = execute(engine, request("sd1"), CancelToken(), results_dir=tmp_path, report=_Report())
            assert failed.error is not None and failed.error.startswith("out of memory"), failed.error
            assert (
                "20.00 GiB" in failed.error and "--lowvram" in failed.error and "--tiled-vae" in failed.error
            )
            assert stored(unet)  # settled: nothing left on the device after the failure
            assert [p.name for p in engine.manager.cached()] == ["tiny-sd1.safetensors"]
            done = execute(engine, request("sd1"), CancelToken(), results_dir=tmp_path, report=_Report())
        finally:
            handle.remove()
    assert done.error is None and len(done.images) == 1
    from PIL import Image

    with Image.open(done.images[0].path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels(plain, request("sd1"))[0])


def test_a_controlnet_from_the_extension_moves_with_the_unet(
    data: Path, tiny_controlnet_files: dict[tuple[str, str], Path]
) -> None:
    """A ControlNet loaded by the extension (context.models.use) waits in RAM with this worker's
    offloader, sits on the device beside the UNet while it runs (medvram), streams block by block
    (lowvram), and the pictures equal those of a run without offloading."""
    import base64
    import hashlib
    import io

    from PIL import Image, ImageDraw

    from webui.plugins.host import PluginHost

    cn_dir = data / "models" / "ControlNet"
    cn_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_controlnet_files["sd1", "ldm"], cn_dir / "tiny-cn-sd1-ldm.safetensors")
    drawing = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(drawing).ellipse((10, 10, 50, 40), outline="black", width=3)
    buf = io.BytesIO()
    drawing.save(buf, format="PNG")
    weights = (cn_dir / "tiny-cn-sd1-ldm.safetensors").read_bytes()
    digest = hashlib.sha256(weights[0x100000:0x110000]).hexdigest()[:8]  # A1111's legacy model hash
    unit = {"enabled": True, "module": "canny", "model": f"tiny-cn-sd1-ldm [{digest}]",
            "image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}  # fmt: skip
    req = request("sd1", extension_args={"controlnet": unit})
    config = AppConfig.for_data_dir(data, outputs_dir=data / "outputs")
    results = {}
    for mode in ("none", "medvram", "lowvram"):
        host = PluginHost.for_config(config, include_pip=False)
        engine = make_engine(data, mode, hooks=host)
        seen: list[str] = []
        with engine.manager.acquire("tiny-sd1") as loaded:
            parts = loaded.components.modules()

            def watch(_m: Any, _a: Any, parts: dict[str, Any] = parts, seen: list[str] = seen) -> None:
                seen.append(str(where_all(parts)))

            handle = parts["unet"].register_forward_pre_hook(watch)
            try:
                result = engine.run(req)
            finally:
                handle.remove()
        assert not any("controlnet" in w.lower() for w in result.warnings), result.warnings
        results[mode] = np.asarray(result.images[0].image)
        if mode == "none":
            continue
        offloader = engine.manager.offloader
        assert offloader is not None
        cn_moves = [m for m in offloader.moves if m.part.startswith("ControlNet/")]
        assert cn_moves, "the ControlNet never went through the offloader"
        if mode == "medvram":  # in with the UNet, out before the VAE, never alone on the device
            parts_in_order = [m.part for m in offloader.moves if m.to == "compute"]
            assert parts_in_order[:3] == ["text_encoder", "ControlNet/tiny-cn-sd1-ldm.safetensors", "unet"]
            out = [m.part for m in offloader.moves if m.to == "storage"]
            assert out[-2:] in (["unet", "ControlNet/tiny-cn-sd1-ldm.safetensors"],
                                ["ControlNet/tiny-cn-sd1-ldm.safetensors", "unet"])  # fmt: skip
        else:
            assert any(m.part.startswith("ControlNet/tiny-cn-sd1-ldm.safetensors.") for m in cn_moves)
        assert all(s == str({"unet": "compute" if mode == "medvram" else "storage", "vae": "storage",
                             "text_encoder": "storage"}) for s in seen), seen  # fmt: skip
    plain_cn = results.pop("none")
    assert all(np.array_equal(plain_cn, v) for v in results.values())
    assert not np.array_equal(plain_cn, pixels(make_engine(data, "none"), request("sd1")))  # the unit acted
