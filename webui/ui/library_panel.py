"""The model library in the Models tab: a card grid of every model file (webui.core.library) with search,
kind and base filters; a click on a card opens its notes (the A1111 sidecar `name.json`) in an editor
below, with Save and "Fetch info" (Civitai, by hash). Saving and fetching change files every user
shares, so with logins only admins may do them (webui.api.roles, the same check as the API).

At most MAX_CARDS cards are drawn; previews are shrunk to small inlined thumbnails (the LoRA browser's
ThumbCache), so the model folders are never served to the page. All text is HTML-escaped.

`embedding_accordion` puts the embeddings, as cards, beside the LoRA cards of txt2img and img2img: a
click adds the embedding's name to the prompt, or takes it out (webui.ui.lora_browser.CARD_SCRIPT).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui.core.library import actions, civitai
from webui.core.library.cards import BASES, KIND_LABELS, KINDS, SORTS, Card, CardLibrary
from webui.core.library.sidecar import user_fields
from webui.core.types import RequestError
from webui.ui.context import refusal
from webui.ui.lora_browser import ThumbCache

MAX_CARDS = 100
ALL = "All"
SORT_CHOICES = [("Folder order", ""), ("Name", "name"), ("Newest", "date"), ("Largest", "size"),
                ("Base model", "base")]  # fmt: skip

CSS = """
.sf-lib-card.sf-lib-selected { border-color: var(--color-accent); box-shadow: 0 0 0 2px var(--color-accent); }
.sf-lib-kind { font-size: var(--text-xs); opacity: .7; }
#library_about { padding: 4px 12px; }
"""

# A click on a library card names it in the editor's Card box (which loads its notes).
LIBRARY_SCRIPT = """
<script>
document.addEventListener('click', (e) => {
  const card = e.target.closest && e.target.closest('.sf-lib-card');
  if (!card) return;
  const box = document.querySelector('#library_selected textarea, #library_selected input');
  if (!box) return;
  document.querySelectorAll('.sf-lib-selected').forEach((c) => c.classList.remove('sf-lib-selected'));
  card.classList.add('sf-lib-selected');
  box.value = card.dataset.card;
  box.dispatchEvent(new Event('input', { bubbles: true }));
});
</script>
"""


def card_id(card: Card) -> str:
    """What the Card box holds: "kind/file" (the kind never has a slash)."""
    return f"{card.kind}/{card.file}"


def parse_card_id(text: str) -> tuple[str, str]:
    kind, _, file = (text or "").strip().partition("/")
    return kind, file


def _card_html(card: Card, thumbs: ThumbCache, *, tag: str | None = None) -> str:
    e = html.escape
    thumb = thumbs.uri(card.preview) if card.preview is not None else None
    image = (
        f"<img src='{thumb}' alt='' loading='lazy'>"
        if thumb
        else "<div class='sf-lora-noimg'>no preview</div>"
    )
    meta = " · ".join(x for x in (KIND_LABELS[card.kind], card.base or "", card.shorthash or "") if x)
    if tag is not None:  # a prompt card (embeddings beside the LoRA cards)
        attrs = f"class='sf-lora-card' data-tag='{e(tag)}' data-name='{e(card.name)}'"
    else:
        attrs = f"class='sf-lora-card sf-lib-card' data-card='{e(card_id(card))}' data-name='{e(card.name)}'"
    return (
        f"<button type='button' {attrs} title='{e(card.file)}'>{image}"
        f"<span class='sf-lora-name'>{e(card.name)}</span><span class='sf-lib-kind'>{e(meta)}</span></button>"
    )


def render(library: CardLibrary, query: str, kind: str, base: str, thumbs: ThumbCache, sort: str = "") -> str:
    """The count line and at most MAX_CARDS cards matching the filters ("All" or "" for none), in the
    order `sort` names (webui.core.library.cards.SORTS)."""
    kind = "" if kind in (ALL, None) else _kind_of(kind)
    base = "" if base in (ALL, None) else base
    try:
        found = library.search(query or "", kind, base, sort if sort in SORTS else "")
    except Exception as err:  # an unreadable folder must not break the tab
        return (
            f"<div class='sf-lora-count'>The model folders could not be listed: {html.escape(str(err))}</div>"
        )
    total = len(found)
    if total == 0:
        note = "no model matches" if (query or kind or base) else "no model files found in the model folders"
        return f"<div class='sf-lora-count'>{html.escape(note)}</div>"
    count = f"{total} model file{'s' if total != 1 else ''}" + (
        f", first {MAX_CARDS} shown: type to narrow the search" if total > MAX_CARDS else ""
    )
    cards = "".join(_card_html(c, thumbs) for c in found[:MAX_CARDS])
    return f"<div class='sf-lora-count'>{html.escape(count)}</div><div class='sf-lora-grid'>{cards}</div>"


def _kind_of(label: str) -> str:
    for kind, text in KIND_LABELS.items():
        if label in (kind, text):
            return kind
    return label


def human_size(size: int) -> str:
    """1.9 GiB, 144.0 MiB, 12.3 KiB, 80 B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def describe(card: Card) -> str:
    """The editor's header: name, kind, base, size and hash of the selected card, and the training tags
    its header records (escaped)."""
    e = html.escape
    size = human_size(card.size)
    facts = [
        KIND_LABELS[card.kind],
        card.base or "base model unknown",
        size,
        card.shorthash or "hash not computed",
    ]
    text = f"**{e(card.name)}** ({e(card.file)})  \n{e(' · '.join(facts))}"
    tags = actions.training_tags(actions.header_metadata(card), limit=12)
    if tags:
        text += f"  \nTraining tags: {e(', '.join(f'{t} ({n})' for t, n in tags))}"
    return text


