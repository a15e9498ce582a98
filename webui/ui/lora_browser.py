"""The LoRA browser: a searchable card grid (name, preview thumbnail, base model); a click inserts the tag.

Stays fast with 10,000 files: a search filters the library's cached listing by name and folder (nothing
opened), and at most MAX_CARDS cards are drawn. Only for the cards drawn does it read anything: the
header metadata (cached by the library) for the base model, the sidecar for the tag, and the preview,
shrunk once to a small JPEG thumbnail (cached by file and mtime) and inlined as a data: URI, so the
LoRA folders never need to be served.

A click on a card appends its tag (`<lora:name:w>`, webui.core.networks.activations.card_tag with the
file name, which always finds this file without reading every header) to the tab's prompt, in the
browser (CARD_SCRIPT). All text in the cards is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import threading
from collections import OrderedDict
from typing import Any

import gradio as gr

MAX_CARDS = 100
THUMB_PX = 128
MAX_THUMBS = 2000

CSS = """
.sf-lora-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 8px; }
.sf-lora-card { display: flex; flex-direction: column; align-items: stretch; padding: 4px; cursor: pointer;
  border: 1px solid var(--border-color-primary); border-radius: 8px; background: var(--block-background-fill);
  color: var(--body-text-color); text-align: left; font: inherit; min-width: 0; }
.sf-lora-card:hover { border-color: var(--color-accent); }
.sf-lora-card img, .sf-lora-noimg { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 6px; }
.sf-lora-noimg { display: flex; align-items: center; justify-content: center; opacity: .5;
  background: var(--neutral-100); font-size: var(--text-sm); }
.dark .sf-lora-noimg { background: var(--neutral-800); }
.sf-lora-name { font-size: var(--text-sm); overflow-wrap: anywhere; margin-top: 4px; }
.sf-lora-base { font-size: var(--text-xs); opacity: .7; }
.sf-lora-count { font-size: var(--text-sm); opacity: .8; margin: 4px 0; }
"""

# A card click toggles its tag in the prompt of the tab the grid sits in (data-tab), as A1111 does: added
# at the end, or, when the prompt already has that network at any weight, taken out; then tells Gradio.
# A tag that is a plain word (an embedding's name) is found as a whole word.
CARD_SCRIPT = """
<script>
document.addEventListener('click', (e) => {
  const card = e.target.closest && e.target.closest('.sf-lora-card');
  if (!card) return;
  const grid = card.closest('[data-tab]');
  const box = grid && grid.dataset.tab && document.querySelector('#' + grid.dataset.tab + '_prompt textarea');
  if (!box) return;
  const text = box.value, tag = card.dataset.tag;
  const m = /^<(\\w+):([^:>]+)/.exec(tag);
  const quote = (s) => s.replace(/[.*+?^${}()|[\\]\\\\]/g, '\\\\$&');
  const present = m ? new RegExp('\\\\s*<' + quote(m[1]) + ':' + quote(m[2]) + '(:[^>]*)?>', 'g')
    : new RegExp('\\\\s*(?<![^\\\\s,(])' + quote(tag) + '(?![^\\\\s,)])', 'g');
  if (present.test(text)) {
    box.value = text.replace(present, '').replace(/^\\s+/, '');
  } else {
    box.value = text + (text && !/\\s$/.test(text) ? ' ' : '') + tag;
  }
  box.dispatchEvent(new Event('input', { bubbles: true }));
  box.focus();
});
</script>
"""


class ThumbCache:
    """(preview path, mtime) -> a small JPEG data: URI; bounded, least recently used dropped first."""

    def __init__(self, size: int = THUMB_PX, limit: int = MAX_THUMBS) -> None:
        self.size, self.limit = size, limit
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[str, int], str] = OrderedDict()

    def uri(self, path: Any) -> str | None:
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return None
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        value = self._make(path)
        if value is not None:
            with self._lock:
                self._known[key] = value
                while len(self._known) > self.limit:
                    self._known.popitem(last=False)
        return value

    def _make(self, path: Any) -> str | None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.draft("RGB", (self.size, self.size))
                thumb = im.convert("RGB")
                thumb.thumbnail((self.size, self.size))
        except Exception:  # a broken or unsupported preview: the card shows no image
            return None
        buf = io.BytesIO()
        thumb.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def matching(library: Any, query: str) -> list[Any]:
    """The library's files whose name or folder path contains the query (any case), sorted by path."""
    q = (query or "").strip().casefold()
    items = [f for f in library.items() if not q or q in f.relative.casefold()]
    items.sort(key=lambda f: f.relative.casefold())
    return items


