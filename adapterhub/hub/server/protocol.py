"""uvicorn's HTTP/1.1 protocol with the timeouts it lacks, so slow or silent clients cannot hold connections open.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a request head: a client
that connects and sends half a request line keeps its connection, and a thousand of them exhaust the connection
limit. This subclass of uvicorn's h11 protocol (h11 also caps the head's size) closes a connection whose request
head is not complete `head_timeout` seconds after the connection opened or the previous response ended, and one
whose client sends no body bytes for `body_timeout` seconds while the server is waiting to read them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 16 << 10  # h11_max_incomplete_event_size: request line plus headers (h11's default, made explicit)


def guarded_protocol(head_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """An H11Protocol class enforcing these two timeouts; pass it as uvicorn's `http=`."""

    class GuardedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _waiting_for: str = ""  # "head", "body" or "" (nothing owed by the client)

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._sync_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for == "body":
                self._cancel()  # the client is sending: the body deadline starts again
            self._sync_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._sync_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _sync_timer(self) -> None:
            """Arm the deadline that fits what the client owes now; a head deadline is not reset by more bytes."""
            if self.transport is None or self.transport.is_closing():
                return self._cancel()
            their, ours = self.conn.their_state, self.conn.our_state
            owes = "head" if their is h11.IDLE and ours is h11.IDLE else "body" if their is h11.SEND_BODY else ""
            if owes != self._waiting_for:
                self._cancel()
                self._waiting_for = owes
            if owes and self._timer is None:
                self._timer = self.loop.call_later(head_timeout if owes == "head" else body_timeout, self._expired)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.transport is None or self.transport.is_closing():
                return
            if self._waiting_for == "body" and self.flow is not None and self.flow.read_paused:
                self._sync_timer()  # the server stopped reading, not the client: wait again
                return
            if self._waiting_for:
                self.transport.close()

    return GuardedH11Protocol