def load_card(library: CardLibrary, text: str) -> tuple[Any, ...]:
    """The editor's values for the card named in the Card box (or empties and why)."""
    kind, file = parse_card_id(text)
    empty = user_fields({})
    try:
        card = actions.card_of(library, kind, file)
    except (RequestError, actions.CardNotFound) as err:
        note = "" if not (text or "").strip() else f"No such card: {html.escape(str(err))}"
        values = empty
        return (note, *(values[k] for k in EDITOR_KEYS))
    values = user_fields(card.user)
    return (describe(card), *(values[k] for k in EDITOR_KEYS))


EDITOR_KEYS = ("description", "activation text", "preferred weight", "negative text", "sd version", "notes")


def save_card(library: CardLibrary, services: Any, request: Any, text: str, *values: Any) -> str:
    """Save the editor's values into the card's sidecar; the message to show."""
    why = refusal(services, request, "Editing a model's notes")
    if why is not None:
        return f"Not saved: {html.escape(why)}"
    kind, file = parse_card_id(text)
    fields = dict(zip(EDITOR_KEYS, values, strict=True))
    weight = fields["preferred weight"]
    fields["preferred weight"] = None if weight in (None, "") else float(weight)
    try:
        card = actions.save_user_metadata(library, kind, file, fields)
    except RequestError as err:
        return f"Not saved: {html.escape(err.field)}: {html.escape(err.message)}"
    except actions.CardNotFound as err:
        return f"Not saved: {html.escape(str(err))}"
    name = card.sidecar.name if card.sidecar is not None else "the sidecar"
    return f"Saved {html.escape(name)}."


def fetch_card(
    library: CardLibrary, services: Any, request: Any, text: str, step: actions.Step | None = None
) -> str:
    why = refusal(services, request, "Fetching a model's info from Civitai")
    if why is not None:
        return f"Nothing fetched: {html.escape(why)}"
    kind, file = parse_card_id(text)
    try:
        result = actions.fetch_info(
            library, kind, file, services.config, services.settings.get, step=step or actions.no_step
        )
    except RequestError as err:
        return f"Nothing fetched: {html.escape(err.field)}: {html.escape(err.message)}"
    except (actions.CardNotFound, civitai.CivitaiError) as err:
        return f"Nothing fetched: {html.escape(str(err))}"
    return html.escape(result.message())


