"""`--compile`: the denoiser (UNet or transformer) through `torch.compile` with the inductor backend.

    compiler = DenoiserCompiler(config.cache_dir)            # one per engine (per worker)
    hook = compiler.hook(denoiser, "cpu", "none", freeze=True)  # one per job: a BEFORE_MODEL hook
    ... the loop calls the compiled denoiser wherever it would call the module itself ...
    hook.warnings                                              # ("--compile: ... ran uncompiled",) or ()

How it compiles, per device:
- CPU: inductor with `freezing` (the weights become constants of the compiled graph: faster kernels, and
  a compiled copy of the convolution weights in RAM). A job whose networks (LoRA) patch the weights gets
  a second compiled variant without freezing, which reads the weights as they are at each call.
- CUDA with whole models on the GPU (`--vram none`): `mode="reduce-overhead"`, i.e. CUDA graphs; the
  outputs are copied out of the graph's memory at each call so the next replay cannot overwrite them.
- CUDA with `--medvram`: inductor without CUDA graphs (the weights move between calls).
- `--lowvram`: not compiled (its blocks stream to the GPU one by one as they run); the job says so.

Shapes are static (`dynamic=False`): each new size or batch compiles once more (the first job at a size
pays the compile: about a minute for the tiny test model on a 2-core CPU, far more for a real one).
Compiled artefacts are written under `<data-dir>/cache/torch-compile/torch-<version>`, so a second start
finds them there (inductor's FX graph cache). That folder is given to inductor through the environment
variable TORCHINDUCTOR_CACHE_DIR, set when the first compile starts (never at import) and only when the
user has not set it: it is process-wide, so in one process the first engine to compile chooses it.

If compiling (or the compiled call) fails, that call runs eager and the job carries ONE warning saying
why; the denoiser is not compiled again by this engine, and later jobs on it carry the same warning.
Running out of memory is not such a failure: the job fails as it would uncompiled (with the worker's
advice) and the next job runs compiled.
Only the main denoiser of a job is compiled: a hires checkpoint, a refiner, or a model a hook put in
its place run eager. An engine keeps the compiled forms of its most recently used denoiser only, so a
model the model cache lets go is not held here for long.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.core.devices import is_out_of_memory
from webui.core.sampling.loop import HookPoint, ModelCallState

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

Backend = str | Callable[..., Any]


def compile_cache_dir(cache_dir: Path) -> Path:
    """Where compiled artefacts go: one folder per torch version (they are not portable across versions)."""
    return cache_dir / "torch-compile" / f"torch-{torch.__version__}"


def use_cache_dir(folder: Path) -> Path:
    """Point inductor's caches at `folder` unless the user chose a folder already; return the one in use."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    return folder


@dataclass(frozen=True)
class CompileMode:
    """How one denoiser is compiled on its device (None `mode`: torch.compile's default)."""

    mode: str | None
    options: dict[str, Any] | None
    cuda_graphs: bool


def compile_mode(device: torch.device, vram: str, freeze: bool) -> CompileMode | str:
    """The compile settings for a denoiser running on `device`, or the reason it is not compiled."""
    if vram == "lowvram":
        return "--lowvram streams the denoiser block by block, which a compiled graph cannot"
    if device.type == "cuda":
        if vram == "none":
            return CompileMode("reduce-overhead", None, cuda_graphs=True)
        return CompileMode(None, None, cuda_graphs=False)
    return CompileMode(None, {"freezing": True} if freeze else None, cuda_graphs=False)


def _reason(e: BaseException) -> str:
    """The root cause of a compile failure, in one line (dynamo wraps a backend's error in its own)."""
    inner = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    inner = getattr(e, "inner_exception", None) or inner
    lines = str(inner).strip().splitlines()
    text = f"{type(inner).__name__}: {lines[0][:300]}" if lines else type(inner).__name__
    return text if inner is e else f"{type(e).__name__}, {text}"


def _clone_tensors(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone_tensors(v) for v in value)
    return value


@dataclass
class _Entry:
    module: Any
    compiled: dict[bool, Callable[..., Any]] = field(default_factory=dict)  # freeze -> compiled module
    failed: str | None = None  # why compiling failed (then every call runs eager)


class DenoiserCompiler:
    """The compiled denoisers of one engine. `backend` is torch.compile's (tests pass a failing one)."""

    def __init__(self, cache_dir: Path, backend: Backend = "inductor") -> None:
        self.cache_dir = compile_cache_dir(cache_dir)
        self.backend = backend
        self._entry: _Entry | None = None  # the most recently used denoiser only
        self._lock = threading.Lock()

    def _entry_for(self, module: Any) -> _Entry:
        with self._lock:
            if self._entry is None or self._entry.module is not module:
                self._entry = _Entry(module)
            return self._entry

    def hook(self, denoiser: Any, device: str, vram: str, freeze: bool) -> CompileHook:
        """A BEFORE_MODEL hook for one job that puts the compiled `denoiser` (run on `device`, in VRAM
        mode `vram`) in its place. `freeze` is False when the job's networks may change the weights."""
        mode = compile_mode(torch.device(device), vram, freeze)
        return CompileHook(self, self._entry_for(denoiser), mode, freeze)

    def compiled(self, entry: _Entry, mode: CompileMode, freeze: bool) -> Callable[..., Any]:
        with self._lock:
            fn = entry.compiled.get(freeze)
            if fn is None:
                use_cache_dir(self.cache_dir)
                fn = torch.compile(
                    entry.module, backend=self.backend, mode=mode.mode, options=mode.options, dynamic=False
                )
                entry.compiled[freeze] = fn
            return fn


class CompileHook:
    """One job's BEFORE_MODEL hook (see the module doc); `warnings` is what the job should report."""

    def __init__(self, compiler: DenoiserCompiler, entry: _Entry, mode: CompileMode | str, freeze: bool):
        self.compiler = compiler
        self.entry = entry
        self.mode = mode
        self.freeze = freeze
        self.warnings: list[str] = []
        if isinstance(mode, str):
            self.warnings.append(f"--compile: the denoiser ran uncompiled: {mode}")
        elif entry.failed is not None:
            self._failed_note()

    def _failed_note(self) -> None:
        if not self.warnings:
            self.warnings.append(
                f"--compile: compiling the denoiser failed ({self.entry.failed}); it ran uncompiled (eager)"
            )

    def __call__(self, point: HookPoint, state: ModelCallState) -> None:
        if point is not HookPoint.BEFORE_MODEL or state.inputs.model is not self.entry.module:
            return
        if isinstance(self.mode, str) or self.entry.failed is not None:
            return
        state.inputs.model = _CompiledDenoiser(self, self.mode)

    def call(self, mode: CompileMode, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        module = self.entry.module
        if self.entry.failed is None:
            try:
                fn = self.compiler.compiled(self.entry, mode, self.freeze)
                if mode.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
                    return _clone_tensors(fn(*args, **kwargs))
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001  (any failure: the eager module decides below)
                if is_out_of_memory(e):
                    raise  # the job's failure, not the compiler's: the next job runs compiled again
                self.entry.failed = _reason(e)
                self.entry.compiled.clear()
        self._failed_note()
        return module(*args, **kwargs)


class _CompiledDenoiser:
    """Stands where the denoiser module stood for one call: calls go to the compiled form (or, after a
    failure, to the module), attribute reads (config, dtype...) to the module."""

    def __init__(self, hook: CompileHook, mode: CompileMode) -> None:
        self._hook = hook
        self._mode = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._hook.call(self._mode, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook.entry.module, name)
