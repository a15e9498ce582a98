"""Extension sources and state: pip entry points, enabled/disabled persistence, git install and update."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_plugins_host import GOOD, write_extension
from webui.core.config import AppConfig
from webui.plugins.discovery import discover, entry_points
from webui.plugins.host import PluginHost
from webui.plugins.install import InstallError, InstallRefused, install_from_git, update
from webui.plugins.state import ExtensionState


def test_pip_entry_point_extension_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    pkg = write_extension(site, "sfumato_pipext", GOOD, name="pipext", entry="sfumato_pipext.hooks")
    (pkg / "__init__.py").write_text("")
    (pkg / "hooks.py").write_text((pkg / "sfumato_pipext.hooks.py").read_text())
    dist = site / "sfumato_pipext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sfumato-pipext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sfumato.extensions]\npipext = sfumato_pipext.hooks\n")
    monkeypatch.syspath_prepend(str(site))
    found = discover([], entry_points())
    assert [(f.name, f.source) for f in found] == [("pipext", "pip")]
    host = PluginHost.load(found, data_dir=tmp_path)
    assert [e.name for e in host.loaded] == ["pipext"]
    assert [s.title for _, s in host.ui_sections("txt2img")] == ["Good effect"]


def test_enabled_state_persists_and_applies_on_reload(tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tmp_path)
    write_extension(tmp_path / "extensions", "good", GOOD)
    empty = tmp_path / "no-builtins"
    host = PluginHost.for_config(config, builtin_dir=empty, include_pip=False)
    assert [e.name for e in host.loaded] == ["good"]
    ExtensionState(tmp_path / "extensions.json").set_enabled("good", False)
    assert json.loads((tmp_path / "extensions.json").read_text()) == {"disabled": ["good"]}
    assert [e.name for e in host.loaded] == ["good"], "applied on reload, not on the running host"
    assert host.reload().loaded == []
    ExtensionState(tmp_path / "extensions.json").set_enabled("good", True)
    assert [e.name for e in host.reload().loaded] == ["good"]
    (tmp_path / "extensions.json").write_text("{not json")
    assert ExtensionState(tmp_path / "extensions.json").disabled() == frozenset()
    assert (tmp_path / "extensions.json.corrupt").exists()


def _git(*args: str, cwd: Path | None = None) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    return subprocess.run(
        ["git", *env_args, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    work = write_extension(tmp_path / "src", "gitext", GOOD)
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    bare = tmp_path / "gitext.git"
    _git("clone", "-q", "--bare", str(work), str(bare))
    return bare


def test_install_refused_when_others_can_reach_the_server(tmp_path: Path, bare_repo: Path) -> None:
    for config, share in (
        (AppConfig.for_data_dir(tmp_path, listen=True), False),
        (AppConfig.for_data_dir(tmp_path, server_name="192.168.1.5"), False),
        (AppConfig.for_data_dir(tmp_path), True),
    ):
        with pytest.raises(InstallRefused, match="--enable-insecure-extension-access"):
            install_from_git(config, f"file://{bare_repo}", share=share)
    assert not (tmp_path / "extensions").exists()
    exposed = AppConfig.for_data_dir(tmp_path, listen=True)
    assert install_from_git(exposed, f"file://{bare_repo}", insecure_access=True).is_dir()


def test_install_and_update_from_a_local_git_repo(tmp_path: Path, bare_repo: Path) -> None:
    data = tmp_path / "data"
    config = AppConfig.for_data_dir(data, server_name="127.0.0.1")
    folder = install_from_git(config, f"file://{bare_repo}")
    assert folder == data / "extensions" / "gitext" and (folder / "extension.toml").is_file()
    assert [p.name for p in (data / "extensions").iterdir()] == ["gitext"], "no temporary folder left"
    host = PluginHost.for_config(config, builtin_dir=tmp_path / "none", include_pip=False)
    assert [(e.name, e.source) for e in host.loaded] == [("gitext", "user")]
    with pytest.raises(InstallError, match="already exists"):
        install_from_git(config, f"file://{bare_repo}")
    # a new commit upstream, then update
    work = tmp_path / "work"
    _git("clone", "-q", str(bare_repo), str(work))
    (work / "NEWS").write_text("two\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "two", cwd=work)
    _git("push", "-q", "origin", "HEAD", cwd=work)
    head = _git("rev-parse", "HEAD", cwd=work).strip()
    assert update(config, folder) == head
    assert (folder / "NEWS").read_text() == "two\n"


def test_install_rejects_non_extensions_and_bad_urls(tmp_path: Path) -> None:
    config = AppConfig.for_data_dir(tmp_path / "data")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README").write_text("x")
    _git("init", "-q", cwd=plain)
    _git("add", ".", cwd=plain)
    _git("commit", "-q", "-m", "x", cwd=plain)
    with pytest.raises(InstallError, match="not a Sfumato extension"):
        install_from_git(config, f"file://{plain}")
    assert list((tmp_path / "data" / "extensions").iterdir()) == []
    for url in ("--upload-pack=touch /tmp/x", "ext::sh -c touch% /tmp/x", "not a url"):
        with pytest.raises(InstallError, match="not a git URL"):
            install_from_git(config, url)


def test_git_urls_to_internal_hosts_are_refused_alike_whatever_listens(tmp_path: Path) -> None:
    """Issue 22 item 21: no clone from loopback/private/link-local hosts, and one answer for an open
    port and a closed one (only loopback is contacted here, and only by a server that refuses)."""
    import socket
    import threading

    from webui.plugins.install import is_public

    for address in ("127.0.0.1", "10.0.0.7", "172.16.3.4", "192.168.1.9", "169.254.7.7", "::1", "fe80::1",
                    "fc00::5", "0.0.0.0", "::ffff:10.0.0.1", "100.64.0.1"):  # fmt: skip
        assert not is_public(address), address
    assert is_public("8.8.8.8") and is_public("2606:4700::1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    open_port = listener.getsockname()[1]

    def answer_and_close() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=answer_and_close, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    config = AppConfig.for_data_dir(tmp_path / "data", server_name="127.0.0.1")
    said: dict[str, str] = {}
    try:
        for label, port in (("open", open_port), ("closed", closed_port)):
            for url in (f"http://127.0.0.1:{port}/x.git", f"http://localhost:{port}/x.git",
                        f"git://[::1]:{port}/x.git", f"ssh://git@127.0.0.1:{port}/x.git"):  # fmt: skip
                with pytest.raises(InstallError, match="local or private address") as e:
                    install_from_git(config, url)
                said[f"{label} {url.split(':')[0]} {url.split('/')[2].rsplit(':', 1)[0]}"] = str(e.value)
    finally:
        listener.close()
    for key, text in said.items():
        if key.startswith("open"):
            assert text == said["closed" + key[4:]], key  # the same words for an open and a closed port
    with pytest.raises(InstallError, match="local or private address"):
        install_from_git(config, "git@127.0.0.1:owner/x.git")
    assert not (tmp_path / "data" / "extensions").exists() or not any(
        (tmp_path / "data" / "extensions").iterdir()
    )