def rescan_if_allowed(library: CardLibrary, services: Any, request: Any) -> bool:
    """Rescan the model folders for an admin (or anyone without logins), as the API's refresh; others
    see the current listing again. Whether it rescanned."""
    if refusal(services, request, "Refreshing the model lists") is not None:
        return False
    library.refresh()
    return True


def build_library(ctx: Any) -> dict[str, Any]:
    """The library section of the Models tab (call inside a column)."""
    services = ctx.services
    library: CardLibrary = services.cards
    thumbs: ThumbCache = ctx.lora_thumbs
    f: dict[str, Any] = {}
    gr.Markdown("### Model library")
    with gr.Row(equal_height=True):
        f["search"] = gr.Textbox(
            label="Search the library", placeholder="name, folder, trigger words, notes",
            elem_id="library_search", scale=4, min_width=160,
        )  # fmt: skip
        f["kind"] = gr.Dropdown(
            [ALL, *(KIND_LABELS[k] for k in KINDS)], value=ALL, label="Kind", elem_id="library_kind",
            scale=1, min_width=120,
        )  # fmt: skip
        f["base"] = gr.Dropdown(
            [ALL, *BASES], value=ALL, label="Base model", elem_id="library_base", scale=1, min_width=120
        )
        f["sort"] = gr.Dropdown(
            SORT_CHOICES, value="", label="Order", elem_id="library_sort", scale=1, min_width=120
        )
        f["refresh"] = gr.Button("\u21bb", size="sm", min_width=40, scale=0, elem_id="library_refresh")
    f["cards"] = gr.HTML("", elem_id="library_cards", padding=False)  # read when the page opens
    with gr.Group(elem_id="library_editor"):
        f["selected"] = gr.Textbox(
            label="Card (kind/file): click a card, or type", elem_id="library_selected", lines=1, max_lines=1
        )
        f["about"] = gr.Markdown("", elem_id="library_about")
        f["description"] = gr.Textbox(label="Description", lines=2, elem_id="library_description")
        with gr.Row():
            f["activation"] = gr.Textbox(label="Activation text", elem_id="library_activation", scale=3)
            f["weight"] = gr.Number(
                None,
                label="Preferred weight",
                minimum=-10,
                maximum=10,
                step=0.05,
                elem_id="library_weight",
                scale=1,
            )
        f["negative"] = gr.Textbox(label="Negative text", elem_id="library_negative")
        with gr.Row():
            f["version"] = gr.Textbox(
                label="SD version (SD1, SD2, SDXL, SD3, Flux)", elem_id="library_version"
            )
            f["notes"] = gr.Textbox(label="Notes", elem_id="library_notes", scale=2)
        with gr.Row():
            f["save"] = gr.Button("Save notes", variant="primary", elem_id="library_save", min_width=120)
            f["fetch"] = gr.Button("Fetch info (Civitai)", elem_id="library_fetch", min_width=120)
        f["status"] = gr.Markdown("", elem_id="library_status")
    editor = [f["description"], f["activation"], f["weight"], f["negative"], f["version"], f["notes"]]
    filters = [f["search"], f["kind"], f["base"], f["sort"]]

    def search(query: str, kind: str, base: str, sort: str) -> str:
        return render(library, query, kind, base, thumbs, sort)

    def refresh(query: str, kind: str, base: str, sort: str, request: gr.Request) -> str:
        rescan_if_allowed(library, services, request)
        return search(query, kind, base, sort)

    def save(
        text: str,
        description: str,
        activation: str,
        weight: Any,
        negative: str,
        version: str,
        notes: str,
        query: str,
        kind: str,
        base: str,
        sort: str,
        request: gr.Request,
    ) -> tuple[str, str]:
        values = (description, activation, weight, negative, version, notes)
        return save_card(library, services, request, text, *values), search(query, kind, base, sort)

    fetch_outputs = [f["status"], f["cards"], f["about"], *editor]

    def fetch(
        text: str, query: str, kind: str, base: str, sort: str, request: gr.Request
    ) -> Iterator[tuple[Any, ...]]:
        """Runs the fetch on a thread and shows each stage (hashing with its percentage, the look-up)
        in the status line as it happens; then the fresh card."""
        now = ["Starting"]
        answer: list[str] = []
        finished = threading.Event()

        def step(what: str, fraction: float | None) -> None:
            now[0] = f"{what}: {fraction:.0%}" if fraction is not None else f"{what}..."

        def work() -> None:
            try:
                answer.append(fetch_card(library, services, request, text, step))
            except Exception as err:  # shown, never a silent hang
                answer.append(f"Nothing fetched: {html.escape(str(err))}")
            finally:
                finished.set()

        threading.Thread(target=work, name="fetch-info", daemon=True).start()
        shown = ""
        skips = (gr.skip(),) * (len(fetch_outputs) - 1)
        while not finished.wait(0.25):
            if now[0] != shown:
                shown = now[0]
                yield (html.escape(shown), *skips)
        yield (answer[0], search(query, kind, base, sort), *load_card(library, text))

    quiet: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")
    ctx.page_load.add(lambda _request: [search("", ALL, ALL, "")], [f["cards"]])
    for box in filters:
        box.change(search, filters, f["cards"], trigger_mode="always_last", **quiet)
    f["refresh"].click(refresh, filters, f["cards"], **quiet)
    f["selected"].change(
        lambda text: load_card(library, text),
        f["selected"],
        [f["about"], *editor],
        trigger_mode="always_last",
        **quiet,
    )
    f["save"].click(save, [f["selected"], *editor, *filters], [f["status"], f["cards"]], **quiet)
    f["fetch"].click(
        fetch, [f["selected"], *filters], fetch_outputs, show_progress="hidden", api_visibility="private"
    )
    return f


