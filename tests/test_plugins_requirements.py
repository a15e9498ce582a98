"""Manifest requirements: their state against this Python, and pip-installing the missing ones only when an
admin asks (refused while others can reach the server; URL requirements refused). pip really runs, offline,
on a wheel built here, into a --target folder (never into the app's venv)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.test_ui_extensions import _services
from webui.plugins.install import InstallError, InstallRefused
from webui.plugins.requirements import check_requirement, install_requirements, requirements_text
from webui.ui.extensions_tab import ExtensionsPanel

PKG = "sfumato-req-probe"


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of PKG 1.0 (what a package index would serve)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sfumato_req_probe-1.0-py3-none-any.whl"
    info = "sfumato_req_probe-1.0.dist-info"
    files = {
        "sfumato_req_probe/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return path


def test_requirement_states() -> None:
    assert check_requirement("packaging>=1")[0] and "installed" in check_requirement("packaging>=1")[1]
    assert check_requirement(f"{PKG}==1.0") == (False, f"{PKG}==1.0: missing")
    ok, text = check_requirement("packaging<1")
    assert not ok and "needs <1" in text
    assert check_requirement("not a requirement!!") == (False, "not a requirement!!: not a valid requirement")
    assert check_requirement('packaging; sys_platform == "nowhere"')[0]
    assert requirements_text(()) == ""


def test_missing_requirements_install_only_when_asked_and_allowed(tmp_path: Path) -> None:
    from tests.test_plugins_host import write_extension

    wheels, target = tmp_path / "wheels", tmp_path / "site"
    _wheel(wheels)
    write_extension(tmp_path / "extensions", "needy", "", api_version="2.0")
    manifest = tmp_path / "extensions" / "needy" / "extension.toml"
    manifest.write_text(manifest.read_text() + f'requirements = ["{PKG}==1.0", "packaging"]\n')
    panel = ExtensionsPanel(_services(tmp_path))
    assert not (target / "sfumato_req_probe").exists(), "listing the extension installed nothing"
    pip = ("--no-index", "--find-links", str(wheels), "--target", str(target))
    said = panel.install_requirements("needy", pip)
    assert said.startswith(f"installed {PKG}==1.0:") and "packaging" not in said, said
    assert (target / "sfumato_req_probe" / "__init__.py").read_text() == "VALUE = 42\n"
    assert panel.install_requirements("nobody") == "Choose an extension first."
    exposed = ExtensionsPanel(_services(tmp_path, listen=True))
    shutil.rmtree(target)
    assert "--enable-insecure-extension-access" in exposed.install_requirements("needy", pip)
    assert not target.exists()


def test_requirements_that_are_not_named_packages_are_refused(tmp_path: Path) -> None:
    config = _services(tmp_path).config
    with pytest.raises(InstallError, match="only named packages"):
        install_requirements(config, [f"{PKG} @ https://example.invalid/x.whl"])
    with pytest.raises(InstallError, match="not a valid requirement"):
        install_requirements(config, ["--index-url=http://127.0.0.1:9/"])
    with pytest.raises(InstallError, match="pip failed"):
        install_requirements(
            config, [f"{PKG}==9.9"], pip_args=("--no-index", "--target", str(tmp_path / "t"))
        )
    exposed = _services(tmp_path, listen=True).config
    with pytest.raises(InstallRefused):
        install_requirements(exposed, [f"{PKG}==1.0"])
