"""The Extensions tab: what was loaded (name, version, status, errors, source), enable/disable, install
from a git URL and update.

Enable/disable is written to `<data dir>/extensions.json` (webui.plugins.state) and applies on restart;
the list says so for every extension whose next state differs from the running one. The requirements
an extension's manifest declares are listed with what is installed; "Install requirements" pip-installs
the missing ones into the app's Python (admins only, refused like git installs).
Installing and updating run git through webui.plugins.install, which refuses while others can reach the server
(--listen, a non-local --server-name, --share) unless the server was started with
--enable-insecure-extension-access; the refusal's message is shown as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from webui.plugins.requirements import requirements_text
from webui.ui.context import refusal
from webui.ui.extension_sections import host_of

HEADERS = ["Name", "Version", "Status", "Enabled", "Source", "Error / notes", "Folder", "Requirements"]
RESTART = "applied on restart"


@dataclass
class ExtensionsPanel:
    """The tab's actions over the services (no Gradio here, so they are testable directly)."""

    services: Any

    @property
    def host(self) -> Any | None:
        return host_of(self)

    @property
    def state(self) -> Any:
        from webui.plugins.state import STATE_FILE, ExtensionState

        return ExtensionState(self.services.config.data_dir / STATE_FILE)

    def _flags(self) -> tuple[bool, bool]:
        flags = getattr(self.services.options, "cmd_flags", {}) or {}
        return bool(flags.get("share")), bool(flags.get("enable_insecure_extension_access"))

    def install_refusal(self) -> str | None:
        """Why installing is refused in this configuration (None: allowed)."""
        from webui.plugins.install import InstallRefused, check_access

        share, insecure = self._flags()
        try:
            check_access(self.services.config, share=share, insecure_access=insecure)
        except InstallRefused as e:
            return str(e)
        return None

    def names(self) -> list[str]:
        host = self.host
        return [e.name for e in host.extensions()] if host is not None else []

    def rows(self) -> list[list[str]]:
        host = self.host
        if host is None:
            return []
        disabled = self.state.disabled()
        out = []
        for e in host.extensions():
            wanted = e.name not in disabled
            enabled = "yes" if e.enabled else "no"
            if wanted != e.enabled:
                enabled += f" → {'yes' if wanted else 'no'} ({RESTART})"
            problems = [p for p in (e.error, e.last_job_error) if p] + list(e.notes)
            needs = requirements_text(e.requirements)
            out.append(
                [e.name, e.version, e.status, enabled, e.source, "; ".join(problems), e.location, needs]
            )
        return out

    def set_enabled(self, name: str | None, enabled: bool) -> str:
        if not name or name not in self.names():
            return "Choose an extension first."
        self.state.set_enabled(name, enabled)
        return f"{name} will be {'enabled' if enabled else 'disabled'}: {RESTART}."

    def install(self, url: str, name: str = "") -> str:
        from webui.plugins.install import InstallError, InstallRefused, install_from_git

        share, insecure = self._flags()
        if not (url or "").strip():
            return "Give the git URL of the extension to install."
        try:
            folder = install_from_git(
                self.services.config,
                url,
                name=(name or "").strip() or None,
                share=share,
                insecure_access=insecure,
            )
        except (InstallRefused, InstallError) as e:
            return str(e)
        return f"Installed into {folder}: {RESTART}."

    def install_requirements(self, name: str | None, pip_args: tuple[str, ...] = ()) -> str:
        """pip-install what the extension's manifest requires and is missing (an admin's explicit act)."""
        from webui.plugins.install import InstallError, InstallRefused
        from webui.plugins.requirements import install_requirements

        host = self.host
        if host is None or not name or name not in self.names():
            return "Choose an extension first."
        ext = host.extension(name)
        share, insecure = self._flags()
        needs = ext.manifest.requirements if ext.manifest else ()
        try:
            return install_requirements(
                self.services.config, needs, share=share, insecure_access=insecure, pip_args=pip_args
            )
        except (InstallRefused, InstallError) as e:
            return str(e)

    def update(self, name: str | None) -> str:
        from webui.plugins.install import InstallError, InstallRefused, update

        host = self.host
        if host is None or not name or name not in self.names():
            return "Choose an extension first."
        share, insecure = self._flags()
        ext = host.extension(name)
        if ext.source != "user":
            return (
                f"{name} is a {ext.source} extension; only extensions installed from git can be updated here."
            )
        try:
            commit = update(self.services.config, Path(ext.location), share=share, insecure_access=insecure)
        except (InstallRefused, InstallError) as e:
            return str(e)
        return f"{name} is now at {commit[:10]}: {RESTART}."


