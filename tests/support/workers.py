"""Real Celery worker processes for integration tests (no eager mode, no fakes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from tests.support.wait import wait_until

TEST_PACKAGES = ("workflows", "tests.integration.flows", "tests.integration.flows_queues")


def worker_env(redis_url: str, **settings: Any) -> dict[str, str]:
    """Environment for a worker or coordinator on ``redis_url``."""
    env = dict(os.environ)
    env["ORCH_REDIS_URL"] = redis_url
    env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(list(TEST_PACKAGES))
    for k, v in settings.items():
        env[f"ORCH_{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
    return env


class WorkerProcess:
    """``celery -A workers.main worker`` in a subprocess, with its log in a temp file."""

    def __init__(self, redis_url: str, name: str, *, queues: Sequence[str] = ("default",),
                 concurrency: int = 4, pool: str = "prefork", **settings: Any) -> None:
        self.name = f"{name}@test"
        self.redis_url = redis_url
        self.log = Path(tempfile.mkstemp(prefix=f"worker-{name}-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "celery", "-A", "workers.main", "worker",
               "-n", self.name, "-Q", ",".join(queues), "-c", str(concurrency), "-P", pool,
               "-E", "-l", "INFO", "--without-gossip", "--without-mingle"]
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd, env=worker_env(redis_url, **settings),
                                     stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, app: Celery, timeout_s: float = 30.0) -> None:
        """Wait until the worker answers a ping."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.tail()}")
            return bool(app.control.ping(destination=[self.name], timeout=0.5))
        wait_until(ready, timeout_s, interval_s=0.2, message=f"worker {self.name} not ready")

    def child_pids(self) -> list[int]:
        """Pids of the pool's child processes."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True, check=False).stdout
        return [int(x) for x in out.split()]

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crashed machine)."""
        pids = self.child_pids()
        os.killpg(self.proc.pid, signal.SIGKILL)
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._fh.close()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
