"""img2img / inpaint sizes from the picture: snapped to 8, fitted to the sliders, "Resize by" a scale."""

from __future__ import annotations

from PIL import Image

from webui.ui.img2img_size import fitted_size, picture_size, requested_size, scaled_size


def test_picture_sizes_for_img2img() -> None:
    assert fitted_size((320, 256)) == (320, 256)
    assert fitted_size((4096, 1024)) == (2048, 512)
    assert fitted_size((333, 250)) == (336, 248)
    assert scaled_size((320, 256), 0.5) == (160, 128)
    picture = Image.new("RGB", (320, 256))
    resize_by = {"_size_mode": "Resize by", "_scale_by": 2}
    assert requested_size(resize_by, picture) == {"width": 640, "height": 512}
    assert requested_size({"_size_mode": "Resize to", "_scale_by": 2}, picture) == {}


def test_picture_size_reads_an_editor_value() -> None:
    import numpy as np

    assert picture_size({"background": np.zeros((256, 320, 4), "uint8"), "layers": []}) == (320, 256)
    assert picture_size({"background": None}) is None
