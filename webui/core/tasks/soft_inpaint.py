"""Soft inpainting (A1111 1.8's built-in extension) and differential diffusion: a soft mask as a per-pixel
strength instead of a binarised one. Both change only how the loop's mask blend mixes the known region
back in (`MaskBlend` in img2img.py and flow_img2img.py call `mix`), and how the result is composited.

Masks here are repaint masks (1 = repaint, 0 = keep), m, as the loop's latent mask.

Soft inpainting, per step (A1111 blends the denoiser's estimate with the clean init at each model call;
our loop blends the latents with the init noised to the same level after each step, so the same rule is
applied there):

    t = m ** (sigma ** mask_blend_power * mask_blend_scale)     sigma: the step's noise level (k-diffusion
                                                                 scale; flow models: s / (1 - s))
    x = lerp(known, latents, t), then each latent pixel's vector (over channels) rescaled to
        ((1 - t) |known|^p + t |latents|^p) ^ (1 / p)             p = inpaint_detail_preservation

High noise levels preserve more of the original in partly masked pixels, low levels less. Where t is 0 or
1 the rescale is the identity and is skipped (A1111 divides by |x| + 1e-5 there, a change in the 5th
digit); where m is 0, t is 0 whatever the exponent (A1111's 0 ** 0 would be 1 at a strength of 0).

Soft inpainting's composite (A1111's "pixel composite"): the distance between the init latents and the
result's, per latent pixel, filtered twice by a weighted-percentile filter (5x5 Gaussian weights: the
90-100 % band, then the 25-75 % band), is turned into the result's opacity

    half = composite_difference_threshold * s / (1.00001 - s),
           s = 0.5 (1 - composite_mask_influence) + (1 - m ** (mask_blend_scale / 2)) composite_mask_influence
    opacity = 1 - smootherstep(1 / (1 + (distance / half) ** composite_difference_contrast))

brought to the picture's size (Lanczos) and blurred (Gaussian, radius 4): where the result hardly differs
from the original, the original's own pixels show. Sfumato applies it in the mask's transition band only
(0 < m < 1 at the picture's size); where m is 1 the result shows and where m is 0 the original's exact
pixels, as in ordinary inpainting. So a hard mask (only 0 and 255, no blur) gives exactly ordinary
inpainting, and the band is where the mask is soft.

Differential diffusion (Levin & Fried, 2023): the mask is a change map. Of the n steps run, a pixel of
value m is free in the last ceil(m n) of them (free at step k, counted from 0, when m > (n - 1 - k) / n)
and held to the init, noised to the step's level, before: 1 changes in every step (plain img2img), 0 in
none (the init, exactly). The result is composited with the original only where m is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from webui.core.tasks.resize import CROP_AND_RESIZE, JUST_RESIZE, RESIZE_AND_FILL, resize_image


@dataclass(frozen=True)
class SoftInpainting:
    """A1111's six Soft Inpainting settings, by its names (see soft_inpaint_fields for labels)."""

    mask_blend_power: float = 1.0
    mask_blend_scale: float = 0.5
    inpaint_detail_preservation: float = 4.0
    composite_mask_influence: float = 0.0
    composite_difference_threshold: float = 0.5
    composite_difference_contrast: float = 2.0


@dataclass(frozen=True)
class DifferentialDiffusion:
    """The mask as a per-pixel change map (no settings)."""


BlendRule = SoftInpainting | DifferentialDiffusion | None  # None: ordinary inpainting


def is_soft(mask: Image.Image) -> bool:
    """Whether an "L" mask has any value strictly between 0 and 255."""
    hist = mask.convert("L").histogram()
    return sum(hist[1:255]) > 0


# ---- in the loop -------------------------------------------------------------------------------------


def diffusion_sigma(scheduler: Any, timestep: torch.Tensor) -> float:
    """The k-diffusion noise level of a (possibly fractional) training timestep: sqrt((1 - a) / a)."""
    schedule = getattr(scheduler, "alphas_cumprod", None)
    if schedule is None:
        raise ValueError(f"soft inpainting needs the noise schedule, {type(scheduler).__name__} has none")
    ac = schedule.detach().to("cpu", torch.float64)
    t = min(max(float(timestep), 0.0), float(len(ac) - 1))
    lo = int(math.floor(t))
    hi = min(lo + 1, len(ac) - 1)
    a = float(ac[lo]) * (1 - (t - lo)) + float(ac[hi]) * (t - lo)
    return math.sqrt((1 - a) / a)


