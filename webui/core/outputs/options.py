"""How and where a job's finished images are written: A1111's "Saving images/grids" and "Paths for
saving" settings, read once per job (`OutputOptions.from_settings`) and passed to the engine with it.

Folders: every image kind has its own folder (`outdir_txt2img_samples`, ...); `outdir_samples` /
`outdir_grids`, when set, take every image / grid instead, as in A1111. Settings name folders as
`outputs/<folders>` relative to the data folder (their defaults do), and they are placed under the
server's outputs folder, the only place images are served from. A date folder is added below, as
before: `outputs/txt2img-images/2026-12-04/00001-123.png`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from webui.core.outputs.saving import save_image

KINDS = ("txt2img", "img2img")
BEFORE_FACE_RESTORATION = "-before-face-restoration"  # A1111's file name suffix for the copy
DEFAULT_FOLDERS: Mapping[str, str] = {
    "txt2img-images": "txt2img-images",
    "img2img-images": "img2img-images",
    "txt2img-grids": "txt2img-grids",
    "img2img-grids": "img2img-grids",
}


@dataclass(frozen=True)
class OutputOptions:
    """What the saving settings say, for one job (the defaults are A1111's)."""

    outputs_dir: Path
    samples_save: bool = True  # "Always save all generated images"
    samples_format: str = "png"
    grid_save: bool = True  # "Always save all generated image grids"
    grid_format: str = "png"
    jpeg_quality: int = 80  # JPEG and WebP
    enable_pnginfo: bool = True  # infotext embedded in the files
    add_number: bool = True  # NNNNN-SEED names (else SEED)
    # "Save a copy of image before doing face restoration." (named NNNNN-SEED-before-face-restoration)
    save_before_face_restoration: bool = False
    folders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> parts under outputs_dir
    # a remote worker's: where copies made before face restoration go instead of this disk (image, seed,
    # infotext); the worker sends them to the server, which writes them as its settings say
    send_copy: Callable[[Image.Image, int, str], object] | None = field(default=None, compare=False)

    def copies_before_restoration(self, save_images: bool) -> bool:
        """Whether a job that saves (`save_images`) keeps a copy of each picture before face restoration."""
        return (
            save_images
            and self.save_before_face_restoration
            and (self.samples_save or self.send_copy is not None)
        )

    @classmethod
    def from_settings(cls, get: Callable[[str], Any], outputs_dir: Path) -> OutputOptions:
        """The options the settings store holds now (`get(key)` as SettingsStore.get)."""
        from webui.core.settings import output_folder_parts

        def folder(own: str, shared: str) -> tuple[str, ...]:
            return output_folder_parts(str(get(shared) or "")) or output_folder_parts(str(get(own) or ""))

        return cls(
            outputs_dir=Path(outputs_dir),
            samples_save=bool(get("samples_save")),
            samples_format=str(get("samples_format")),
            grid_save=bool(get("grid_save")),
            grid_format=str(get("grid_format")),
            jpeg_quality=int(get("jpeg_quality")),
            enable_pnginfo=bool(get("enable_pnginfo")),
            add_number=bool(get("save_images_add_number")),
            save_before_face_restoration=bool(get("save_images_before_face_restoration")),
            folders={f"{k}-images": folder(f"outdir_{k}_samples", "outdir_samples") for k in KINDS}
            | {f"{k}-grids": folder(f"outdir_{k}_grids", "outdir_grids") for k in KINDS},
        )

    def folder(self, kind: str, day: datetime.date) -> Path:
        """Where images of `kind` ("txt2img-images", "img2img-grids", ...) made on `day` go."""
        parts = self.folders.get(kind) or (DEFAULT_FOLDERS[kind],)
        return self.outputs_dir.joinpath(*parts, day.isoformat())

    def save(
        self,
        image: Image.Image,
        kind: str,
        seed: int | None,
        infotext: str,
        *,
        grid: bool = False,
        suffix: str = "",
    ) -> Path:
        """Write one image (a grid with `grid`) as these options say, `suffix` after its name (A1111's
        "-before-face-restoration"); returns its path."""
        return save_image(
            image,
            self.folder(kind, datetime.date.today()),
            seed,
            infotext if self.enable_pnginfo else "",
            self.grid_format if grid else self.samples_format,
            quality=self.jpeg_quality,
            numbered=self.add_number,
            suffix=suffix,
        )
