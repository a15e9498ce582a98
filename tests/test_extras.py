"""Extras ("upscale this image") in the core: sizes, crop, blending, names, sanitising, saving, the
engine and the job queue (codec round trip, cancel and skip)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.core.config import AppConfig
from webui.core.engine import Engine, JobProgress
from webui.core.jobs.codec import kind_of, request_from_json, request_to_json
from webui.core.outputs.saving import read_infotext
from webui.core.sampling.loop import CancelToken
from webui.core.tasks import extras
from webui.core.tasks.extras import ExtrasRequest
from webui.core.types import RequestError


def _picture(w: int = 30, h: int = 20, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _with_parameters(image: Image.Image, text: str) -> Image.Image:
    info = PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(AppConfig.for_data_dir(tmp_path_factory.mktemp("extras-engine")))


@pytest.mark.parametrize(
    ("settings", "size", "expected"),
    [
        (dict(upscaling_resize=2), (30, 20), (60, 40)),
        (dict(upscaling_resize=1.5), (33, 21), (50, 32)),  # round(): 49.5 -> 50, 31.5 -> 32 (A1111: 48x24)
        (dict(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100), (30, 20), (100, 100)),
        (
            dict(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100, upscaling_crop=False),
            (30, 20),
            (150, 100),
        ),
        (dict(resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=10), (30, 20), (40, 10)),
    ],
)
def test_output_sizes(settings: dict, size: tuple[int, int], expected: tuple[int, int]) -> None:
    request = ExtrasRequest.from_images([_picture(*size)], upscaler_1="Lanczos", **settings)
    out = extras.upscale(request, request.images[0], extras.builtin_upscalers())
    assert out.size == expected == extras.output_size(request, *size)


def test_scale_to_crops_the_centre_of_the_covering_upscale() -> None:
    src = _picture(30, 20)
    request = ExtrasRequest.from_images(
        [src], upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40
    )
    out = np.asarray(extras.upscale(request, request.images[0], extras.builtin_upscalers()))
    cover = np.asarray(src.resize((60, 40), Image.Resampling.NEAREST))
    assert np.array_equal(out, cover[:, 10:50])


def test_second_upscaler_is_blended_by_its_visibility() -> None:
    src = _picture()
    ups = extras.builtin_upscalers()
    base = dict(upscaler_1="Nearest", upscaler_2="Lanczos", upscaling_resize=2)
    near = np.asarray(src.resize((60, 40), Image.Resampling.NEAREST), dtype=np.float32)
    lanc = np.asarray(src.resize((60, 40), Image.Resampling.LANCZOS), dtype=np.float32)
    for visibility in (0.0, 0.25, 1.0):
        request = ExtrasRequest.from_images([src], extras_upscaler_2_visibility=visibility, **base)
        out = np.asarray(extras.upscale(request, request.images[0], ups), dtype=np.float32)
        assert np.abs(out - (near + (lanc - near) * visibility)).max() <= 1
    recorded = extras.postprocess_params(ExtrasRequest(**base))  # visibility 0: upscaler 2 is not used
    assert recorded["Postprocess upscaler"] == "Nearest" and "Postprocess upscaler 2" not in recorded


def test_a_model_upscaler_with_another_native_scale_is_brought_to_the_exact_size() -> None:
    calls = []

    def four_x(image: Image.Image, w: int, h: int) -> Image.Image:
        calls.append((w, h))
        return image.resize((image.width * 4, image.height * 4))  # ignores the asked size

    request = ExtrasRequest.from_images([_picture()], upscaler_1="4x", upscaling_resize=2)
    out = extras.upscale(request, request.images[0], {"4x": four_x})
    assert calls == [(60, 40)] and out.size == (60, 40)


def test_none_passes_the_image_through_and_records_nothing() -> None:
    src = _picture()
    request = ExtrasRequest.from_images([src])
    assert np.array_equal(np.asarray(extras.upscale(request, request.images[0], {})), np.asarray(src))
    assert extras.postprocess_text(request) == ""


def test_images_are_sanitised_and_keep_their_parameters() -> None:
    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 0))  # fully transparent: composited on white
    rotated = _picture(8, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", exif=exif.tobytes())
    buf.seek(0)
    jpeg = Image.open(buf)
    palette = _with_parameters(_picture(6, 6).convert("P"), "a cat\nSteps: 3, Seed: 1, Size: 6x6")
    request = ExtrasRequest.from_images([rgba, jpeg, palette])
    assert [im.mode for im in request.images] == ["RGB"] * 3
    assert np.asarray(request.images[0]).min() == 255
    assert request.images[1].size == (4, 8)
    assert request.source_infotexts == ("", "", "a cat\nSteps: 3, Seed: 1, Size: 6x6")


def test_bad_images_and_values_name_the_field() -> None:
    with pytest.raises(RequestError) as e:
        ExtrasRequest.from_images([_picture(), "x"])
    assert e.value.field == "imageList.1"
    with pytest.raises(RequestError) as e:
        ExtrasRequest.from_images([Image.new("RGB", (9000, 9000))])
    assert e.value.field == "image"
    cases = [
        (dict(images=()), "image"),
        (dict(upscaling_resize=float("nan")), "upscaling_resize"),
        (dict(upscaling_resize=True), "upscaling_resize"),
        (dict(resize_mode=True), "resize_mode"),
        (dict(resize_mode=1, upscaling_resize_h=0), "upscaling_resize_h"),
        (dict(upscaler_2=3), "upscaler_2"),
        (dict(extras_upscaler_2_visibility=-0.1), "extras_upscaler_2_visibility"),
        (dict(upscaling_resize=8, images=(Image.new("RGB", (1100, 10)),)), "upscaling_resize"),
        (dict(source_infotexts=("a", "b")), "source_infotexts"),
        (dict(images=(_picture(),) * 101), "imageList"),
        (dict(upscaling_crop="no"), "upscaling_crop"),
        (dict(save_images=1), "save_images"),
        # "scale to" a big box from a thin image: the covering upscale (before the crop) is too big
        (
            dict(
                images=(Image.new("RGB", (64, 4096)),),
                resize_mode=1,
                upscaling_resize_w=8192,
                upscaling_resize_h=8192,
            ),
            "upscaling_resize_w",
        ),
        (
            dict(
                images=(Image.new("RGB", (10, 10)),),
                resize_mode=1,
                upscaling_resize_w=100,
                upscaling_resize_h=81,
            ),
            "upscaling_resize_w",
        ),  # x10 > x8
    ]
    for settings, field in cases:
        base = dict(images=(_picture(),), upscaler_1="Lanczos")
        with pytest.raises(RequestError) as e:
            ExtrasRequest(**{**base, **settings}).validate()
        assert e.value.field == field, settings
    with pytest.raises(RequestError, match="valid are None, Lanczos, Nearest") as e:
        extras.check_upscalers(ExtrasRequest(upscaler_1="ESRGAN_4x"), extras.builtin_upscalers())
    assert e.value.field == "upscaler_1"


def test_engine_saves_each_image_before_handing_it_over(engine: Engine) -> None:
    src = _with_parameters(_picture(), "a fox\nSteps: 3, Seed: 5, Size: 30x20")
    request = ExtrasRequest.from_images([src, _picture(seed=1)], upscaler_1="Lanczos", upscaling_resize=2)
    seen: list[tuple[Path | None, bool]] = []
    progress: list[JobProgress] = []
    result = engine.run(
        request,
        progress=progress.append,
        on_image=lambda im: seen.append((im.path, im.path is not None and im.path.exists())),
    )
    folder = engine.config.outputs_dir / "extras-images"
    assert [p.parent for p, _ in seen] == [folder, folder] and all(ok for _, ok in seen)
    assert [p.name for p, _ in seen] == sorted(p.name for p, _ in seen)
    assert all(p.stem.isdigit() and len(p.stem) == 5 for p, _ in seen)  # NNNNN.png, as A1111
    assert [(p.batch, p.batches) for p in progress] == [(1, 2), (2, 2)]
    first = result.images[0]
    assert read_infotext(first.path) == "a fox\nSteps: 3, Seed: 5, Size: 30x20" == first.infotext
    with Image.open(first.path) as saved:
        assert saved.text["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
        assert saved.size == (60, 40)
    assert result.images[1].infotext == "" and read_infotext(result.images[1].path) is None


def test_engine_does_not_write_when_save_images_is_off(engine: Engine) -> None:
    folder = engine.config.outputs_dir / "extras-images"
    before = set(folder.glob("*")) if folder.exists() else set()
    result = engine.run(ExtrasRequest.from_images([_picture()], upscaler_1="Nearest", save_images=False))
    assert result.images[0].path is None and result.images[0].image.size == (60, 40)
    assert (set(folder.glob("*")) if folder.exists() else set()) == before


def test_interrupt_keeps_finished_images_and_skip_drops_the_current_one(engine: Engine) -> None:
    cancel = CancelToken()
    calls = threading.Event()

    def slow(image: Image.Image, w: int, h: int) -> Image.Image:
        if calls.is_set():
            cancel.interrupt()
        calls.set()
        return image.resize((w, h))

    request = ExtrasRequest.from_images(
        [_picture(seed=i) for i in range(4)], upscaler_1="slow", save_images=False
    )
    images, interrupted = extras.run(request, {"slow": slow}, Path("unused"), cancel=cancel)
    assert interrupted and len(images) == 2  # the image being upscaled when interrupted still finishes

    cancel2 = CancelToken()

    def skipping(image: Image.Image, w: int, h: int) -> Image.Image:
        if image.getpixel((0, 0)) == request2.images[1].getpixel((0, 0)):
            cancel2.skip()
        return image.resize((w, h))

    request2 = ExtrasRequest.from_images(
        [_picture(seed=i) for i in range(3)], upscaler_1="s", save_images=False
    )
    images2, stopped = extras.run(request2, {"s": skipping}, Path("unused"), cancel=cancel2)
    assert not stopped and [im.seed for im in images2] == [0, 2]


def test_codec_round_trip_keeps_pixels_and_settings(tmp_path: Path) -> None:
    request = ExtrasRequest.from_images(
        [_with_parameters(_picture(), "p\nSteps: 2"), _picture(seed=3)],
        upscaler_1="Lanczos",
        upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.4,
        resize_mode=1,
        upscaling_resize_w=64,
        upscaling_resize_h=48,
        upscaling_crop=False,
    )
    assert kind_of(request) == "extras"
    back = request_from_json("extras", request_to_json(request, image_dir=tmp_path), image_dir=tmp_path)
    assert isinstance(back, ExtrasRequest) and back == request
    assert back.source_infotexts == ("p\nSteps: 2", "")
    for a, b in zip(request.images, back.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_queued_extras_job_runs_and_lists_its_images(tmp_path: Path) -> None:
    from webui.core.jobs import JobQueue

    engine = Engine(AppConfig.for_data_dir(tmp_path / "data"))
    queue = JobQueue(engine, tmp_path / "jobs.sqlite")
    queue.start()
    try:
        info = queue.submit(ExtrasRequest.from_images([_picture()], upscaler_1="Nearest"), "ann")
        done = queue.wait(info.id, 60)
        assert done.state.value == "done", done.error
        assert done.kind == "extras" and len(done.images) == 1
        with Image.open(done.images[0].path) as im:
            assert im.size == (60, 40)
        bad = queue.submit(ExtrasRequest.from_images([_picture()], upscaler_1="missing-model"), "ann")
        failed = queue.wait(bad.id, 60)
        assert failed.state.value == "failed" and "upscaler_1" in (failed.error or "")
    finally:
        queue.close()
