"""Saving images: A1111 names and folders, embedded infotext that other readers understand, atomic
writes that leave nothing behind on failure, and numbering that holds under concurrency."""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sd_parsers import ParserManager

from webui.core.outputs import saving
from webui.core.outputs.exif import decode_user_comment, encode_user_comment
from webui.core.outputs.infotext import format_infotext, parse_infotext
from webui.core.outputs.saving import (
    IMAGE_KINDS,
    image_folder,
    next_image_number,
    read_infotext,
    save_image,
)

PROMPT = "a photo of a cat wearing a space suit,\n(masterpiece:1.2), <lora:add_detail:0.8>"
NEGATIVE = "blurry, lowres, bad anatomy"
PARAMS: dict[str, object] = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 1234567890,
    "Size": (512, 768),
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Denoising strength": 0.5,
    "Hires upscale": 2.0,
    "Hires prompt": "a cat, in space: detailed",
    "Lora hashes": "add_detail: 7c6bad76eb54",
    "App": "Sfumato",
    "Version": "v0.1.0",
}
INFOTEXT = format_infotext(PROMPT, NEGATIVE, PARAMS)
UNICODE_INFOTEXT = format_infotext("一只猫, ネコ, кот 🙂", "", PARAMS)


def _noise(size: tuple[int, int] = (64, 64), mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---- folders and numbers ----------------------------------------------------------------------------


def test_image_folder_layout(tmp_path: Path) -> None:
    day = date(2024, 3, 9)
    assert image_folder(tmp_path, "txt2img-images", day) == tmp_path / "txt2img-images" / "2024-03-09"
    assert [image_folder(tmp_path, k, day).parent.name for k in IMAGE_KINDS] == [
        "txt2img-images",
        "img2img-images",
        "txt2img-grids",
        "img2img-grids",
    ]
    with pytest.raises(ValueError, match="unknown output kind"):
        image_folder(tmp_path, "../escape", day)


def test_next_image_number(tmp_path: Path) -> None:
    assert next_image_number(tmp_path / "missing") == 0
    assert next_image_number(tmp_path) == 0
    for name in ("00000-1.png", "00007-55.jpg", "00003.png", "grid-0099.png", ".1f2e.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert next_image_number(tmp_path) == 8
    (tmp_path / "00120-3-extra.webp").write_bytes(b"")
    assert next_image_number(tmp_path) == 121


def test_save_creates_folder_and_continues_numbering(tmp_path: Path) -> None:
    folder = image_folder(tmp_path, "txt2img-images", date(2024, 3, 9))
    first = save_image(_noise(), folder, 1234567890, INFOTEXT)
    assert first == folder / "00000-1234567890.png"
    (folder / "00041-99.png").write_bytes(b"from an earlier A1111 run")
    second = save_image(_noise(), folder, 7, INFOTEXT)
    assert second.name == "00042-7.png"
    assert _files(folder) == ["00000-1234567890.png", "00041-99.png", "00042-7.png"]


def test_a_suffix_goes_after_the_name_as_a1111s(tmp_path: Path) -> None:
    """`-before-face-restoration` copies: numbered like any image, the suffix before the extension."""
    copy = save_image(_noise(), tmp_path, 7, INFOTEXT, suffix="-before-face-restoration")
    final = save_image(_noise(), tmp_path, 7, INFOTEXT)
    assert (copy.name, final.name) == ("00000-7-before-face-restoration.png", "00001-7.png")
    plain = [save_image(_noise(), tmp_path, 9, INFOTEXT, suffix="-x", numbered=False) for _ in range(2)]
    assert [p.name for p in plain] == ["9-x.png", "9-x-1.png"]
    with pytest.raises(ValueError, match="suffix"):
        save_image(_noise(), tmp_path, 7, INFOTEXT, suffix="/../escape")


# ---- PNG --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("infotext", "chunk"), [(INFOTEXT, b"tEXt"), (UNICODE_INFOTEXT, b"iTXt")])
def test_png_parameters_chunk(tmp_path: Path, infotext: str, chunk: bytes) -> None:
    image = _noise()
    path = save_image(image, tmp_path, 5, infotext)
    data = path.read_bytes()
    assert chunk + b"parameters" in data
    assert data.index(b"parameters") < data.index(b"IDAT")  # readers that only look at image.info
    with Image.open(path) as reopened:
        assert reopened.format == "PNG"
        assert reopened.info["parameters"] == infotext
        assert np.array_equal(np.asarray(reopened), np.asarray(image))
    assert read_infotext(path) == infotext
    assert parse_infotext(read_infotext(path) or "")["Seed"] == "1234567890"


def test_read_infotext_after_image_data_and_missing(tmp_path: Path) -> None:
    info = PngInfo()
    info.add(b"tEXt", b"parameters\x00late chunk", after_idat=True)
    late = tmp_path / "late.png"
    _noise().save(late, pnginfo=info)
    assert read_infotext(late) == "late chunk"
    plain = tmp_path / "plain.png"
    _noise().save(plain)
    assert read_infotext(plain) is None
    with Image.open(plain) as image:
        assert read_infotext(image) is None


def test_png_compression_level_is_fast(tmp_path: Path) -> None:
    assert 1 <= saving.PNG_COMPRESS_LEVEL <= 4
    smooth = _noise((32, 32)).resize((512, 512), Image.Resampling.BICUBIC)
    path = save_image(smooth, tmp_path, 1, "")
    assert path.stat().st_size < 512 * 512 * 3 * 0.6  # compressed, not stored
    with Image.open(path) as reopened:
        assert "parameters" not in reopened.info


# ---- sd-parsers reads what we write -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
@pytest.mark.parametrize("infotext", [INFOTEXT, UNICODE_INFOTEXT], ids=["latin1", "unicode"])
def test_sd_parsers_reads_our_files(tmp_path: Path, fmt: str, infotext: str) -> None:
    path = save_image(_noise(), tmp_path, 1234567890, infotext, fmt)
    expected_prompt = parse_infotext(infotext)["Prompt"]
    with Image.open(path) as image:  # kept open: sd-parsers caches EXIF by id(image)
        info = ParserManager().parse(image)
    assert info is not None
    assert info.generator.value == "AUTOMATIC1111"
    assert len(info.samplers) == 1
    sampler = info.samplers[0]
    assert [p.value for p in sampler.prompts] == [expected_prompt]
    assert [p.value for p in sampler.negative_prompts] == ([NEGATIVE] if NEGATIVE in infotext else [])
    assert sampler.name == "DPM++ 2M"
    assert sampler.parameters["steps"] == "20"
    assert sampler.parameters["cfg_scale"] == "7"
    assert sampler.parameters["seed"] == "1234567890"
    assert sampler.parameters["scheduler"] == "Karras"
    assert info.metadata["Size"] == "512x768"
    assert sampler.model is not None
    assert sampler.model.hash == "6ce0161689"
    assert sampler.model.name == "v1-5-pruned-emaonly"
    assert info.metadata["Version"] == "v0.1.0"


# ---- JPEG and WebP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpg", "JPEG"), ("webp", "WEBP")])
def test_jpeg_webp_round_trip(tmp_path: Path, fmt: str, pil_format: str) -> None:
    path = save_image(_noise(), tmp_path, 3, UNICODE_INFOTEXT, fmt)
    assert path.name == f"00000-3.{fmt}"
    assert read_infotext(path) == UNICODE_INFOTEXT
    with Image.open(path) as image:
        assert image.format == pil_format
        exif = image.getexif()
        raw = exif.get_ifd(0x8769)[0x9286]
        assert raw[:8] == b"UNICODE\x00"
        assert raw[8:].decode("utf-16-be") == UNICODE_INFOTEXT
        assert 0x0110 not in exif
        assert set(exif) == {0x8769}
    assert b"\x92\x86\x00\x07" in path.read_bytes()  # UserComment tag, type UNDEFINED (big-endian TIFF)


def test_exif_model_tag_of_the_source_is_never_written(tmp_path: Path) -> None:
    source_exif = Image.Exif()
    source_exif[0x0110] = "SomeCamera"
    buffer = io.BytesIO()
    _noise().save(buffer, "JPEG", exif=source_exif)
    buffer.seek(0)
    with Image.open(buffer) as source:
        assert source.getexif()[0x0110] == "SomeCamera"
        for fmt in ("jpg", "webp", "png"):
            path = save_image(source, tmp_path, 1, INFOTEXT, fmt)
            with Image.open(path) as written:
                assert 0x0110 not in written.getexif()
            assert read_infotext(path) == INFOTEXT


def test_jpeg_quality_defaults_to_95_and_alpha_is_dropped(tmp_path: Path) -> None:
    image = _noise()
    reference = io.BytesIO()
    image.save(reference, "JPEG", quality=95)
    reference.seek(0)
    path = save_image(image, tmp_path, 1, INFOTEXT, "jpg")
    with Image.open(reference) as expected, Image.open(path) as written:
        assert written.quantization == expected.quantization  # type: ignore[attr-defined]
    rgba = save_image(_noise(mode="RGBA"), tmp_path, 2, INFOTEXT, "jpeg")
    assert rgba.suffix == ".jpg"
    with Image.open(rgba) as written:
        assert written.mode == "RGB"
    lower = save_image(image, tmp_path, 3, INFOTEXT, "jpg", quality=50)
    assert lower.stat().st_size < path.stat().st_size


def test_too_long_for_jpeg_is_refused_cleanly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long for JPEG"):
        save_image(_noise(), tmp_path, 1, "x" * 40_000, "jpg")
    assert _files(tmp_path) == []
    path = save_image(_noise(), tmp_path, 1, "x" * 40_000, "webp")
    assert read_infotext(path) == "x" * 40_000


def test_user_comment_decoding() -> None:
    text = "Steps: 20, Seed: 1 — 猫"
    assert decode_user_comment(encode_user_comment(text)) == text
    assert decode_user_comment(b"UNICODE\x00" + text.encode("utf-16-le")) == text  # some Windows tools
    assert decode_user_comment(b"UNICODE\x00\xff\xfe" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 5\x00") == "Steps: 5"
    assert decode_user_comment(b"\x00" * 8 + "é".encode()) == "é"


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown image format"):
        save_image(_noise(), tmp_path, 1, INFOTEXT, "gif")
    assert _files(tmp_path) == []


# ---- atomic writes ----------------------------------------------------------------------------------


def _disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failing_encoder_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        _disk_full()

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_image(_noise(), tmp_path, 1, INFOTEXT)
    assert _files(tmp_path) == []


def test_failing_fsync_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_image(_noise(), tmp_path, 1, INFOTEXT, "webp")
    assert _files(tmp_path) == []


def test_failing_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "link", _disk_full)
    monkeypatch.setattr(os, "replace", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_image(_noise(), tmp_path, 1, INFOTEXT)
    assert _files(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_real_write_error_leaves_nothing(tmp_path: Path) -> None:
    """The kernel refuses the write (file size limit, like a full disk): no partial file survives."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
        with pytest.raises(OSError) as caught:
            save_image(_noise((512, 512)), tmp_path, 1, INFOTEXT)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG
    assert _files(tmp_path) == []
    assert save_image(_noise((512, 512)), tmp_path, 1, INFOTEXT).name == "00000-1.png"


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_taken_name_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    if not hard_links:  # FAT, some network shares
        monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(saving, "next_image_number", lambda folder: 0)  # as if another program raced us
    (tmp_path / "00000-1.png").write_bytes(b"keep me")
    path = save_image(_noise(), tmp_path, 1, INFOTEXT)
    assert path.name == "00001-1.png"
    assert (tmp_path / "00000-1.png").read_bytes() == b"keep me"
    assert _files(tmp_path) == ["00000-1.png", "00001-1.png"]
    assert read_infotext(path) == INFOTEXT


# ---- concurrency ------------------------------------------------------------------------------------


def test_concurrent_saves_get_distinct_numbers(tmp_path: Path) -> None:
    threads_count, per_thread = 8, 6
    barrier = threading.Barrier(threads_count)
    saved: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            image = _noise(seed=index)
            barrier.wait()
            for round_ in range(per_thread):
                seed = 1000 * index + round_
                path = save_image(image, tmp_path, seed, f"p\nSteps: 1, Sampler: Euler, Seed: {seed}")
                with lock:
                    saved.append(path)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(int(p.name.split("-")[0]) for p in saved)
    assert numbers == list(range(threads_count * per_thread))
    assert _files(tmp_path) == sorted(p.name for p in saved)  # no temp files left
    for path in saved:
        seed = path.stem.split("-")[1]
        assert parse_infotext(read_infotext(path) or "")["Seed"] == seed


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_concurrent_processes_get_distinct_numbers(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        names = pool.starmap(_save_in_child, [(str(tmp_path), seed) for seed in range(24)])
    assert sorted(int(n.split("-")[0]) for n in names) == list(range(24))
    assert _files(tmp_path) == sorted(names)


def _save_in_child(folder: str, seed: int) -> str:
    return save_image(_noise(seed=seed), Path(folder), seed, "p\nSteps: 1, Sampler: Euler, Seed: 1").name