def card_html(item: Any, library: Any, thumbs: ThumbCache) -> str:
    from webui.core.networks.activations import card_tag
    from webui.core.networks.registry import base_model

    tag = card_tag(item, library, prefer_alias=False)
    base = base_model(library.metadata(item)) if item.is_safetensors else None
    thumb = thumbs.uri(item.preview) if item.preview is not None else None
    image = (
        f"<img src='{thumb}' alt='' loading='lazy'>"
        if thumb
        else "<div class='sf-lora-noimg'>no preview</div>"
    )
    e = html.escape
    return (
        f"<button type='button' class='sf-lora-card' data-tag='{e(tag)}' data-name='{e(item.name)}' "
        f"title='{e(item.relative)}: {e(tag)}'>{image}<span class='sf-lora-name'>{e(item.name)}</span>"
        f"<span class='sf-lora-base'>{e(base or 'base model unknown')}</span></button>"
    )


def render(library: Any, query: str, tab: str, thumbs: ThumbCache, limit: int = MAX_CARDS) -> str:
    """The count line and the grid of at most `limit` cards for the files matching `query`."""
    try:
        found = matching(library, query)
    except Exception as e:  # an unreadable folder must not break the tab; say what happened
        return f"<div class='sf-lora-count'>LoRA folders could not be listed: {html.escape(str(e))}</div>"
    total = len(found)
    if total == 0:
        where = ", ".join(str(d) for d in library.dirs)
        note = "no LoRA matches" if (query or "").strip() else f"no LoRA files found in {where}"
        return f"<div class='sf-lora-count'>{html.escape(note)}</div>"
    shown = found[:limit]
    count = f"{total} LoRA{'s' if total != 1 else ''}" + (
        f", first {limit} shown: type to narrow the search" if total > limit else ""
    )
    cards = "".join(card_html(item, library, thumbs) for item in shown)
    return (
        f"<div class='sf-lora-count'>{html.escape(count)}</div>"
        f"<div class='sf-lora-grid' data-tab='{html.escape(tab)}'>{cards}</div>"
    )


def build_lora_browser(ctx: Any, tab: str, thumbs: ThumbCache) -> dict[str, Any]:
    """Search box, refresh and the card grid (call inside an accordion or column). `tab` names the tab
    whose prompt a click fills ("" on the Models tab: cards only show)."""
    library = ctx.services.engine.loras
    prefix = tab or "models"
    f: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        f["_lora_search"] = gr.Textbox(
            label="Search LoRA", placeholder="name or folder", elem_id=f"{prefix}_lora_search",
            scale=4, min_width=160,
        )  # fmt: skip
        f["_lora_refresh"] = gr.Button(
            "\u21bb", size="sm", min_width=40, scale=0, elem_id=f"{prefix}_lora_refresh"
        )
    f["_lora_cards"] = gr.HTML(  # read when the page opens
        "", elem_id=f"{prefix}_lora_cards", padding=False
    )

    def search(query: str) -> str:
        return render(library, query, tab, thumbs)

    def refresh(query: str) -> str:
        library.refresh()
        return render(library, query, tab, thumbs)

    quiet: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")
    ctx.page_load.add(lambda _request: [search("")], [f["_lora_cards"]])
    f["_lora_search"].change(search, f["_lora_search"], f["_lora_cards"], trigger_mode="always_last", **quiet)
    f["_lora_refresh"].click(refresh, f["_lora_search"], f["_lora_cards"], **quiet)
    return f


def lora_accordion(ctx: Any, tab: str, thumbs: ThumbCache) -> dict[str, Any]:
    with gr.Accordion("LoRA", open=False, elem_id=f"{tab}_lora"):
        return build_lora_browser(ctx, tab, thumbs)