def flow_sigma(sigma: float) -> float:
    """A flow model's sigma s as the k-diffusion level of the same signal-to-noise ratio: s / (1 - s)."""
    return math.inf if sigma >= 1 else sigma / (1 - sigma)


def schedule_mask(mask: torch.Tensor, sigma: float, rule: SoftInpainting) -> torch.Tensor:
    """t = m ** (sigma ** power * scale), 0 where m is 0."""
    exponent = sigma**rule.mask_blend_power * rule.mask_blend_scale if math.isfinite(sigma) else math.inf
    t = torch.pow(mask.clamp(0, 1), exponent) if math.isfinite(exponent) else (mask >= 1).to(mask.dtype)
    return torch.where(mask > 0, t, torch.zeros_like(t))


def magnitude_blend(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, power: float) -> torch.Tensor:
    """lerp(a, b, t), each pixel's vector over dim 1 rescaled to the power-mean of |a| and |b| (A1111's
    latent_blend); the rescale is skipped where t is 0 or 1 (it is the identity there)."""
    mixed = a * (1 - t) + b * t
    t64 = t.to(torch.float64)
    norm = torch.linalg.vector_norm  # over channels, kept as a (B, 1, h, w) map
    current = norm(mixed.to(torch.float64), dim=1, keepdim=True) + 1e-5
    na = norm(a.to(torch.float64), dim=1, keepdim=True).pow(power)
    nb = norm(b.to(torch.float64), dim=1, keepdim=True).pow(power)
    desired = (na * (1 - t64) + nb * t64).pow(1 / power)
    scaled = mixed * (desired / current).to(mixed.dtype)
    band = (t > 0) & (t < 1)
    return torch.where(band, scaled, mixed)


def free_steps(mask: torch.Tensor, step: int, total: int) -> torch.Tensor:
    """Differential diffusion: where the pixel is free at step `step` of `total` (0-based)."""
    return mask > (total - 1 - step) / total


def mix(
    rule: BlendRule,
    known: torch.Tensor,
    latents: torch.Tensor,
    mask: torch.Tensor,
    *,
    step: int,
    total: int,
    sigma: float,
) -> torch.Tensor:
    """The latents after step `step` (of `total`) with the known region mixed back in."""
    if rule is None:
        return known * (1 - mask) + latents * mask
    if isinstance(rule, SoftInpainting):
        t = schedule_mask(mask, sigma, rule)
        return magnitude_blend(known, latents, t, rule.inpaint_detail_preservation)
    nxt = min(step + 1, total - 1)  # after the last step: the pixels never free keep the clean init
    return torch.where(free_steps(mask, nxt, total), latents, known)


# ---- the pixel composite -----------------------------------------------------------------------------


def gaussian_weights(stddev: float = 1.5, radius: int = 2) -> np.ndarray:
    """A1111's thresholded Gaussian kernel: exp(-d^2 / stddev^2), lowered to 0 one pixel past `radius`."""
    zero = math.exp(-((radius + 1.0) ** 2) / stddev**2)
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    k = (np.exp(-(x * x + y * y) / stddev**2) - zero) / (1 - zero)
    out: np.ndarray = np.maximum(k, 0.0)
    return out


