"""A loopback HTTP client for the tests that run the real `serve` process (127.0.0.1 only)."""

from __future__ import annotations

import http.client
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port, method, path, body=None, content_type=None, timeout=30.0):
    """(status, Content-Type, body bytes) of one request; a str body is sent as UTF-8."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": content_type} if content_type else {}
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()
