"""The styles editor under a tab's prompt: pick or type a style name, edit its prompt and negative prompt
(`{prompt}` stands for the prompt it is applied to), copy them from the prompt boxes, apply them to the
prompt boxes, save (styles.csv is rewritten atomically, other rows and columns kept) or delete.

styles.csv is shared by everyone using the server, as in A1111: both style lists (this editor's and the
tab's Styles box) are read when the page opens, and again by ↻ or opening the editor. Messages are shown
as plain text.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.context import refusal


def _store(ctx: Any) -> Any:
    return ctx.services.engine.styles


def _names(ctx: Any) -> list[str]:
    try:
        return [s.name for s in _store(ctx).list()]
    except Exception:  # a damaged file: the editor reports it on save
        return []


def build_styles_editor(ctx: Any, tab: str, f: dict[str, Any]) -> None:
    """The accordion; `f` holds the tab's prompt, negative_prompt and styles components."""
    e: dict[str, Any] = {}
    with gr.Accordion("Styles editor", open=False, elem_id=f"{tab}_styles_editor") as e["accordion"]:
        e["name"] = gr.Dropdown(
            [], value=None, allow_custom_value=True, label="Style (pick one, or type a new name)",
            elem_id=f"{tab}_style_name",
        )  # fmt: skip
        with gr.Row():
            e["prompt"] = gr.Textbox(
                label="Style prompt ({prompt} stands for your prompt; else it is added after it)",
                lines=2, elem_id=f"{tab}_style_prompt",
            )  # fmt: skip
            e["negative"] = gr.Textbox(
                label="Style negative prompt", lines=2, elem_id=f"{tab}_style_negative"
            )
        with gr.Row():
            e["copy"] = gr.Button("Copy from prompt", size="sm", elem_id=f"{tab}_style_copy", min_width=100)
            e["apply"] = gr.Button("Apply to prompt", size="sm", elem_id=f"{tab}_style_apply", min_width=100)
            e["save"] = gr.Button(
                "Save style", size="sm", variant="primary", elem_id=f"{tab}_style_save", min_width=100
            )
            e["delete"] = gr.Button(
                "Delete style", size="sm", variant="stop", elem_id=f"{tab}_style_delete", min_width=100
            )
        with gr.Row(visible=False, elem_id=f"{tab}_style_confirm") as e["confirm_row"]:
            e["confirm_text"] = gr.Markdown("")
            e["confirm"] = gr.Button(
                "Delete it", size="sm", variant="stop", elem_id=f"{tab}_style_delete_confirm", min_width=100
            )
            e["cancel"] = gr.Button("Keep it", size="sm", elem_id=f"{tab}_style_delete_cancel", min_width=100)
        e["status"] = gr.Textbox(show_label=False, interactive=False, elem_id=f"{tab}_style_status", lines=1)
    _wire(ctx, f, e)
    ctx.style_pickers.append(f["styles"])
    ctx.style_changes.extend((e["_saved"], e["_deleted"]))

    def on_page_load(_request: Any) -> tuple[Any, Any]:  # styles.csv as it is now, in both lists
        names = _names(ctx)
        return gr.update(choices=names), gr.update(choices=names)

    ctx.page_load.add(on_page_load, [f["styles"], e["name"]])


