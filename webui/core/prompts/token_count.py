"""The prompt box's token counter: "used/capacity" per 75-token chunk, as A1111 shows it.

A1111 counts the longest text the prompt becomes over the steps (prompt editing, alternation), per
`AND` sub-prompt, with extra-network tags (`<lora:...>`) left out, and shows the count against the
next multiple of 75 (`80/150`: two chunks). The shipped CLIP tokenizer does the tokenizing; the
counter holds one tokenizer, made on first use.

    counter = TokenCounter()
    counter.count("a cat, (sitting:1.2)", steps=20)   # TokenCount(tokens=7, capacity=75)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webui.core.prompts.chunks import CHUNK_LENGTH, EmbeddingLike, EmbeddingMatcher, tokenize_prompt
from webui.core.prompts.schedule import prompt_schedule
from webui.core.prompts.syntax import extract_networks, split_and

MAX_COUNTED_CHARS = 20_000  # longer prompts are counted on their first 20k characters (a live counter)


@dataclass(frozen=True)
class TokenCount:
    tokens: int  # prompt tokens of the longest variant
    capacity: int  # 75 x chunks (at least 75)

    @property
    def chunks(self) -> int:
        return self.capacity // CHUNK_LENGTH

    def __str__(self) -> str:
        return f"{self.tokens}/{self.capacity}"


class TokenCounter:
    """Counts prompt tokens with the shipped CLIP tokenizer (loaded once, thread-safe)."""

    def __init__(self, embeddings: Mapping[str, EmbeddingLike] | None = None) -> None:
        self._embeddings = dict(embeddings or {})
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._matcher: EmbeddingMatcher | None = None

    def _tools(self) -> tuple[Any, EmbeddingMatcher | None]:
        with self._lock:
            if self._tokenizer is None:
                from webui.core.models.tokenizer import clip_tokenizer

                self._tokenizer = clip_tokenizer()
                self._tokenizer.model_max_length = 10**9  # a counter: long prompts are expected
                if self._embeddings:
                    self._matcher = EmbeddingMatcher(self._tokenizer, self._embeddings)
            return self._tokenizer, self._matcher

    def count(self, prompt: str, steps: int = 20) -> TokenCount:
        """The token count of the prompt's longest variant over `steps` steps, and its chunk capacity."""
        if not isinstance(prompt, str):
            prompt = ""
        steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else 1
        text, _ = extract_networks(prompt[:MAX_COUNTED_CHARS])
        tokenizer, matcher = self._tools()
        longest = 0
        for _, variant in prompt_schedule(text, steps):
            for part, _weight in split_and(variant):
                longest = max(longest, tokenize_prompt(part, tokenizer, matcher).token_count)
        chunks = max(1, -(-longest // CHUNK_LENGTH))
        return TokenCount(longest, chunks * CHUNK_LENGTH)
