"""uvicorn's HTTP protocol with a deadline for the request to arrive.

uvicorn closes an idle kept-alive connection, but not one that opens and then sends its request
a byte at a time, or never finishes it: a few hundred such clients hold as many connections
for ever (measured: none of 300 closed after 40 s). Here each request must arrive whole within
`seconds` of the connection (or of its first byte, on a kept-alive one); past it the connection
is closed, said in one log line. Work on a request that has arrived has no deadline here.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
QUEUED_AT = "oppscore.queued_at"  # a key of the ASGI scope: the event loop's time when the request was handed to the app


def waited(scope: dict) -> float:
    """Seconds since the request was handed to the app (0 when not known)."""
    queued = scope.get(QUEUED_AT)
    return asyncio.get_running_loop().time() - queued if queued is not None else 0.0


OTHERS_IN_FLIGHT = "oppscore.others_in_flight"  # a key of the ASGI scope: requests of this worker in progress when this one began (serving.app.InFlight)


class DeadlineProtocol(HttpToolsProtocol):
    seconds: float = 30.0  # set from `[serving] request_seconds` before the server starts

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request of a kept-alive connection: its own deadline

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # when the request was handed to the app: how long it then waits for the event loop is
        # what `serving.app.InFlight` sheds on (its task is created here, and runs later)
        self.scope[QUEUED_AT] = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.seconds, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        who = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed a connection from %s: no whole request within %.0f s", who, self.seconds)
        self.transport.close()
