"""The plugin API's surface: its exported names are pinned, its version is 2.0 with 1.0 extensions still
loading, and the shipped extensions import nothing from `webui` but `webui.plugins.api`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import webui.plugins.api as api
from tests.test_plugins_host import load_host, write_extension
from webui.plugins.host import BUILTIN_DIR
from webui.plugins.manifest import ManifestError, check_api_version

# Changing this list changes the public API: add names in a minor version, remove them only in a major
# one (and say so in README's plugin API section).
EXPORTED = [
    "API_VERSION",
    "AppConfig",
    "CheckpointError",
    "ExtensionContext",
    "ExtensionModels",
    "Field",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "Hook",
    "HookPoint",
    "ImageInfo",
    "Img2ImgRequest",
    "JobModel",
    "ModelCallState",
    "ModelInputs",
    "Registry",
    "RequestError",
    "RouteSpec",
    "Runner",
    "SamplerSpec",
    "ScriptSpec",
    "SettingsSection",
    "StepState",
    "SubPass",
    "Txt2ImgRequest",
    "UiSection",
    "UnknownSampler",
    "UpscalerSpec",
    "format_infotext",
    "hookimpl",
    "image_folder",
    "image_grid",
    "img2img_work_image",
    "labelled_grid",
    "load_state_dict",
    "make_builtin_scheduler",
    "parse_infotext",
    "read_infotext",
    "replace_args",
    "resolve_sampler",
    "resolve_seed",
    "save_image",
    "side_by_side",
]

# what API 1.0 exported: every name must still be there for 1.0 extensions to load unchanged
API_2_0 = {"ExtensionModels", "JobModel", "ModelCallState", "ModelInputs", "SubPass"}
API_2_2 = {"img2img_work_image"}
API_1_0 = set(EXPORTED) - API_2_0 - API_2_2 - {"labelled_grid", "side_by_side"}


def test_exported_names_are_pinned() -> None:
    assert sorted(api.__all__) == EXPORTED
    public = sorted(n for n in vars(api) if not n.startswith("_") and n != "annotations")
    assert public == EXPORTED, "webui.plugins.api exposes a name that is not in __all__"
    assert all(getattr(api, n) is not None for n in EXPORTED)
    assert api.API_VERSION == (2, 4)
    assert set(api.__all__) >= API_1_0


def test_api_1_extensions_still_load_and_run_their_hooks(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    code = (
        "from webui.plugins.api import Field, UiSection, hookimpl\n"
        "@hookimpl\ndef register(registry):\n"
        "    registry.add(UiSection('txt2img', 'Old', fields=(Field('on', 'checkbox', True),)))\n"
        "@hookimpl\ndef extra_infotext(args, context):\n"
        "    return {context.name: 'yes' if args['on'] else 'no'}\n"
    )
    write_extension(root, "old", code, api_version="1.0")
    write_extension(root, "old_major_only", code, api_version="1")
    write_extension(root, "new", code, api_version="2.0")
    host = load_host(root)
    assert {i.name: i.status for i in host.extensions()} == {
        "new": "loaded",
        "old": "loaded",
        "old_major_only": "loaded",
    }
    from webui.core.types import Txt2ImgRequest

    request = host.request_received(Txt2ImgRequest(extension_args={"old": {"on": False}}))
    assert host.extra_infotext(request) == {"new": "yes", "old": "no", "old_major_only": "yes"}


@pytest.mark.parametrize(
    ("wanted", "words"),
    [
        ("1.1", "never existed"),
        ("2.5", "update Sfumato"),
        ("3.0", "provides API 2.4"),
        ("0.9", "provides API 2.4"),
        ("two", "must look like"),
    ],
)
def test_api_versions_that_cannot_load_say_why(wanted: str, words: str) -> None:
    with pytest.raises(ManifestError) as e:
        check_api_version("x", wanted)
    assert words in str(e.value)


def _module_name(value: object) -> bool:
    return isinstance(value, str) and value.startswith("webui.") and " " not in value


def _webui_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if node.module == "webui"]
        elif isinstance(node, ast.Constant) and _module_name(node.value):  # import_module("webui.x")
            found.append(node.value)
    return [m for m in found if m == "webui" or m.startswith("webui.")]


def test_shipped_extensions_import_only_the_plugin_api() -> None:
    files = sorted(BUILTIN_DIR.rglob("*.py"))
    assert len({p.relative_to(BUILTIN_DIR).parts[0] for p in files}) >= 3  # upscalers, wildcards, xyz_plot
    offenders = {
        str(p.relative_to(BUILTIN_DIR)): bad
        for p in files
        if (bad := [m for m in _webui_imports(p) if m != "webui.plugins.api"])
    }
    assert offenders == {}


def test_the_import_check_catches_a_core_import(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from webui.plugins.api import hookimpl\nimport webui.core.engine\nfrom webui import server\n"
        "import importlib\nimportlib.import_module('webui.core.types')\n",
        encoding="utf-8",
    )
    assert _webui_imports(sneaky) == [
        "webui.plugins.api",
        "webui.core.engine",
        "webui",
        "webui.server",
        "webui.core.types",
    ]
