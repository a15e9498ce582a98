"""A bad field in a studio tab is reported with the label the user sees, and typed sizes snap to 8."""

from __future__ import annotations

import gradio as gr
import pytest

from webui.core.types import RequestError
from webui.ui.runner import build_request, error_text, field_label
from webui.ui.widgets import snap_to_step


def _fields() -> dict[str, object]:
    with gr.Blocks():
        return {
            "width": gr.Slider(64, 2048, step=8, label="Width"),
            "steps": gr.Slider(1, 150, step=1, label="Sampling steps"),
        }


def test_errors_use_the_labels_on_screen() -> None:
    fields = _fields()
    with pytest.raises(RequestError) as caught:
        build_request("txt2img", {"prompt": "x", "width": 100})
    assert caught.value.field == "width"
    assert error_text(caught.value, fields) == "Width: must be a multiple of 8, got 100"
    assert field_label(fields, "steps") == "Sampling steps"
    assert field_label(fields, "init_images[0]") == "Image"
    assert field_label(fields, "no_such_field") == "no_such_field"
    assert error_text(RuntimeError("queue is full"), fields) == "queue is full"


@pytest.mark.parametrize(
    ("value", "expected"), [(100, 104), (99, 96), (61, 64), (2047, 2048), (5000, 2048), (104, 104)]
)
def test_sizes_snap_to_multiples_of_8_within_the_slider(value: float, expected: int) -> None:
    assert snap_to_step(value, 64, 8, 2048) == expected
