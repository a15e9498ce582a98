"""Wildcards / dynamic prompts, built on the `dynamicprompts` library (the sd-dynamic-prompts syntax).

- `{a|b|c}` picks one variant; `{2$$a|b|c}` picks two; `{0.5::a|2::b}` weights them.
- `__name__` picks a line of `name.txt` (sub-folders: `__sub/name__`) from `<data dir>/wildcards/` when
  that folder exists, otherwise from this extension's own `wildcards/` folder.

The choice is seeded by the request's seed (a random seed is drawn and recorded first when the seed is
-1), so the seed in an image's infotext reproduces its prompt. The expanded prompt is what the engine
encodes and records; the template goes into the infotext as "Template" / "Negative Template".
One choice per request: every image of a batch gets the same expanded prompt.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from webui.plugins.api import (
    ExtensionContext,
    Field,
    GenerationRequest,
    Registry,
    RequestError,
    UiSection,
    hookimpl,
    replace_args,
    resolve_seed,
)

NAME = "wildcards"


def wildcard_folder(context: ExtensionContext) -> Path:
    user = context.data_dir / "wildcards"
    if user.is_dir():
        return user
    assert context.folder is not None
    return context.folder / "wildcards"


def is_template(text: str) -> bool:
    return "{" in text or "__" in text


def expand(template: str, seed: int, folder: Path, field: str = "prompt") -> str:
    """The template with its variants and wildcards chosen by `seed` (same seed, same result)."""
    from dynamicprompts.generators import RandomPromptGenerator
    from dynamicprompts.wildcards import WildcardManager

    generator = RandomPromptGenerator(WildcardManager(folder), seed=seed)
    try:
        return str(generator.generate(template, 1)[0])
    except Exception as e:  # pyparsing's ParseException and friends
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RequestError(
            field,
            f"wildcards could not read this template ({detail}); outside variants, write {{ }} $ % # "
            "only as dynamic-prompt syntax, or switch the wildcards extension off for this prompt",
        ) from e


@hookimpl
def register(registry: Registry) -> None:
    registry.add(
        UiSection(
            ("txt2img", "img2img"),
            "Dynamic prompts (wildcards)",
            fields=(Field("enabled", "checkbox", True, label="Expand {a|b} variants and __wildcards__"),),
        )
    )


@hookimpl
def request_received(
    request: GenerationRequest, args: dict[str, Any], context: ExtensionContext
) -> GenerationRequest | None:
    if not args["enabled"] or not (is_template(request.prompt) or is_template(request.negative_prompt)):
        return None
    seed = resolve_seed(request.seed)
    folder = wildcard_folder(context)
    prompt = expand(request.prompt, seed, folder, "prompt") if is_template(request.prompt) else request.prompt
    negative = request.negative_prompt
    if is_template(negative):
        negative = expand(negative, seed, folder, "negative_prompt")
    out = dataclasses.replace(request, prompt=prompt, negative_prompt=negative, seed=seed)
    return replace_args(out, NAME, _template=request.prompt, _negative_template=request.negative_prompt)


@hookimpl
def extra_infotext(request: GenerationRequest, args: dict[str, Any]) -> dict[str, object] | None:
    template, negative = args.get("_template"), args.get("_negative_template")
    if template is None:
        return None
    return {
        "Template": template if template != request.prompt else None,
        "Negative Template": negative if negative != request.negative_prompt else None,
    }
