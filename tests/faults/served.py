"""The app under uvicorn in this process, on a free port: the fault tests need a real event loop
and real sockets, which a TestClient does not have."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    """A port nothing listens on (bound, then closed again: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`with Served(app) as port`; `request_seconds`: the deadline of uvicorn's protocol
    (`serving.protocol.DeadlineProtocol`), set for the block and restored after."""

    def __init__(self, app, request_seconds: float | None = None) -> None:
        import uvicorn

        from serving.protocol import DeadlineProtocol

        self.request_seconds, self.before = request_seconds, DeadlineProtocol.seconds
        self.port = free_port()
        extra = {"http": DeadlineProtocol} if request_seconds is not None else {}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **extra))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> int:
        from serving.protocol import DeadlineProtocol

        if self.request_seconds is not None:
            DeadlineProtocol.seconds = self.request_seconds
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.port

    def __exit__(self, *exc) -> None:
        from serving.protocol import DeadlineProtocol

        DeadlineProtocol.seconds = self.before
        self.server.should_exit = True
        self.thread.join(timeout=10)