def percentile_filter(
    img: np.ndarray, kernel: np.ndarray, lo: float, hi: float, min_width: float = 1.0
) -> np.ndarray:
    """Each pixel: the weighted mean of its window's values between the `lo` and `hi` fractions of their
    weight-sorted stack (at least `min_width` of weight wide); the window is cut at the image's edges."""
    h, w = img.shape
    r = kernel.shape[0] // 2
    padded = np.pad(img.astype(np.float64), r)
    inside = np.pad(np.ones((h, w)), r)
    values, weights = [], []
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            values.append(padded[dy : dy + h, dx : dx + w])
            weights.append(inside[dy : dy + h, dx : dx + w] * kernel[dy, dx])
    v = np.stack(values, -1)
    wt = np.stack(weights, -1)
    order = np.argsort(v, axis=-1, kind="stable")
    v = np.take_along_axis(v, order, -1)
    wt = np.take_along_axis(wt, order, -1)
    top = np.cumsum(wt, -1)
    bottom = top - wt
    total = top[..., -1:]
    w_lo, w_hi = total * lo, total * hi
    narrow = (w_hi - w_lo) < min_width
    centre = (w_lo + w_hi) / 2
    w_lo = np.where(narrow, centre - min_width / 2, w_lo)
    w_hi = np.where(narrow, centre + min_width / 2, w_hi)
    over = narrow & (w_hi > total)
    w_lo, w_hi = np.where(over, total - min_width, w_lo), np.where(over, total, w_hi)
    under = narrow & (w_lo < 0)
    w_lo, w_hi = np.where(under, 0.0, w_lo), np.where(under, min_width, w_hi)
    overlap = np.clip(np.minimum(w_hi, top) - np.maximum(w_lo, bottom), 0, None)
    weight = overlap.sum(-1)
    out: np.ndarray = np.where(weight > 0, (v * overlap).sum(-1) / np.where(weight > 0, weight, 1), 0.0)
    return out


def smootherstep(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x * x * x * (x * (6 * x - 15) + 10)
    return out


def difference_opacity(
    init: torch.Tensor,
    result: torch.Tensor,
    mask: torch.Tensor,
    rule: SoftInpainting,
    width: int,
    height: int,
) -> list[Image.Image]:
    """Per image: the result's opacity ("L", width x height) from how far its latents moved from the
    init's. `init`, `result` (B, C, h, w), `mask` (B or 1, 1, h, w) the loop's latent mask."""
    m = mask[:, 0].detach().float().clamp(0, 1).cpu().numpy()
    scalar = 1 - m ** (rule.mask_blend_scale / 2)
    scalar = 0.5 * (1 - rule.composite_mask_influence) + scalar * rule.composite_mask_influence
    scalar = scalar / (1.00001 - scalar)
    distance = torch.linalg.vector_norm(result.float() - init.float(), dim=1).cpu().numpy()
    kernel = gaussian_weights()
    out = []
    for i, dist in enumerate(distance):
        d = percentile_filter(dist, kernel, 0.9, 1.0)
        d = percentile_filter(d, kernel, 0.25, 0.75)
        half = rule.composite_difference_threshold * scalar[min(i, len(scalar) - 1)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(half > 0, d / np.where(half > 0, half, 1), np.inf)
            keep = 1 / (1 + ratio**rule.composite_difference_contrast)
        opacity = 1 - smootherstep(np.clip(np.nan_to_num(keep, nan=0.0), 0, 1))
        small = Image.fromarray((255.0 * opacity).astype(np.uint8), "L")
        big = resize_image(RESIZE_AND_FILL, small, width, height)
        out.append(big.filter(ImageFilter.GaussianBlur(radius=4)))
    return out


def in_band(
    ordinary: Image.Image, blended: Image.Image, original: Image.Image, soft_mask: Image.Image
) -> Image.Image:
    """`ordinary` where the mask is 255, `blended` where it is between, `original` where it is 0."""
    m = np.asarray(soft_mask.convert("L"))[..., None]
    out = np.where(m == 255, np.asarray(ordinary.convert("RGB")), np.asarray(blended.convert("RGB")))
    out = np.where(m == 0, np.asarray(original.convert("RGB")), out)
    return Image.fromarray(out.astype(np.uint8), "RGB")


def to_output(
    alpha: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int] | None
) -> Image.Image:
    """An opacity at the work size brought to the output's geometry (into the box for "only masked")."""
    if box is None:
        return alpha if alpha.size == size else resize_image(JUST_RESIZE, alpha, *size)
    full = Image.new("L", size, 0)
    x1, y1, x2, y2 = box
    full.paste(resize_image(CROP_AND_RESIZE, alpha, x2 - x1, y2 - y1), (x1, y1))
    return full
