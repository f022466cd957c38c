"""Redis servers that fail in each way an operator meets: stopped, refusing the password,
accepting connections and never answering."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from tests.support.wait import wait_until

PASSWORD = "right-password"


def stopped_url() -> str:
    """A URL (with a password, to check it is masked) where nothing listens."""
    return f"redis://:not-shown@127.0.0.1:{free_loopback_port()}/0"


@contextmanager
def password_server(binary: str) -> Iterator[str]:
    """A private ``redis-server --requirepass``; yields its URL without a password."""
    port = free_loopback_port()
    proc = procs.spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--requirepass", PASSWORD])
    try:
        wait_until(lambda: _accepts(port) or proc.poll() is not None, 10,
                   message="redis-server --requirepass did not start")
        assert proc.poll() is None, "redis-server --requirepass exited"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procs.stop(proc, 10)


@contextmanager
def silent_server() -> Iterator[str]:
    """A socket that accepts connections (the kernel's backlog) and never reads or
    answers: a stalled server, or another service on the port.  Yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"redis://:not-shown@127.0.0.1:{sock.getsockname()[1]}/0"
    finally:
        sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
