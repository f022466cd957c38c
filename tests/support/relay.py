"""A TCP relay on loopback in front of one Redis server, that can starve its replica.

Every client of the server (the Sentinels, the replica, the workers through the Sentinels)
reaches it at the relay's port.  :meth:`Relay.hold_replication` drops, from then on, what
the server sends on a replication connection (one whose client sent ``PSYNC`` or
``SYNC``), while the replica still believes its link up: a network that delays the
replication stream.  A failover after that promotes a replica without the master's last
writes, as asynchronous replication can (``docs/operations.md``, High availability with
Sentinel), and the test chooses which writes those are.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from orchestrator.dev.localredis import LOOPBACK
from tests.support.lifecycle import Started

CHUNK = 65536
REPLICATION = (b"$5\r\nPSYNC\r\n", b"$4\r\nSYNC\r\n")
"""The command that turns a connection into a replication stream, as a replica sends it."""


class _Pair:
    """One client connection and its connection to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.replication = False

    def close(self) -> None:
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Relay(Started):
    """Forwards connections on :attr:`port` to ``upstream_port`` on loopback."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._held = threading.Event()
        self._closed = threading.Event()
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self.dropped = 0
        """Bytes the server sent its replica that were dropped."""

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def hold_replication(self) -> None:
        """From now on, drop what the server sends on its replication connections."""
        self._held.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((LOOPBACK, self.upstream_port), timeout=1)
            except OSError:  # the server is down: as a refused connection
                client.close()
                continue
            server.settimeout(None)
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._to_server, args=(pair,), daemon=True).start()
            threading.Thread(target=self._to_client, args=(pair,), daemon=True).start()

    def _to_server(self, pair: _Pair) -> None:
        try:
            while data := pair.client.recv(CHUNK):
                if not pair.replication and any(c in data for c in REPLICATION):
                    pair.replication = True
                pair.server.sendall(data)
        except OSError:
            pass
        pair.close()

    def _to_client(self, pair: _Pair) -> None:
        try:
            while data := pair.server.recv(CHUNK):
                if pair.replication and self._held.is_set():
                    self.dropped += len(data)
                    continue
                pair.client.sendall(data)
        except OSError:
            pass
        pair.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()
