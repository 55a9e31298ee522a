"""Connections that hold the server without asking anything: closed after the read timeout, bounded in number.

uvicorn closes an idle keep-alive connection but neither a fresh one that sends nothing nor one that trickles its
request head (issue 39: 420 of them, under a 400-file limit, made every normal request fail). ``guarded_h11`` gives
a connection ``read_timeout`` seconds to send a complete request head, from its start and again after each
response. At ``max_connections`` open, a new connection closes the oldest one still waiting for its head (it holds
nothing); when every open connection is in a request, the new one is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from demo.limits import Limits

log = logging.getLogger("demo.rest")  # one log for every client the server refuses or cuts off
FULL_WARNING_EVERY_S = 60.0  # a flood of connections logs one warning a minute, not one per connection


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a bound on open connections."""

    read_timeout: float
    max_connections: int
    last_full_warning = float("-inf")  # shared by the server's connections (set on the subclass)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._await_head()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()  # keep-alive: the next request head gets the same deadline

    def waiting_for_head(self) -> bool:
        """No request in progress and no complete head received (bytes of a partial head may be buffered)."""
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _await_head(self) -> None:
        self._cancel_head_timer()
        self.waiting_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.read_timeout, self._head_expired)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.waiting_for_head() and not self.transport.is_closing():
            log.info("closed the connection of %s: no complete request within %g s", self._peer(), self.read_timeout)
            self.transport.close()

    def _make_room(self) -> None:
        """Close the oldest connection waiting for its head, else refuse this one (503): never fail ``accept``."""
        idle = [
            c
            for c in self.connections
            if c is not self
            and isinstance(c, GuardedH11Protocol)
            and c.waiting_for_head()
            and not c.transport.is_closing()
        ]
        now = time.monotonic()
        if now - type(self).last_full_warning >= FULL_WARNING_EVERY_S:
            type(self).last_full_warning = now
            log.warning(
                "%d connections open (--max-connections): closing the longest idle ones to make room",
                self.max_connections,
            )
        if idle:
            oldest = min(idle, key=lambda c: c.waiting_since)
            oldest.transport.close()
            return
        body = json.dumps({"error": f"busy: {self.max_connections} connections are open; retry shortly"}).encode()
        head = f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\nretry-after: 1\r\n\r\n" + body)
        self.transport.close()


def guarded_h11(limits: Limits) -> type[GuardedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these limits (uvicorn builds one per connection)."""
    attrs = {"read_timeout": limits.read_timeout, "max_connections": limits.max_connections}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attrs)
