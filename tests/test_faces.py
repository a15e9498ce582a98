"""Face restoration's pipeline on a real photo (skimage's astronaut): OpenCV finds the face and the eyes,
the crop is aligned to the FFHQ template, a real torch network runs on it, the result is pasted back
and only the face region changes. The networks here are small convolutions with random weights: the
pipeline is the same whatever network runs (GFPGAN files are tested in test_faces_gfpgan.py, CodeFormer
files in test_faces_codeformer.py, spandrel-built RestoreFormer files in test_faces_spandrel.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.faces import align, restorers
from webui.core.tasks import extras
from webui.core.types import RequestError

KNOWN_FACE = (177, 66, 272, 161)  # OpenCV 4's frontal cascade on the astronaut: x=177, y=66, 95x95


def conv_net(seed: int = 0) -> restorers.FaceNet:
    """A real network (3x3 convolution, random weights) as a FaceNet: [-1, 1] in and out, like GFPGAN."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1).eval()

    def run(face: np.ndarray, weight: float) -> np.ndarray:
        assert face.shape == (512, 512, 3) and face.dtype == np.uint8
        x = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.inference_mode():
            y = torch.tanh(conv(x) * (1 + weight))
        return ((y[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()

    return run


def test_the_face_and_both_eyes_are_found_and_the_eyes_land_on_the_template(astronaut: Image.Image) -> None:
    faces = align.detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert all(abs(a - b) <= 20 for a, b in zip(face.box, KNOWN_FACE, strict=True)), face.box
    assert face.aligned_by == "eyes" and face.eyes is not None
    left, right = face.eyes
    assert left[0] < right[0] and abs(left[1] - right[1]) < 10  # an upright face: eyes level
    mapped = np.array([face.affine @ [*p, 1.0] for p in face.eyes])
    assert np.allclose(mapped, align.FFHQ_TEMPLATE_512[:2], atol=1e-6)


def test_a_similarity_from_two_points_rotates_scales_and_shifts() -> None:
    src = np.array([[10.0, 10.0], [20.0, 10.0]])
    dst = np.array([[100.0, 100.0], [100.0, 120.0]])  # 90 degrees, x2
    m = align.similarity(src, dst)
    assert np.allclose(m[:, :2], [[0.0, -2.0], [2.0, 0.0]])
    assert np.allclose(m @ [15.0, 10.0, 1.0], [100.0, 110.0])


def test_without_eyes_the_box_is_centred_on_the_template() -> None:
    m = align.box_affine(100, 50, 100, 100)
    centre = m @ [150.0, 100.0, 1.0]
    assert np.allclose(centre, align.TEMPLATE_CENTRE)
    assert np.isclose(m[0, 0], align.BOX_WIDTH_512 / 100) and m[0, 1] == 0 and m[1, 0] == 0


def test_restoring_changes_the_face_and_nothing_far_from_it(astronaut: Image.Image) -> None:
    out = np.asarray(restorers.restore(astronaut, conv_net(), weight=0.5))
    src = np.asarray(astronaut)
    changed = np.any(out != src, axis=2)
    x1, y1, x2, y2 = KNOWN_FACE
    assert changed[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20].mean() > 0.9  # the face itself is redone
    # The crop's footprint around a 95 px face is about 2x its size: beyond that, byte-identical.
    margin = 110
    far = np.ones_like(changed)
    far[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = False
    assert not changed[far].any()
    assert changed.sum() < 0.2 * changed.size


def test_visibility_blends_with_the_original(astronaut: Image.Image) -> None:
    src = np.asarray(astronaut).astype(int)
    full = np.asarray(restorers.restore(astronaut, conv_net(), visibility=1.0)).astype(int)
    half = np.asarray(restorers.restore(astronaut, conv_net(), visibility=0.5)).astype(int)
    none = np.asarray(restorers.restore(astronaut, conv_net(), visibility=0.0))
    assert np.array_equal(none, src)
    assert np.abs(half - (src + full) / 2).max() <= 1
    assert np.abs(half - src).max() > 20


def test_a_picture_without_a_face_is_unchanged() -> None:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (160, 200, 3), dtype=np.uint8))
    assert align.detect_faces(noise) == []
    assert np.array_equal(np.asarray(restorers.restore(noise, conv_net())), np.asarray(noise))


def test_files_are_found_in_a1111s_folders(tmp_path: Path) -> None:
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "Codeformer").mkdir()
    for name in ("GFPGAN/GFPGANv1.4.pth", "GFPGAN/RestoreFormer.pth", "Codeformer/codeformer-v0.1.0.pth"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "GFPGAN" / "notes.txt").write_text("not a model")
    found = restorers.model_files(tmp_path)
    assert list(found) == ["CodeFormer", "GFPGAN", "RestoreFormer"]
    assert found["GFPGAN"].name == "GFPGANv1.4.pth" and found["RestoreFormer"].name == "RestoreFormer.pth"


def test_a_missing_restorer_is_an_error_naming_the_field_and_the_folder(tmp_path: Path) -> None:
    faces = restorers.FaceRestorers(tmp_path)
    with pytest.raises(RequestError) as e:
        faces.check("CodeFormer", "face_restoration_model")
    assert e.value.field == "face_restoration_model"
    assert str(tmp_path / "Codeformer") in e.value.message
    with pytest.raises(RequestError) as e:
        faces.check("Bogus", "face_restoration_model")
    assert "CodeFormer, GFPGAN, RestoreFormer" in e.value.message


def test_a_file_that_is_not_a_model_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / "GFPGANv1.4.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(restorers.FaceRestorerError, match="GFPGANv1.4.pth"):
        restorers.load_net(tmp_path / "GFPGAN" / "GFPGANv1.4.pth", "GFPGAN")


def test_without_spandrel_restoreformer_is_refused_saying_why(tmp_path: Path) -> None:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("spandrel imports here: test_faces_spandrel.py covers loading")
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / "RestoreFormer.pth").write_bytes(b"x")
    with pytest.raises(RequestError) as e:
        restorers.FaceRestorers(tmp_path).check("RestoreFormer", "face_restoration_model")
    assert e.value.field == "face_restoration_model" and "spandrel" in e.value.message
    assert "RestoreFormer.pth" in e.value.message


