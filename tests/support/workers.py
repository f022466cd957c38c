"""Real Celery worker processes for integration tests (no eager mode, no fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from orchestrator.dev import procs

TEST_PACKAGES = ("workflows", "tests.integration.flows", "tests.integration.flows_queues",
                 "tests.integration.flows_recovery", "tests.integration.flows_subworkflows",
                 "tests.integration.flows_map", "tests.integration.flows_concurrency")


def worker_env(redis_url: str, **settings: Any) -> dict[str, str]:
    """Environment for a worker or coordinator on ``redis_url`` (``workflow_packages``
    defaults to the test packages)."""
    env = dict(os.environ)
    env["ORCH_REDIS_URL"] = redis_url
    env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(list(TEST_PACKAGES))
    for k, v in settings.items():
        env[f"ORCH_{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
    return env


class WorkerProcess:
    """``celery -A workers.main worker`` in a subprocess, with its log in a temp file."""

    def __init__(self, redis_url: str, name: str, *, queues: Sequence[str] = ("default",),
                 concurrency: int = 4, pool: str = "prefork", python: str = sys.executable,
                 cwd: str | None = None, env: dict[str, str] | None = None,
                 app: str = "workers.main", **settings: Any) -> None:
        """``python``: the interpreter (another release's virtualenv); ``cwd``: the working
        directory (its modules come first on the path); ``env``: extra variables; ``app``:
        the ``-A`` module (a test hook that wraps ``workers.main``)."""
        self.name = f"{name}@test"
        self.redis_url = redis_url
        self._spawn_args: tuple[Any, ...] = (redis_url, name, queues, concurrency, pool,
                                             python, cwd, env, app, settings)
        self.log = procs.temp_log(f"worker-{name}-")
        cmd = [python, "-m", "celery", "-A", app, "worker",
               "-n", self.name, "-Q", ",".join(queues), "-c", str(concurrency), "-P", pool,
               "-E", "-l", "INFO", "--without-gossip", "--without-mingle"]
        self.proc = procs.spawn(cmd, log=self.log, cwd=cwd,
                                env={**worker_env(redis_url, **settings), **(env or {})})

    def wait_ready(self, app: Celery, timeout_s: float = 30.0) -> None:
        """Wait until the worker answers a ping; fail at once if it exits.

        The ping waits for the worker's own "ready." log line: a ping sent before that
        waits out its whole timeout, where the log is read in microseconds."""
        procs.wait_ready(self.proc, lambda: self._logged_ready() and self._ping(app),
                         timeout_s, name=f"worker {self.name}", log=self.log,
                         interval_s=0.05)

    def _logged_ready(self) -> bool:
        """True once Celery logged ``NAME ready.`` (its consumer runs)."""
        try:
            return f"{self.name} ready." in self.log.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def _ping(self, app: Celery) -> list[dict[str, Any]] | None:
        """One remote-control ping, on a connection of its own.  A connection the server
        dropped (seen in CI, at a worker's start) counts as "not yet" while the server
        itself still answers; if it does not, the error is the test's failure.

        (Not on the app's pool: kombu keeps one pool per broker URL for the whole
        process, and closing it after a dropped connection made every later acquire on
        that URL fail with "Acquire on closed pool", a test's Coordinator included.)"""
        try:
            with app.connection_for_write() as conn:
                replies: list[dict[str, Any]] = app.control.ping(
                    destination=[self.name], timeout=0.5, connection=conn)
            return replies
        except (redis.ConnectionError, OperationalError, OSError):
            redis.Redis.from_url(self.redis_url, socket_timeout=2).ping()
            return None

    def respawn(self) -> WorkerProcess:
        """A new worker process started as this one was (same name, queues, settings)."""
        url, name, queues, conc, pool, python, cwd, env, app, settings = self._spawn_args
        return WorkerProcess(url, name, queues=queues, concurrency=conc, pool=pool,
                             python=python, cwd=cwd, env=env, app=app, **settings)

    def child_pids(self) -> list[int]:
        """Pids of the pool's child processes."""
        return procs.child_pids(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crashed machine)."""
        procs.kill_group(self.proc)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        procs.stop(self.proc, 20)

    def tail(self, lines: int = 60) -> str:
        return procs.log_tail(self.log, lines)


class _Child(Protocol):
    proc: subprocess.Popen[bytes]


def stop_workers(children: Sequence[_Child], timeout_s: float = 20.0) -> None:
    """Warm shutdown of several workers (or other children with a ``proc``) together:
    SIGTERM to all, then each reaped or, ``timeout_s`` into its turn, SIGKILLed
    (:func:`orchestrator.dev.procs.stop_all`).  One at a time, each took 1.5-2 s."""
    procs.stop_all([c.proc for c in children], timeout_s)


def supervise(workers: list[WorkerProcess]) -> int:
    """Do what a process supervisor (systemd, Compose's ``restart:``) does: replace, in
    place, every worker of ``workers`` whose process has exited.  A Celery worker can
    exit on a Redis restart (kombu's reconnect races the channel's close:
    ``Unrecoverable error: AttributeError(... 'hostname')``; our worker transport,
    :mod:`orchestrator.runtime.broker`, guards the path that was seen), so some fault
    tests that restart Redis run their workers under this, as a deployment runs them
    under a supervisor.  Returns how many it replaced."""
    replaced = 0
    for i, w in enumerate(workers):
        if w.proc.poll() is not None:
            workers[i] = w.respawn()
            replaced += 1
    return replaced