def build_extensions(ctx: Any) -> dict[str, Any]:
    panel = ExtensionsPanel(ctx.services)
    f: dict[str, Any] = {}
    f["_table"] = gr.Dataframe(  # rows and names: read when the page opens
        [], headers=HEADERS, interactive=False, wrap=True, elem_id="extensions_table",
        datatype=["str"] * len(HEADERS),
    )  # fmt: skip
    with gr.Row(equal_height=True):
        f["_name"] = gr.Dropdown([], label="Extension", elem_id="extensions_name", scale=3, min_width=160)
        f["_enable"] = gr.Button("Enable", elem_id="extensions_enable", scale=1, min_width=90)
        f["_disable"] = gr.Button("Disable", elem_id="extensions_disable", scale=1, min_width=90)
        f["_update"] = gr.Button("Update from git", elem_id="extensions_update", scale=1, min_width=120)
        f["_requirements"] = gr.Button(
            "Install requirements", elem_id="extensions_requirements", scale=1, min_width=120
        )
    f["_message"] = gr.Textbox(label="Result", interactive=False, elem_id="extensions_message", lines=1)
    off = panel.install_refusal()
    with gr.Accordion("Install from a git URL", open=False, elem_id="extensions_install_box"):
        if off:
            gr.Textbox(off, label="Installing is off", interactive=False, elem_id="extensions_refusal")
        with gr.Row(equal_height=True):
            f["_url"] = gr.Textbox(label="Git URL", elem_id="extensions_url", scale=4, min_width=200)
            f["_folder"] = gr.Textbox(
                label="Folder name (optional)", elem_id="extensions_folder", min_width=140
            )
        f["_install"] = gr.Button("Install", elem_id="extensions_install", variant="primary")

    outputs = [f["_message"], f["_table"]]

    def after(message: str) -> tuple[str, Any]:
        return message, gr.update(value=panel.rows())

    quiet: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")
    ctx.page_load.add(
        lambda _request: [gr.update(value=panel.rows()), gr.update(choices=panel.names())],
        [f["_table"], f["_name"]],
    )

    def enable(request: gr.Request, name: str | None) -> tuple[str, Any]:
        return after(refusal(ctx.services, request, "Enabling an extension") or panel.set_enabled(name, True))

    def disable(request: gr.Request, name: str | None) -> tuple[str, Any]:
        refused = refusal(ctx.services, request, "Disabling an extension")
        return after(refused or panel.set_enabled(name, False))

    def update(request: gr.Request, name: str | None) -> tuple[str, Any]:
        return after(refusal(ctx.services, request, "Updating an extension") or panel.update(name))

    def requirements(request: gr.Request, name: str | None) -> tuple[str, Any]:
        refused = refusal(ctx.services, request, "Installing requirements")
        return after(refused or panel.install_requirements(name))

    def install(request: gr.Request, url: str, folder: str) -> tuple[str, Any]:
        return after(refusal(ctx.services, request, "Installing an extension") or panel.install(url, folder))

    f["_enable"].click(enable, f["_name"], outputs, **quiet)
    f["_disable"].click(disable, f["_name"], outputs, **quiet)
    f["_update"].click(update, f["_name"], outputs, **quiet)
    f["_requirements"].click(requirements, f["_name"], outputs, **quiet)
    f["_install"].click(install, [f["_url"], f["_folder"]], outputs, **quiet)
    return f