@pytest.mark.parametrize(
    ("kind", "file", "field"),
    [("CodeFormer", "Codeformer/codeformer-v0.1.0.pth", "codeformer_visibility"),
     ("GFPGAN", "GFPGAN/GFPGANv1.4.pth", "gfpgan_visibility")],
)  # fmt: skip
def test_without_spandrel_gfpgan_and_codeformer_files_are_read_for_what_they_are(
    tmp_path: Path, kind: str, file: str, field: str
) -> None:
    """Built here: a junk file is refused as the file it is, never for spandrel's absence."""
    (tmp_path / file).parent.mkdir()
    (tmp_path / file).write_bytes(b"x")
    faces = restorers.FaceRestorers(tmp_path, problem=lambda: "spandrel cannot be imported")
    with pytest.raises(RequestError) as e:
        faces.check(kind, field)
    assert e.value.field == field and "cannot be imported" not in e.value.message
    assert Path(file).name in e.value.message


def test_extras_restores_faces_after_the_upscale_and_records_it(
    astronaut: Image.Image, tmp_path: Path
) -> None:
    request = extras.ExtrasRequest.from_images(
        [astronaut], gfpgan_visibility=0.6, codeformer_visibility=1.0, codeformer_weight=0.25
    )
    used: list[tuple[str, str]] = []

    def find(kind: str, field: str) -> restorers.FaceNet:
        used.append((kind, field))
        return conv_net(seed=len(used))

    images, interrupted = extras.run(request, extras.builtin_upscalers(), tmp_path, faces=find)
    assert not interrupted and used[:2] == [
        ("GFPGAN", "gfpgan_visibility"),
        ("CodeFormer", "codeformer_visibility"),
    ]
    first = restorers.restore(astronaut, conv_net(seed=3), visibility=0.6)
    expected = restorers.restore(first, conv_net(seed=4), weight=0.25)
    assert np.array_equal(np.asarray(images[0].image), np.asarray(expected))
    assert extras.postprocess_text(request) == (
        "GFPGAN visibility: 0.6, CodeFormer visibility: 1, CodeFormer weight: 0.25"
    )
    saved = Image.open(images[0].path)
    assert saved.text[extras.POSTPROCESSING_KEY] == extras.postprocess_text(request)


def test_extras_face_fields_are_checked() -> None:
    im = Image.new("RGB", (8, 8))
    for field in ("gfpgan_visibility", "codeformer_visibility", "codeformer_weight"):
        with pytest.raises(RequestError) as e:
            extras.ExtrasRequest.from_images([im], **{field: 1.5}).validate()
        assert e.value.field == field
    with pytest.raises(RequestError) as e:  # asked for, with nothing to restore with
        extras.run(extras.ExtrasRequest.from_images([im], codeformer_visibility=1.0), {}, Path("."))
    assert e.value.field == "codeformer_visibility"
