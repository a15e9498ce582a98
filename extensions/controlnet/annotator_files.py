"""Reading an annotator's weights from models/ControlNet/annotators: the checks every network-backed
preprocessor (lineart.py, lineart_anime.py, openpose_net.py, depth_anything.py, midas.py) makes the
same way.

The files are pickles of plain state dicts; they are read only through the plugin API's safe loader
(`weights_only=True`). A "module." prefix (weights saved from a DataParallel wrapper) is dropped. Every
error names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from webui.plugins.api import CheckpointError, load_state_dict

M = TypeVar("M", bound=nn.Module)


class AnnotatorFileError(ValueError):
    """The annotator file cannot be read, or is not the network its preprocessor runs."""


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`, read safely, without a DataParallel "module." prefix;
    AnnotatorFileError naming the file if it cannot be read."""
    try:
        sd = load_state_dict(path)
    except CheckpointError as e:
        raise AnnotatorFileError(f"{path.name}: {e}") from e
    return {k.removeprefix("module."): v for k, v in sd.items()}


def misfit(path: Path, e: RuntimeError) -> AnnotatorFileError:
    """The error for torch's strict-load failure `e` (its first lines), naming the file."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return AnnotatorFileError(f"{path.name}: weights do not fit: {' '.join(lines[:2])[:400]}")


def read_weights(path: Path, marker: str, what: str, flat: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in `path`; AnnotatorFileError naming the file if it cannot be read safely or has no
    `marker` key (then it is not `what`). `flat`: the file's layers are named without the block that
    holds them (`conv1_1.weight`); a state dict saved from the blocks (`model0.conv1_1.weight`) loads too."""
    sd = read_state(path)
    if flat and marker not in sd and any(k.endswith(f".{marker}") for k in sd):
        sd = {k.split(".", 1)[1] if k.count(".") > 1 else k: v for k, v in sd.items()}
    if marker not in sd:
        raise AnnotatorFileError(f"{path.name}: not {what} (no {marker})")
    return sd


def load_strict(model: M, sd: dict[str, torch.Tensor], path: Path) -> M:
    """`model` with every key of `sd` loaded strictly (names and shapes), in eval mode without grads;
    AnnotatorFileError naming the file and the first keys that do not fit otherwise."""
    want = model.state_dict()
    problems = {
        "missing": [k for k in want if k not in sd],
        "unexpected": [k for k in sd if k not in want],
        "wrong shape": [
            f"{k} {tuple(sd[k].shape)} for {tuple(want[k].shape)}"
            for k in want
            if k in sd and sd[k].shape != want[k].shape
        ],
    }
    found = [f"{what} {', '.join(keys[:3])}" for what, keys in problems.items() if keys]
    if found:
        raise AnnotatorFileError(f"{path.name}: weights do not fit: {'; '.join(found)}")
    model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False)
