"""Loading one discovered extension: API check, import, pluggy registration, its `register` hook.

Every step can fail without affecting the others: the result is an `Extension` record whose `status`
says how far it got ("loaded", "disabled", "invalid", "incompatible", "failed") and whose `error`
says why, with a traceback summary for code that raised.

A folder extension is imported as the package `sfumato_extensions.<name>` whose path is its folder,
so its modules may import each other relatively (`from . import helpers`) without touching sys.path.
Loading an extension again (reload, update) imports it afresh.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from webui.plugins.descriptors import ExtensionContext, Registry, UpscalerSpec
from webui.plugins.discovery import Found
from webui.plugins.manifest import Manifest, ManifestError, check_api_version

log = logging.getLogger("sfumato.plugins")
PACKAGE_ROOT = "sfumato_extensions"
HOOK_NAMES = (
    "register",
    "from_alwayson",
    "infotext_fields",
    "request_received",
    "on_step",
    "before_model",
    "after_decode",
    "extra_infotext",
    "after_save",
)


@dataclass
class Extension:
    name: str
    location: str
    source: str
    manifest: Manifest | None
    status: str
    error: str | None = None
    module: ModuleType | None = None
    registry: Registry | None = None
    context: ExtensionContext | None = None
    hooks: dict[str, Any] = field(default_factory=dict)  # hook name -> pluggy HookImpl

    @property
    def loaded(self) -> bool:
        return self.status == "loaded"


def summarize(exc: BaseException, folder: Path | None = None) -> str:
    """`Type: message (at file:line in function)`, the frame chosen inside `folder` when possible."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if folder is not None and Path(f.filename).is_relative_to(folder)]
    text = f"{type(exc).__name__}: {exc}".strip()
    if not (inside or frames):
        return text
    frame = (inside or frames)[-1]
    return f"{text} (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def _package_for(manifest: Manifest) -> str:
    """A fresh synthetic package whose __path__ is the extension folder; stale modules are dropped."""
    assert manifest.folder is not None
    if PACKAGE_ROOT not in sys.modules:
        root_spec = importlib.machinery.ModuleSpec(PACKAGE_ROOT, None, is_package=True)
        root_spec.submodule_search_locations = []
        sys.modules[PACKAGE_ROOT] = importlib.util.module_from_spec(root_spec)
    name = f"{PACKAGE_ROOT}.{manifest.module_key}"
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(manifest.folder)]
    sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def import_entry(manifest: Manifest) -> ModuleType:
    if manifest.source == "pip":
        return importlib.import_module(manifest.entry)
    package = _package_for(manifest)
    importlib.invalidate_caches()
    return importlib.import_module(f"{package}.{manifest.entry}")


def load_extension(
    found: Found,
    pm: pluggy.PluginManager,
    disabled: frozenset[str],
    context_for: Callable[[Manifest], ExtensionContext],
    stored_settings: Mapping[str, Any] | None = None,
) -> Extension:
    """Load one extension; its `register` hook gets the settings stored under `<name>.` (raw)."""
    m = found.manifest
    if m is None:
        return Extension(found.name, found.location, found.source, None, "invalid", found.problem)
    ext = Extension(m.name, found.location, found.source, m, "loaded")
    if found.problem:
        ext.status, ext.error = "invalid", found.problem
        return ext
    if m.name in disabled:
        ext.status = "disabled"
        return ext
    try:
        check_api_version(m.name, m.api_version)
    except ManifestError as e:
        ext.status, ext.error = "incompatible", str(e)
        return ext
    stage = "import"
    try:
        ext.module = import_entry(m)
        stage = "hook registration"
        pm.register(ext.module, name=m.name)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError:
            pm.unregister(name=m.name)
            raise
        for hook in HOOK_NAMES:
            for impl in getattr(pm.hook, hook).get_hookimpls():
                if impl.plugin_name == m.name:
                    ext.hooks[hook] = impl
        stage = "register"
        ext.context = context_for(m)
        ext.registry = registered(ext, stored_settings)
    except (Exception, SystemExit) as e:  # an extension calling sys.exit() must not stop the app
        if pm.get_plugin(m.name) is not None:
            pm.unregister(name=m.name)
        ext.status = "failed"
        ext.error = f"failed during {stage}: {summarize(e, m.folder)}"
        ext.hooks = {}
        log.error("extension %s %s", m.name, ext.error, exc_info=e)
    return ext


def registered(ext: Extension, stored_settings: Mapping[str, Any] | None) -> Registry:
    """A fresh Registry filled by the extension's `register` hook (with its context and its own keys of
    `stored_settings`); what the hook raises propagates."""
    assert ext.manifest is not None
    registry = Registry(ext.manifest.name)
    impl = ext.hooks.get("register")
    if impl is not None:
        prefix = f"{ext.manifest.name}."
        settings = {k[len(prefix) :]: v for k, v in (stored_settings or {}).items() if k.startswith(prefix)}
        kwargs = {"registry": registry, "context": ext.context, "settings": settings}
        impl.function(*[kwargs[a] for a in impl.argnames])
    return registry


def take_new_upscalers(ext: Extension, stored_settings: Mapping[str, Any] | None) -> None:
    """Run the extension's `register` again and take the upscalers it registers now in place of its
    old ones (one with the same name and file keeps its object, and the network it loaded); its other
    descriptors stay. What the hook raises propagates, the old list kept."""
    if ext.registry is None:
        return
    fresh = registered(ext, stored_settings)
    old = {(d.name, d.path): d for d in ext.registry.items if isinstance(d, UpscalerSpec)}
    found = [old.get((d.name, d.path), d) for d in fresh.items if isinstance(d, UpscalerSpec)]
    kept = [d for d in ext.registry.items if not isinstance(d, UpscalerSpec)]
    ext.registry.items = [*kept, *found]  # one assignment: readers see the old list or the new one
