"""Slow and vanishing clients (issue 29): connections that never finish their request are closed
at the request deadline, and clients that leave mid-request cost a log line, not a traceback."""

from __future__ import annotations

import logging
import socket
import time

from tests.api.conftest import KEY
from tests.faults.served import Served


def _closed_by_server(conn: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within `within` s (what it answered first, a
    503 from the bounded queue say, is read past)."""
    conn.settimeout(within)
    try:
        while conn.recv(4096):
            pass
        return True
    except (TimeoutError, ConnectionResetError):
        return False


def test_connections_that_never_finish_their_request_are_closed(served_store) -> None:
    """40 clients send half a request line, 40 the headers of a body they never send: all are
    closed at the deadline (before: none of 300 after 40 s); a normal request still answers."""
    from serving.app import create_app

    with Served(create_app(served_store, start_reloader=False), request_seconds=2.0) as port:
        slow = []
        for k in range(80):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /heal" if k < 40 else f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{".encode())
            slow.append(conn)
        started = time.monotonic()
        closed = [_closed_by_server(c, within=10) for c in slow]
        took = time.monotonic() - started
        with socket.create_connection(("127.0.0.1", port)) as ok:
            ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = ok.recv(200)
    for c in slow:
        c.close()
    assert all(closed) and took < 8, (sum(closed), took)
    assert answer.startswith(b"HTTP/1.1 200")


def test_clients_that_leave_mid_request_cost_a_line_not_a_traceback(served_store, caplog) -> None:
    from serving.app import create_app

    with caplog.at_level(logging.INFO), Served(create_app(served_store, start_reloader=False), request_seconds=30.0) as port:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"opp".encode())
        time.sleep(1.0)
    text = caplog.text
    assert "Traceback" not in text and "unexpected error" not in text, text[:2000]
    assert text.count("disconnected before its request arrived") >= 20