def embedding_cards(library: CardLibrary, query: str, tab: str, thumbs: ThumbCache) -> str:
    """The embeddings as prompt cards (a click puts the name in `tab`'s prompt)."""
    found = library.search(query or "", "embedding")
    if not found:
        return "<div class='sf-lora-count'>no embedding matches</div>" if query else (
            "<div class='sf-lora-count'>no embeddings found in the embeddings folder</div>"
        )  # fmt: skip
    cards = "".join(_card_html(c, thumbs, tag=c.name) for c in found[:MAX_CARDS])
    count = f"{len(found)} embedding{'s' if len(found) != 1 else ''}"
    return (
        f"<div class='sf-lora-count'>{html.escape(count)}</div>"
        f"<div class='sf-lora-grid' data-tab='{html.escape(tab)}'>{cards}</div>"
    )


def embedding_accordion(ctx: Any, tab: str) -> dict[str, Any]:
    """An "Embeddings" accordion of prompt cards for `tab` (txt2img, img2img)."""
    library: CardLibrary = ctx.services.cards
    f: dict[str, Any] = {}
    with gr.Accordion("Embeddings", open=False, elem_id=f"{tab}_embeddings"):
        with gr.Row(equal_height=True):
            f["search"] = gr.Textbox(
                label="Search embeddings", elem_id=f"{tab}_embedding_search", scale=4, min_width=160
            )
            f["refresh"] = gr.Button(
                "\u21bb", size="sm", min_width=40, scale=0, elem_id=f"{tab}_embedding_refresh"
            )
        f["cards"] = gr.HTML("", elem_id=f"{tab}_embedding_cards", padding=False)

    def search(query: str) -> str:
        return embedding_cards(library, query, tab, ctx.lora_thumbs)

    def refresh(query: str, request: gr.Request) -> str:
        rescan_if_allowed(library, ctx.services, request)
        return search(query)

    quiet: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")
    ctx.page_load.add(lambda _request: [search("")], [f["cards"]])
    f["search"].change(search, f["search"], f["cards"], trigger_mode="always_last", **quiet)
    f["refresh"].click(refresh, f["search"], f["cards"], **quiet)
    return f
