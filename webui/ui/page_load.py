"""What a page reads when it opens: every control that shows stored state (settings, styles, model and
extension lists, the top bar) is filled here, from the store as it is *now*, never from what it was when
the server built the UI (a page built once and served for days would otherwise show, and write back,
old values).

Builders register a reader with `ctx.page_load.add(read, outputs)`; `read(request)` returns one value
(or gr.update) per output. The studio wires them all into one load event; a reader that fails leaves its
outputs as they are (and is logged) without stopping the others. When the event has run, the page's
`<body>` gets `data-sf-loaded="1"`, which is what the browser tests wait for. Browser-side steps that
need a loaded value (the theme) register with `add_js(js, inputs)` and run just before that mark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

log = logging.getLogger("sfumato.ui")

Reader = Callable[[Any], Sequence[Any]]  # (gr.Request) -> one value per output
LOADED_JS = "() => { document.body.dataset.sfLoaded = '1'; }"


class PageLoad:
    """The readers of one built studio (not global: made by StudioContext)."""

    def __init__(self) -> None:
        self._parts: list[tuple[Reader, list[Any]]] = []
        self._scripts: list[tuple[str, list[Any]]] = []

    def add_js(self, js: str, inputs: Sequence[Any]) -> None:
        """A browser function run with the loaded values of `inputs` once the readers have filled them."""
        self._scripts.append((js, list(inputs)))

    def add(self, read: Reader, outputs: Sequence[Any]) -> None:
        self._parts.append((read, list(outputs)))

    def outputs(self) -> list[Any]:
        return [o for _, outs in self._parts for o in outs]

    def read(self, request: Any) -> tuple[Any, ...]:
        """Every reader's values in order; gr.skip() for the outputs of one that fails."""
        values: list[Any] = []
        for read, outs in self._parts:
            try:
                got = list(read(request))
                if len(got) != len(outs):
                    raise ValueError(f"returned {len(got)} values for {len(outs)} outputs")
            except Exception:  # one broken list must not leave the whole page unfilled
                log.exception("page load: %s failed", getattr(read, "__qualname__", read))
                got = [gr.skip()] * len(outs)
            values.extend(got)
        return tuple(values)

    def wire(self, blocks: Any) -> None:
        """One load event for every reader (call once, inside the Blocks, after building)."""

        def on_load(request: gr.Request) -> tuple[Any, ...]:
            return self.read(request)

        event = blocks.load(
            on_load, None, self.outputs(), concurrency_limit=None, show_progress="hidden",
            api_visibility="private", queue=False,
        )  # fmt: skip
        for js, inputs in self._scripts:
            event = event.then(None, inputs, None, js=js, queue=False, api_visibility="private")
        event.then(None, None, None, js=LOADED_JS, queue=False, api_visibility="private")
