"""People from OpenPose's maps (Cao et al. 2017, "part affinity fields"): the peaks of each part's heat
map, the limbs that the affinity fields support between two parts' peaks, and the limbs joined into
skeletons of the 18 COCO keypoints.

    0 nose  1 neck  2-4 right shoulder, elbow, wrist  5-7 left shoulder, elbow, wrist
    8-10 right hip, knee, ankle  11-13 left hip, knee, ankle  14/15 right/left eye  16/17 right/left ear

The thresholds and the scoring are those of the CMU / sd-webui-controlnet body estimator: peaks of the
heat map smoothed by a Gaussian (sigma 3) that are at least their four neighbours and above 0.1; a limb
candidate is scored by the affinity field along the segment at 10 points (the field projected on the
segment's direction), kept if more than 80% of them exceed 0.05 and the mean, with a penalty for limbs
longer than half the image height, is positive; each limb type keeps the best-scoring candidates that
share no peak; skeletons grow limb by limb and merge when a limb joins two disjoint ones; a skeleton is
kept with at least 4 parts and a mean score of at least 0.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

PARTS = 18
# The 19 limbs (part a, part b) in the order they are assembled, and the two affinity-field channels
# (x, y) of each. The first 17 are drawn; the last two (shoulder-ear) only help to join heads.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
PAF_CHANNELS = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
    (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)  # fmt: skip
PEAK_THRESHOLD = 0.1
LIMB_THRESHOLD = 0.05
SAMPLES = 10
MIN_PARTS, MIN_MEAN_SCORE = 4, 0.4

Keypoint = tuple[float, float, float]  # x, y (pixels), heat-map score


@dataclass(frozen=True)
class Person:
    keypoints: tuple[Keypoint | None, ...]  # PARTS entries; None: not found
    score: float
    parts: int


def find_peaks(heat: np.ndarray) -> list[np.ndarray]:
    """Per part, its peaks as rows (x, y, score) in reading order (top to bottom, left to right)."""
    out = []
    for part in range(PARTS):
        raw = heat[:, :, part]
        s = gaussian_filter(raw, sigma=3)
        peak = s > PEAK_THRESHOLD
        peak[1:, :] &= s[1:, :] >= s[:-1, :]
        peak[:-1, :] &= s[:-1, :] >= s[1:, :]
        peak[:, 1:] &= s[:, 1:] >= s[:, :-1]
        peak[:, :-1] &= s[:, :-1] >= s[:, 1:]
        ys, xs = np.nonzero(peak)
        out.append(np.stack([xs, ys, raw[ys, xs]], axis=1).astype(np.float64))
    return out


def _limb_score(
    paf: np.ndarray, channels: tuple[int, int], a: np.ndarray, b: np.ndarray, h: int
) -> float | None:
    """The score of a limb from peak `a` to peak `b` (rows x, y, ...), or None if the field does not
    support it."""
    vec = b[:2] - a[:2]
    norm = max(0.001, float(np.hypot(*vec)))
    unit = vec / norm
    xs = np.round(np.linspace(a[0], b[0], SAMPLES)).astype(int)
    ys = np.round(np.linspace(a[1], b[1], SAMPLES)).astype(int)
    along = paf[ys, xs, channels[0]] * unit[0] + paf[ys, xs, channels[1]] * unit[1]
    score = float(along.mean()) + min(0.5 * h / norm - 1, 0.0)
    if np.count_nonzero(along > LIMB_THRESHOLD) > 0.8 * SAMPLES and score > 0:
        return score
    return None


def connect_limbs(peaks: list[np.ndarray], paf: np.ndarray) -> list[list[tuple[int, int, float]] | None]:
    """Per limb type, the chosen limbs as (peak index in part a, peak index in part b, score); None when
    one of its parts has no peak."""
    h = paf.shape[0]
    out: list[list[tuple[int, int, float]] | None] = []
    for (pa, pb), channels in zip(LIMBS, PAF_CHANNELS, strict=True):
        ca, cb = peaks[pa], peaks[pb]
        if not len(ca) or not len(cb):
            out.append(None)
            continue
        found = [
            (i, j, s)
            for i in range(len(ca))
            for j in range(len(cb))
            if (s := _limb_score(paf, channels, ca[i], cb[j], h)) is not None
        ]
        found.sort(key=lambda c: c[2], reverse=True)  # stable: ties keep their scan order
        chosen: list[tuple[int, int, float]] = []
        for i, j, s in found:
            if all(i != ci and j != cj for ci, cj, _ in chosen):
                chosen.append((i, j, s))
                if len(chosen) >= min(len(ca), len(cb)):
                    break
        out.append(chosen)
    return out


def assemble(peaks: list[np.ndarray], limbs: list[list[tuple[int, int, float]] | None]) -> list[Person]:
    """Skeletons from the chosen limbs (see the module's docstring), as Person records."""
    offsets = np.cumsum([0] + [len(p) for p in peaks])  # a peak's global id: offset of its part + index
    table = np.concatenate([p for p in peaks]) if offsets[-1] else np.zeros((0, 3))
    rows: list[np.ndarray] = []  # per skeleton: PARTS global peak ids (-1: none), total score, part count
    for k, chosen in enumerate(limbs):
        if chosen is None:
            continue
        pa, pb = LIMBS[k]
        for i, j, s in chosen:
            a, b = offsets[pa] + i, offsets[pb] + j
            hits = [r for r in rows if r[pa] == a or r[pb] == b][:2]
            if len(hits) == 2 and not np.any((hits[0][:PARTS] >= 0) & (hits[1][:PARTS] >= 0)):
                keep, gone = hits
                keep[:PARTS] = np.where(keep[:PARTS] >= 0, keep[:PARTS], gone[:PARTS])
                keep[PARTS:] += gone[PARTS:]
                keep[PARTS] += s
                rows = [r for r in rows if r is not gone]
            elif hits:
                r = hits[0]
                if len(hits) == 2 or r[pb] != b:
                    r[pb] = b
                    r[PARTS + 1] += 1
                    r[PARTS] += table[b, 2] + s
            elif k < 17:
                row = np.full(PARTS + 2, -1.0)
                row[pa], row[pb] = a, b
                row[PARTS], row[PARTS + 1] = table[a, 2] + table[b, 2] + s, 2
                rows.append(row)
    people = []
    for r in rows:
        score, parts = float(r[PARTS]), int(r[PARTS + 1])
        if parts < MIN_PARTS or score / parts < MIN_MEAN_SCORE:
            continue
        keypoints = tuple(
            (float(table[int(i), 0]), float(table[int(i), 1]), float(table[int(i), 2])) if i >= 0 else None
            for i in r[:PARTS]
        )
        people.append(Person(keypoints, score, parts))
    return people


def people(heat: np.ndarray, paf: np.ndarray) -> list[Person]:
    """The people in heat maps (H x W x 19) and affinity fields (H x W x 38) at the image's size."""
    peaks = find_peaks(heat)
    return assemble(peaks, connect_limbs(peaks, paf))
