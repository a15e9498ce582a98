"""Prompt language: A1111 emphasis, prompt editing, AND sub-prompts, extra-network tags, and encoding.

The grammar part is pure functions of strings (no model needed):
`parse_attention`, `prompt_schedule`, `split_and`, `extract_networks` / `ExtraNetwork`.
"""

from __future__ import annotations

from webui.core.prompts.attention import parse_attention
from webui.core.prompts.schedule import prompt_schedule
from webui.core.prompts.syntax import ExtraNetwork, extract_networks, split_and

__all__ = ["ExtraNetwork", "extract_networks", "parse_attention", "prompt_schedule", "split_and"]
