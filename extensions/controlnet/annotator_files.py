"""Reading an annotator's weights from models/ControlNet/annotators: the checks every network-backed
preprocessor (lineart.py, lineart_anime.py, openpose_net.py, depth_anything.py, midas.py) makes the
same way.

The files are pickles of plain state dicts; they are read only through the plugin API's safe loader
(`weights_only=True`). A "module." prefix (weights saved from a DataParallel wrapper) is dropped. Every
error names the file.

`Nets` says where a preprocessor's networks come from and run. Given the extension's `ExtensionModels`
(`context.models`), each network is built once per file version (a file replaced on disk, its size or
modification time changed, is read again) and device, and kept in that models' cache, the one the
extension's ControlNets share (one byte budget, least recently used out first, pinned while it runs).
Without it, each call reads its file and runs on the CPU, as a plain function call would. The networks
run where `run_device` says: the job's device (the generation's), else the extension models' (the
host's), else the CPU; in fp32 (annotators are small beside the UNet, and their code assumes fp32). On
a --medvram / --lowvram worker's device the cache keeps them in RAM and they move to the GPU as they run
(ExtensionModels' offloading); their inputs are put on the run device, their outputs back on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from webui.plugins.api import CheckpointError, RequestError, load_state_dict

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
    return unwrapped(sd)


def unwrapped(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sd` without a DataParallel "module." prefix."""
    return {k.removeprefix("module."): v for k, v in sd.items()}


def misfit(path: Path, e: RuntimeError) -> AnnotatorFileError:
    """The error for torch's strict-load failure `e` (its first lines), naming the file."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return AnnotatorFileError(f"{path.name}: weights do not fit: {' '.join(lines[:2])[:400]}")


def checked(
    sd: dict[str, torch.Tensor], path: Path, marker: str, what: str, flat: bool = False
) -> dict[str, torch.Tensor]:
    """`sd` (read from `path` by read_state or the model cache); AnnotatorFileError naming the file if it
    has no `marker` key (then it is not `what`). `flat`: the file's layers are named without the block
    that holds them (`conv1_1.weight`); a state dict saved from the blocks (`model0.conv1_1.weight`)
    loads too."""
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


def run_device(job_device: Any = None, models: Any = None) -> torch.device:
    """Where annotator networks run: the job's device when there is a job (the generation's), else the
    device of the extension's models (the host's: /controlnet/detect, the Preview button), else the CPU."""
    if job_device is not None:
        return torch.device(job_device)
    if models is not None:
        return torch.device(models.device)
    return torch.device("cpu")


@dataclass(frozen=True)
class Nets:
    """Where a preprocessor's networks come from (`models`: the extension's ExtensionModels, None: read
    for each call) and run (`device`: the job's; None: run_device's choice without a job)."""

    models: Any = None
    device: Any = None

    @property
    def run_device(self) -> torch.device:
        return run_device(self.device, self.models)

    @contextmanager
    def use(self, path: Path, build: Callable[[dict[str, torch.Tensor]], M]) -> Iterator[M]:
        """The network in `path` made by `build(state dict)` (strict, eval mode), on the run device (in
        RAM until it runs on an offloading worker's device); AnnotatorFileError naming the file if it
        cannot be read or is not that network."""
        if self.models is None:
            yield build(read_state(path)).to(self.run_device)
            return
        root = Path(self.models.models_dir)
        name = path.relative_to(root) if path.is_relative_to(root) else path  # outside: refused there
        with ExitStack() as stack:
            try:
                net = stack.enter_context(
                    self.models.use(name, lambda sd: build(unwrapped(sd)), device=self.run_device)
                )
            except CheckpointError as e:
                raise AnnotatorFileError(f"{path.name}: {e}") from e
            except RequestError as e:  # gone since it was checked, or outside the models folder
                raise AnnotatorFileError(f"{path.name}: {e.message}") from e
            yield net
