"""Models an extension loads itself (ControlNets, adapters, annotators), from its own folder under models/.

    with context.models.use("ControlNet/canny.safetensors", build, device=components.device,
                            dtype=components.dtype) as controlnet:
        ...                         # pinned while the block runs; cached (byte-budget LRU) across jobs

`build(state_dict)` turns the file's tensors (read on the CPU: safetensors, or a pickle through
`torch.load(weights_only=True)`, as checkpoints are) into a torch module; it is then moved to the device
and dtype asked for, put in eval mode without gradients, and kept in the host's extension-model cache,
the engine's `ModelCache` (least recently used first out past its byte budget, never while pinned). A
file that changes on disk (size or modification time) is loaded again. Paths are relative to the
models folder and may not leave it. `loads` counts the files read (by their name as asked), so a caller
or a test can see a cache hit read nothing.

On a device whose job worker offloads (--medvram, --lowvram: webui.core.models.offload), the model
waits in RAM and joins that worker's denoiser group: it moves to the device with the UNet (medvram),
or block by block as it runs (lowvram), and leaves it before the VAE decodes.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from webui.core.models.cache import ModelCache
from webui.core.types import RequestError

MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_BUDGET = 4 * 2**30


class ExtensionModels:
    def __init__(self, models_dir: Path, cache: ModelCache[Any], device: str = "cpu") -> None:
        self.models_dir = Path(models_dir)
        self.cache = cache
        self.device = device
        self._offloaders: dict[str, Any] = {}  # str(torch.device) -> that device's worker's Offloader
        self.loads: Counter[str] = Counter()  # file name as asked -> times it was read (cache misses)
        self._count_lock = threading.Lock()

    def offload_on(self, device: Any, offloader: Any) -> None:
        """Models asked for on `device` are kept in RAM and moved there by `offloader` as they run."""
        import torch

        self._offloaders[str(torch.device(device))] = offloader

    def path(self, relative: str | Path) -> Path:
        """The file or folder `relative` names inside the models folder; RequestError if the name leaves
        it (`..`, an absolute path). Links the user made inside it are followed, as A1111 users link
        model folders and files kept on another disk."""
        root = Path(os.path.abspath(self.models_dir))
        target = Path(os.path.normpath(root / relative))
        if not target.is_relative_to(root):
            raise RequestError("model", f"{relative}: must be inside the models folder")
        return target

    def files(self, folder: str, suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> list[Path]:
        """The model files in models/<folder> and below, sorted (none when the folder does not exist)."""
        base = self.path(folder)
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)

    @contextmanager
    def use(
        self,
        relative: str | Path,
        build: Callable[[dict[str, Any]], Any],
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> Iterator[Any]:
        """The model in models/<relative>, built by `build(state_dict)` on a cache miss, on `device`
        (default: the host's) in `dtype` (default: as built); pinned for the block."""
        import torch

        from webui.core.models.checkpoint_file import load_state_dict

        path = self.path(relative)
        if not path.is_file():
            raise RequestError("model", f"{relative}: no such file in {self.models_dir}")
        stat = path.stat()
        where = torch.device(device if device is not None else self.device)
        key = ("extension-model", str(path), stat.st_size, stat.st_mtime_ns, str(where), str(dtype))

        offloader = self._offloaders.get(str(where))

        def load() -> tuple[Any, int]:
            with self._count_lock:
                self.loads[str(relative)] += 1
            module = build(load_state_dict(path))
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"build() returned a {type(module).__name__}, not a torch module")
            place = torch.device(offloader.storage_device) if offloader is not None else where
            module = module.to(device=place, dtype=dtype) if dtype is not None else module.to(place)
            module.eval().requires_grad_(False)
            if offloader is not None:
                offloader.attach(str(relative), module, "denoiser")
            tensors = [*module.parameters(), *module.buffers()]
            return module, sum(t.numel() * t.element_size() for t in tensors)

        with self.cache.use(key, load) as module:
            yield module
