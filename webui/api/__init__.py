"""The HTTP side of Sfumato: the A1111-compatible `/sdapi/v1` API and the native `/api/v1` jobs API.

`create_app(services, ui=None)` builds the FastAPI app; `webui.server` builds the services and runs it.
"""

from __future__ import annotations

from webui.api.app import create_app
from webui.api.services import ServerOptions, Services

__all__ = ["ServerOptions", "Services", "create_app"]
