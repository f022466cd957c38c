"""The HTTP client of ``bench.api``'s load: one keep-alive connection of the standard
library's ``http.client`` per client thread.

The bench's clients share the 2 cores with the API, the worker and Redis, so the client's
own CPU per request is taken from the API's.  httpx spends 340 µs of CPU per POST in one
thread (0.68 ms with four threads contending for the GIL); ``http.client`` 93 µs, measured
against a stub server that answers at once (``docs/benchmarks.md``).  Clients in
production run on other machines; this one is the cheapest honest client there is: it
sends and reads every byte of every request and response, and parses the JSON of each.
``python -m bench.api --client httpx`` measures with httpx instead.
"""

from __future__ import annotations

import http.client
import json
from types import TracebackType
from typing import Any, Self

import httpx


class Reply:
    """A response: its status and body (the subset of ``httpx.Response`` the bench reads)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body

    @property
    def is_success(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


class KeepAlive:
    """One keep-alive connection to ``base_url`` (``http://host:port``) sending
    ``headers`` with every request; reconnects once if the server closed it."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float = 30) -> None:
        url = httpx.URL(base_url)
        self._host, self._port = url.host, url.port or 80
        self._headers = headers
        self._timeout_s = timeout_s
        self._conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def request(self, method: str, path: str, json_body: Any = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read its whole response."""
        body = None if json_body is None else json.dumps(json_body).encode()
        hdrs = {**self._headers, **(headers or {})}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=body, headers=hdrs)
                resp = self._conn.getresponse()
                return Reply(resp.status, resp.read())
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._conn.close()
                self._conn = self._connect()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, json: Any = None,
             headers: dict[str, str] | None = None) -> Reply:
        """``POST path`` with a JSON body."""
        return self.request("POST", path, json, headers)

    def get(self, path: str) -> Reply:
        """``GET path``."""
        return self.request("GET", path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._conn.close()
