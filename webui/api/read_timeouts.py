"""Deadlines for reading a request, so half-sent requests cannot hold connections open (slowloris).

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits for ever on a request whose
headers or body arrive slowly. `with_read_deadlines(base)` subclasses uvicorn's HTTP protocol class:
a request's headers must be complete within `header_timeout` seconds of their first byte (or of the
connection), and while its body streams in, each piece must follow the last within `body_timeout`
seconds; otherwise the connection is closed. Nothing is timed while the app works on a request or
streams an answer, nor once a connection is upgraded to a websocket.
"""

from __future__ import annotations

import asyncio
from typing import Any

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0


def with_read_deadlines(base: type[Any], header_timeout: float, body_timeout: float) -> type[Any]:
    """`base` (uvicorn's H11Protocol or HttpToolsProtocol) with read deadlines."""

    class ReadDeadlines(base):  # type: ignore[misc, valid-type]
        _deadline: asyncio.TimerHandle | None = None
        _deadline_for: str | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            super().connection_lost(exc)

        def _reading(self) -> str | None:
            """ "headers" or "body" while a request is being read, else None."""
            transport = self.transport
            if transport is None or transport.is_closing() or transport.get_protocol() is not self:
                return None
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete:
                return "headers"
            return "body" if cycle.more_body else None

        def _watch(self) -> None:
            state = self._reading()
            if state is None:
                self._stop()
            elif state == "headers" and self._deadline_for == "headers":
                return  # the headers' deadline counts from their start, not from each piece
            else:
                self._stop()
                delay = header_timeout if state == "headers" else body_timeout
                self._deadline = asyncio.get_running_loop().call_later(delay, self._expire, state)
                self._deadline_for = state

        def _stop(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._deadline_for = None, None

        def _expire(self, state: str) -> None:
            self._deadline, self._deadline_for = None, None
            if self._reading() == state:
                self.transport.close()

    ReadDeadlines.__name__ = f"ReadDeadlines{base.__name__}"
    return ReadDeadlines
