"""Serving the API with uvicorn: ``python -m orchestrator.api``, or in a thread."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI

from orchestrator.api.app import create_api
from orchestrator.dev.waiting import wait_until
from orchestrator.errors import SettingsInvalid
from orchestrator.settings import load

GRACEFUL_SHUTDOWN_S = 5


class RedactQuery(logging.Filter):
    """Access-log lines without query strings: a query may carry a secret (a callback URL
    with a token in it), and the path is what an operator needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) \
                and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration of the API (no proxy headers trusted, no server header,
    no query strings in the access log)."""
    cfg = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                         proxy_headers=False, server_header=False, lifespan="on",
                         timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
    return cfg


class ServerThread:
    """Serve an app with uvicorn in a background thread (tests, benchmarks, embedding).

    Use as a context manager: it returns once the server accepts connections and stops
    it (gracefully, then cancelling open streams) on exit.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.server = uvicorn.Server(config(app, host, port, log_level))
        self._thread = threading.Thread(target=self.server.run, name="api-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket."""
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start serving and wait until the server is up.

        Raises:
            AssertionError: it did not start within ``timeout_s``.
        """
        self._thread.start()
        wait_until(lambda: self.server.started or not self._thread.is_alive(), timeout_s,
                   message="the API server did not start")
        if not self.server.started:
            raise AssertionError("the API server exited while starting (port taken?)")
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the API on ``Settings.api_host``:``api_port`` (options override them)."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.api",
                                     description="Serve the orchestrator's HTTP API.")
    parser.add_argument("--host", default=None, help="default: ORCH_API_HOST")
    parser.add_argument("--port", type=int, default=None, help="default: ORCH_API_PORT")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        settings = load()
    except SettingsInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    app = create_api(settings)
    uvicorn.Server(config(app, args.host or settings.api_host, args.port or settings.api_port,
                          args.log_level)).run()
