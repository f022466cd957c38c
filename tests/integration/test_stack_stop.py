"""``orchestrator up`` stops everything it started on SIGTERM, as on Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_the_stack(redis_binary: str) -> None:
    log = procs.temp_log("stack-up-")
    env = dict(os.environ)
    env.pop("ORCH_REDIS_URL", None)  # the stack starts its own Redis
    env["PYTHONUNBUFFERED"] = "1"
    children: list[int] = []
    proc = procs.spawn([sys.executable, "-m", "orchestrator.cli", "up", "-c", "1",
                        "--flower-port", str(free_loopback_port()),
                        "--api-port", str(free_loopback_port())], log=log, env=env)
    try:
        procs.wait_ready(proc, lambda: "stack is up" in log.read_text(errors="replace"),
                         120, name="orchestrator up", log=log)
        children = procs.child_pids(proc.pid)
        assert len(children) >= 4, log.read_text()  # redis, worker, flower, api
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0 or proc.returncode in (130, 1), log.read_text()
        wait_until(lambda: not any(_alive(p) for p in children), 30,
                   message=lambda: f"left running: {[p for p in children if _alive(p)]}")
        assert "stack stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            procs.kill_group(proc)
        for p in children:
            if _alive(p):
                os.killpg(p, signal.SIGKILL)
