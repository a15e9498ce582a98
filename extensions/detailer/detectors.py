"""What finds the regions to detail: OpenCV's bundled Haar cascades, and YOLOv8 `.onnx` files.

Built-in (nothing to download; the cascades ship inside opencv-python-headless):

    opencv_face           frontal faces       opencv_face_profile   faces in profile (either side)
    opencv_fullbody       whole people        opencv_upperbody      head and shoulders

A cascade has no probability; its confidence is the last stage's weight squashed into [0, 1)
(1 - exp(-w / 4)), so ADetailer's `ad_confidence` keeps working as a threshold.

User models: YOLOv8 detection (or segmentation: boxes only) exports in `models/adetailer/*.onnx`, run
by OpenCV's own ONNX importer (cv2.dnn), so no new dependency. ADetailer's `face_yolov8n.pt` files are
ultralytics pickles of whole Python objects: they are never unpickled. Export one once with
`yolo export model=face_yolov8n.pt format=onnx`; a request for `face_yolov8n.pt` then finds
`face_yolov8n.onnx` (same stem), so clients that send ADetailer's model names keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from . import yolo

MODEL_FOLDER = "adetailer"  # under the data folder's models/, as in A1111
INPUT_SIZE = 640  # ultralytics' default export size
IOU = 0.7  # ultralytics' default NMS overlap
PICKLE_SUFFIXES = (".pt", ".pth")


class DetectorError(ValueError):
    """A detector that cannot be found or loaded; the message names the model or file."""


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels (x2, y2 exclusive)
    confidence: float
    label: str

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


class Detector(Protocol):
    @property
    def name(self) -> str: ...

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]: ...


def _int_box(x1: float, y1: float, x2: float, y2: float) -> tuple[int, int, int, int]:
    return math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)


@dataclass(frozen=True)
class HaarDetector:
    name: str
    cascade_file: str
    label: str
    min_neighbors: int = 5
    mirrored: bool = False  # also run on the mirrored picture (the profile cascade sees one side only)

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / self.cascade_file))  # type: ignore[attr-defined]
        if cascade.empty():
            raise DetectorError(f"{self.name}: OpenCV's {self.cascade_file} could not be loaded")
        gray = cv2.equalizeHist(np.asarray(image.convert("L")))
        found = self._detect(cascade, gray, confidence)
        if self.mirrored:
            w = gray.shape[1]
            for d in self._detect(cascade, np.ascontiguousarray(gray[:, ::-1]), confidence):
                x1, y1, x2, y2 = d.box
                found.append(Detection((w - x2, y1, w - x1, y2), d.confidence, d.label))
            if len(found) > 1:
                xywh = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in found]
                keep = cv2.dnn.NMSBoxes(xywh, [d.confidence for d in found], confidence, 0.5)
                found = [found[i] for i in np.asarray(keep, dtype=np.int64).reshape(-1)]
        return sorted(found, key=lambda d: -d.confidence)

    def _detect(self, cascade: cv2.CascadeClassifier, gray: np.ndarray, confidence: float) -> list[Detection]:
        min_side = max(16, min(gray.shape) // 32)
        boxes, _levels, weights = cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        found = []
        rows = np.asarray(boxes).reshape(-1, 4)
        for (x, y, w, h), weight in zip(rows, np.asarray(weights).reshape(-1), strict=True):
            conf = 1.0 - math.exp(-max(float(weight), 0.0) / 4.0)
            if conf >= confidence:
                found.append(Detection((int(x), int(y), int(x + w), int(y + h)), conf, self.label))
        return found


BUILTIN: dict[str, HaarDetector] = {
    d.name: d
    for d in (
        HaarDetector("opencv_face", "haarcascade_frontalface_default.xml", "face"),
        HaarDetector("opencv_face_profile", "haarcascade_profileface.xml", "face", mirrored=True),
        HaarDetector("opencv_fullbody", "haarcascade_fullbody.xml", "person", min_neighbors=3),
        HaarDetector("opencv_upperbody", "haarcascade_upperbody.xml", "person", min_neighbors=3),
    )
}


@dataclass
class YoloOnnxDetector:
    """A YOLOv8 ONNX export, loaded on first use (one per file; not shared between threads)."""

    name: str
    path: Path
    input_size: int = INPUT_SIZE
    iou: float = IOU
    _net: cv2.dnn.Net | None = field(default=None, repr=False)

    def _load(self) -> cv2.dnn.Net:
        if self._net is None:
            try:
                self._net = cv2.dnn.readNetFromONNX(str(self.path))
            except cv2.error as e:
                msg = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
                raise DetectorError(f"{self.path.name} is not an ONNX model OpenCV can read ({msg})") from e
        return self._net

    def detect(self, image: Image.Image, confidence: float) -> list[Detection]:
        net = self._load()
        rgb = np.asarray(image.convert("RGB"))
        blob, placed = yolo.letterbox(rgb, self.input_size)
        names = list(net.getUnconnectedOutLayersNames())
        net.setInput(blob)
        try:
            outputs = net.forward(names)
        except cv2.error as e:
            raise DetectorError(
                f"{self.path.name} failed on a {self.input_size}x{self.input_size} input "
                "(export it at imgsz=640)"
            ) from e
        boxes_out = [o for o in outputs if o.ndim == 3]
        if not boxes_out:
            raise DetectorError(
                f"{self.path.name} has no (1, rows, candidates) output: not a YOLOv8 detector"
            )
        try:
            boxes, conf, classes = yolo.decode(
                boxes_out[0], confidence=confidence, iou=self.iou, segmentation=len(outputs) > 1
            )
        except ValueError as e:
            raise DetectorError(f"{self.path.name}: {e}") from e
        boxes = placed.to_image(boxes, image.width, image.height)
        stem = self.path.stem
        return [
            Detection(_int_box(*b), float(c), f"{stem}:{int(k)}")
            for b, c, k in zip(boxes, conf, classes, strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]


def model_files(folders: Iterable[Path]) -> dict[str, Path]:
    """{file name: path} of the detection models (.onnx) in `folders`, first folder first."""
    out: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix.lower() == ".onnx":
                    out.setdefault(p.name, p)
    return out


def detector_names(folders: Iterable[Path] = ()) -> list[str]:
    """The names a unit's `ad_model` may take ("None" aside): built-ins, then the folder's files."""
    return [*BUILTIN, *model_files(folders)]


def finder(folders: Iterable[Path] = ()) -> Callable[[str], Detector]:
    """`find_detector` over `folders` that loads each model file once (for a job or a session)."""
    folders = list(folders)
    loaded: dict[str, Detector] = {}

    def find(name: str) -> Detector:
        if name not in loaded:
            loaded[name] = find_detector(name, folders)
        return loaded[name]

    return find


def find_detector(name: str, folders: Iterable[Path] = ()) -> Detector:
    """The detector for `ad_model`: a built-in name, a file name in the folders, or another file name
    with the same stem (`face_yolov8n.pt` finds `face_yolov8n.onnx`)."""
    folders = list(folders)
    if name in BUILTIN:
        return BUILTIN[name]
    files = model_files(folders)
    stem = Path(name).stem
    path = files.get(name) or next((p for p in files.values() if p.stem == stem), None)
    if path is not None:
        return YoloOnnxDetector(name, path)
    pickles = [f / name for f in folders if (f / name).is_file() and (f / name).suffix in PICKLE_SUFFIXES]
    if pickles:
        raise DetectorError(
            f"{name} is an ultralytics pickle, which Sfumato does not load (it can run any code): "
            f"export it once with `yolo export model={name} format=onnx` and put {stem}.onnx in "
            f"models/{MODEL_FOLDER}"
        )
    raise DetectorError(
        f"unknown detection model {name!r}; available: {', '.join(detector_names(folders))} "
        f"(YOLOv8 .onnx files go in models/{MODEL_FOLDER})"
    )
