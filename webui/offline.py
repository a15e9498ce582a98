"""Environment that keeps every library offline and silent. Standard library only.

Gradio has analytics and a version check on by default; huggingface_hub (under diffusers and
transformers) has telemetry and Hub look-ups. Sfumato contacts nothing the user did not ask for, so these
are set before any of those libraries is imported: by launch.py, by the test runner and by conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "DISABLE_TELEMETRY": "1",
}


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the offline variables (overriding anything that would turn telemetry back on)."""
    env = os.environ if environ is None else environ
    env.update(OFFLINE_ENV)
