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
    redact_access_log()
    return cfg


def redact_access_log() -> None:
    """Install :class:`RedactQuery` on uvicorn's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())


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


def app_from_environment() -> FastAPI:
    """The API app built from the environment's settings (``ORCH_*``): the factory each
    process of ``python -m orchestrator.api --workers N`` calls.

    Raises:
        SettingsInvalid: the settings do not load.
    """
    redact_access_log()
    return create_api(load())


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the API on ``Settings.api_host``:``api_port`` (options override them).

    With ``--workers N`` (N > 1), uvicorn serves from N processes on one socket: each
    builds its own app (:func:`app_from_environment`), with its own Redis pools and
    in-memory quotas (streams and waits per token are then per process, as with N
    servers behind a balancer; the request rate per token is shared, in Redis).
    """
    parser = argparse.ArgumentParser(prog="python -m orchestrator.api",
                                     description="Serve the orchestrator's HTTP API.")
    parser.add_argument("--host", default=None, help="default: ORCH_API_HOST")
    parser.add_argument("--port", type=int, default=None, help="default: ORCH_API_PORT")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--workers", type=int, default=1,
                        help="serving processes (default 1): a submit costs CPU in Python, "
                        "so more processes serve more submits per second where cores are "
                        "free")
    args = parser.parse_args(argv)
    try:
        settings = load()
    except SettingsInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        sys.exit(2)
    host, port = args.host or settings.api_host, args.port or settings.api_port
    if args.workers > 1:
        uvicorn.run("orchestrator.api.server:app_from_environment", factory=True,
                    workers=args.workers, host=host, port=port, log_level=args.log_level,
                    proxy_headers=False, server_header=False, lifespan="on",
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        return
    app = create_api(settings)
    uvicorn.Server(config(app, host, port, args.log_level)).run()
