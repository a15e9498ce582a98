"""The memory a job's pictures need even with the tiled VAE, against the `image_memory_limit_mb` setting.

The tiled VAE (tasks.vae_tiles) keeps the VAE's own memory to one tile's, whatever the size; what still
grows with the picture is the picture itself: the decoded image as float32 (3 channels), the copies the
decode's scaling and clamping make, the 8-bit picture and its PIL image, for each image of a batch. That
is about BYTES_PER_PIXEL bytes per pixel per image (the latents, 1/64 of the pixels, are left out). A
request over the limit is refused when it is submitted (HTTP 422) naming the field that makes it too
large, with what it would need and the largest size (or batch) that fits.

    image_memory_limit_mb = 0 (default): half of this machine's RAM; otherwise the limit in MiB.
"""

from __future__ import annotations

import math
import os

from webui.core.types import GenerationRequest, Img2ImgRequest, RequestError, Txt2ImgRequest

BYTES_PER_PIXEL = 32  # float32 RGB (12) + a scaled copy (12) + 8-bit RGB (3) + the PIL image (4), rounded up
MiB = 2**20


def machine_ram() -> int | None:
    """Physical memory of this machine in bytes (None when it cannot be told)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def limit_bytes(setting_mb: int | None, ram: int | None = None) -> int | None:
    """The limit in bytes: the setting, or (0 / unset) half the machine's RAM; None: no limit known."""
    if setting_mb:
        return int(setting_mb) * MiB
    ram = machine_ram() if ram is None else ram
    return ram // 2 if ram else None


def picture_bytes(width: int, height: int, images: int = 1) -> int:
    """What `images` pictures of width x height need even with the tiled VAE (see the module doc)."""
    return width * height * BYTES_PER_PIXEL * images


def final_size(request: GenerationRequest) -> tuple[tuple[int, int], str]:
    """The size of the pictures a request makes, and the request field that sets it."""
    if isinstance(request, Txt2ImgRequest) and request.enable_hr:
        field = "hr_scale" if request.hr_resize_x == 0 and request.hr_resize_y == 0 else "hr_resize_x"
        return request.hr_target.size, field
    return (request.width, request.height), "width"


def check_image_memory(request: GenerationRequest, limit: int | None) -> None:
    """RequestError when the request's pictures would need more than `limit` bytes (None: no check)."""
    if limit is None:
        return
    (w, h), field = final_size(request)
    batch = request.effective_batch_size if isinstance(request, Img2ImgRequest) else request.batch_size
    need = picture_bytes(w, h, batch)
    if need <= limit:
        return
    have = f"the image_memory_limit_mb setting allows {limit / MiB:.0f} MiB"
    one = picture_bytes(w, h)
    if batch > 1 and one <= limit:
        fits = limit // one
        raise RequestError(
            "batch_size",
            f"{batch} pictures of {w}x{h} need about {need / MiB:.0f} MiB even with the tiled VAE; {have}: "
            f"at most {fits} of this size in one batch",
        )
    scale = math.sqrt(limit / one)
    fit_w, fit_h = max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8)
    raise RequestError(
        field,
        f"a {w}x{h} picture needs about {one / MiB:.0f} MiB even with the tiled VAE; {have}: "
        f"at most about {fit_w}x{fit_h} at this aspect ratio",
    )
