"""The API tests' app (a registered champion, key 'test-key') for the fault tests that send it requests."""

import socket
import threading

import pytest

from tests.api.conftest import body, client, served_store  # noqa: F401 - fixtures shared with tests/api


class Hung:
    """A server that accepts connections and never answers: its port, and the connections it took."""

    def __init__(self, port: int, held: list) -> None:
        self.port, self.held = port, held


@pytest.fixture()
def hanging(hung: Hung) -> int:
    """The port of a server that accepts connections and never answers."""
    return hung.port


@pytest.fixture()
def hung():
    """A local port that accepts connections and never answers (a database or server stuck)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield Hung(server.getsockname()[1], held)
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