def _wire(ctx: Any, f: dict[str, Any], e: dict[str, Any]) -> None:
    from webui.core.prompts.styles import Style, StylesFileError, apply_style_text
    from webui.core.types import RequestError

    quiet: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")

    def load(name: str | None) -> tuple[Any, Any]:
        style = next((s for s in _store(ctx).list() if s.name == name), None) if name else None
        if style is None:
            return gr.skip(), gr.skip()  # a new name: keep what is being typed
        return style.prompt, style.negative_prompt

    e["name"].change(load, e["name"], [e["prompt"], e["negative"]], **quiet)

    def names(current: Any) -> Any:  # styles.csv may have been edited by hand or in another tab
        return gr.update(choices=_names(ctx), value=current)

    e["accordion"].expand(names, e["name"], e["name"], **quiet)
    f["_styles_refresh"].click(names, e["name"], e["name"], **quiet)
    e["copy"].click(
        lambda p, n: (p or "", n or ""),
        [f["prompt"], f["negative_prompt"]],
        [e["prompt"], e["negative"]],
        **quiet,
    )

    def apply(style_prompt: str, style_negative: str, prompt: str, negative: str) -> tuple[str, str]:
        return apply_style_text(style_prompt or "", prompt or ""), apply_style_text(
            style_negative or "", negative or ""
        )

    boxes = [f["prompt"], f["negative_prompt"]]
    e["apply"].click(apply, [e["prompt"], e["negative"], *boxes], boxes, **quiet)

    def refreshed(selected: list[str] | None, name: Any) -> tuple[Any, Any]:
        names = _names(ctx)
        return (
            gr.update(choices=names, value=[s for s in selected or [] if s in names]),
            gr.update(choices=names, value=name),
        )

    def save(
        request: gr.Request, name: str | None, prompt: str, negative: str, selected: list[str] | None
    ) -> tuple[Any, ...]:
        name = (name or "").strip()
        refused = refusal(ctx.services, request, "Saving a style to styles.csv")
        if refused:
            return gr.skip(), gr.skip(), f"Not saved: {refused}"
        try:
            if not name:
                raise RequestError("name", "type a name for the style")
            _store(ctx).save(Style(name, prompt or "", negative or ""))
        except (RequestError, StylesFileError) as err:
            return gr.skip(), gr.skip(), f"Not saved: {err}"
        return (*refreshed(selected, name), f"Saved style {name!r} to {_store(ctx).path.name}")

    def delete(request: gr.Request, name: str | None, selected: list[str] | None) -> tuple[Any, ...]:
        refused = refusal(ctx.services, request, "Deleting a style from styles.csv")
        if refused:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Not deleted: {refused}"
        try:
            if not name:
                raise RequestError("name", "pick the style to delete")
            _store(ctx).delete(name)
        except (RequestError, StylesFileError) as err:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Not deleted: {err}"
        return (*refreshed(selected, None), "", "", f"Deleted style {name!r}")

    e["_saved"] = e["save"].click(
        save,
        [e["name"], e["prompt"], e["negative"], f["styles"]],
        [f["styles"], e["name"], e["status"]],
        **quiet,
    )

    def ask(name: str | None) -> tuple[Any, Any, Any]:  # styles.csv is shared: confirm first
        if not name:
            return gr.skip(), gr.skip(), "Not deleted: pick the style to delete"
        question = f"Delete the style **{name}** from styles.csv, for every user and tab?"
        return gr.update(visible=True), question, ""

    e["delete"].click(ask, e["name"], [e["confirm_row"], e["confirm_text"], e["status"]], **quiet)
    hide = lambda: gr.update(visible=False)  # noqa: E731
    e["cancel"].click(hide, None, e["confirm_row"], **quiet)
    e["_deleted"] = (
        e["confirm"]
        .click(hide, None, e["confirm_row"], **quiet)
        .then(
            delete,
            [e["name"], f["styles"]],
            [f["styles"], e["name"], e["prompt"], e["negative"], e["status"]],
            **quiet,
        )
    )


def wire_style_pickers(ctx: Any) -> None:
    """After a save or delete in any tab, every tab's Styles list shows styles.csv as it is now (the
    choices each had selected stay, unless their style is gone)."""
    pickers = list(ctx.style_pickers)

    def everywhere(*selected: list[str] | None) -> tuple[Any, ...]:
        names = _names(ctx)
        return tuple(gr.update(choices=names, value=[s for s in sel or [] if s in names]) for sel in selected)

    for change in ctx.style_changes:
        change.then(
            everywhere, pickers, pickers, concurrency_limit=None, show_progress="hidden",
            api_visibility="private",
        )  # fmt: skip
