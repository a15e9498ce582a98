"""The soft-edge preprocessors' finishes (edge_maps.py) on hand-made maps whose answer is known: the safe
step's three levels, non-maximum suppression keeping a ridge's centre line (and dropping a faint one),
and the scribble's bold binary strokes around it."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest

from tests.fixtures_controlnet import extension_modules


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    mods = extension_modules(tmp_path_factory.mktemp("edge-maps-ext"))
    return importlib.import_module(f"{mods.models.__package__}.edge_maps")


def ridge(peak: float, size: int = 48, centre: int = 20) -> np.ndarray:
    """A horizontal ridge along row `centre` (Gaussian profile, sigma 2), growing slowly to the right so
    that no pixel off the centre row is a maximum along any direction."""
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    return peak * np.exp(-((y - centre) ** 2) / 8.0) * (1.0 + x / (8.0 * size))


def test_safe_step_quantises_to_three_levels(em: SimpleNamespace) -> None:
    edge = np.array([[0.0, 0.2, 0.34, 0.5, 0.66, 0.7, 0.99, 1.0]], dtype=np.float32)
    assert em.safe_step(edge).tolist() == [[0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.5]]
    assert em.finish(edge, "safe").tolist() == [[0, 0, 127, 127, 127, 255, 255, 255]]
    assert em.finish(edge, "soft").tolist() == [[0, 51, 86, 127, 168, 178, 252, 255]]


def test_thin_keeps_the_centre_line_of_a_ridge(em: SimpleNamespace) -> None:
    out = em.thin(ridge(250.0), 127, 1.0)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
    inner = out[:, 2:-2]  # the last column is a maximum along the row (nothing beyond it)
    rows = np.nonzero(inner.any(axis=1))[0]
    assert rows.tolist() == [20] and inner[20].all()
    # the same ridge below the threshold leaves nothing
    assert not em.thin(ridge(120.0), 127, 1.0).any()
    # without suppression the blurred ridge is above the threshold over several rows
    assert (ridge(250.0)[:, 10] > 127).sum() >= 3


def test_scribble_draws_a_bold_binary_stroke_along_the_ridge(em: SimpleNamespace) -> None:
    soft = ridge(250.0).clip(0, 255).astype(np.uint8)
    out = em.scribble(soft)
    assert set(np.unique(out)) == {0, 255}
    column = out[:, 24]
    white = np.nonzero(column)[0]
    assert 20 in white and white.min() >= 12 and white.max() <= 28  # a few pixels either side
    assert np.array_equal(white, np.arange(white.min(), white.max() + 1))  # one solid stroke
    assert em.finish(soft.astype(np.float32) / 255.0, "scribble").tolist() == out.tolist()
    assert not em.scribble(np.full((32, 32), 100, np.uint8)).any()  # a flat, faint map: no stroke


def test_an_unknown_finish_is_refused(em: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="unknown finish 'bold'"):
        em.finish(np.zeros((2, 2), np.float32), "bold")
