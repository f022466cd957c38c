"""The benchmark's own processes: a private Redis and the two arms' workers.

Nothing here touches a Redis or a worker the benchmark did not start: the server is an
:class:`orchestrator.dev.localredis.RedisServer` on a free loopback port, and every worker is
a child process in its own session, stopped (then killed if need be) by process id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.raw import RAW_QUEUE
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until

PACKAGES = ("workflows", "bench.flows", "bench.chaos_steps")
ORCH_QUEUE = "default"
REPO = Path(__file__).resolve().parent.parent


def env_for(redis_url: str) -> dict[str, str]:
    """Environment of a worker of either arm on ``redis_url``."""
    env = dict(os.environ)
    env["ORCH_REDIS_URL"] = redis_url
    env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(list(PACKAGES))
    env["ORCH_DEFAULT_QUEUE"] = ORCH_QUEUE
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Worker:
    """One ``celery worker`` process of an arm (``orch`` or ``raw``)."""

    arm: str
    pool: str
    concurrency: int
    redis_url: str
    module: str = ""
    """The ``celery -A`` app module; default: the orch or raw arm's."""
    queue: str = ""
    """The queue it consumes; default: the orch or raw arm's."""
    env: dict[str, str] = field(default_factory=dict)
    """More environment (settings) for the worker."""
    tag: str = ""
    """Added to the worker's name (two workers of one arm and pool on one host)."""
    proc: subprocess.Popen[bytes] = field(init=False)
    log: Path = field(init=False)

    @property
    def name(self) -> str:
        return f"bench-{self.arm}{self.tag}-{self.pool}@{os.uname().nodename}"

    def start(self) -> Worker:
        module, queue = (("workers.main", ORCH_QUEUE) if self.arm == "orch"
                         else ("bench.raw_main", RAW_QUEUE))
        module, queue = self.module or module, self.queue or queue
        cmd = [sys.executable, "-m", "celery", "-A", module, "worker", "-n", self.name,
               "-Q", queue, "-c", str(self.concurrency), "-P", self.pool, "-l", "WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.log = procs.temp_log(f"bench-{self.arm}-")
        # SIGTERM if the benchmark dies: no orphan workers.
        self.proc = procs.spawn(cmd, log=self.log, env=env_for(self.redis_url) | self.env,
                                cwd=REPO,
                                death_signal=signal.SIGTERM)
        return self

    def wait_ready(self, app: Celery, timeout_s: float = 60.0) -> None:
        """Wait until the worker answers a ping (its pool is up and consuming).

        Raises:
            ChildExited: The worker exited first (its log's tail in the message).
            WaitTimeout: It did not answer within ``timeout_s``.
        """
        procs.wait_ready(
            self.proc, lambda: app.control.ping(destination=[self.name], timeout=0.5),
            timeout_s, name=f"worker {self.name}", log=self.log)

    def pids(self) -> list[int]:
        """The worker's main process and its pool children."""
        return [self.proc.pid, *procs.child_pids(self.proc.pid)]

    def rss_split(self) -> tuple[int, int]:
        """Resident memory of (the main process, all pool children)."""
        main, *children = self.pids()
        return _rss(main), sum(_rss(p) for p in children)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the process group if it lingers.

        The log is deleted after a clean exit and kept (its path printed) otherwise.
        """
        stop_workers([self])

    def _stopped(self, code: int) -> None:
        if code == 0:
            self.log.unlink(missing_ok=True)
        else:
            print(f"worker {self.name} exited {code}; log: {self.log}", file=sys.stderr)


def stop_workers(workers: Sequence[Worker]) -> None:
    """:meth:`Worker.stop` for several workers at once: they shut down in parallel."""
    for w, code in zip(workers, procs.stop_all([w.proc for w in workers], 20), strict=True):
        w._stopped(code)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class Stack:
    """A private Redis plus, per phase, one worker for each arm."""

    def __init__(self) -> None:
        self.server = RedisServer(extra_args=("--maxmemory-policy", "noeviction"))
        self.workers: list[Worker] = []

    def start(self) -> Stack:
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    @contextmanager
    def workers_for(self, pool: str, concurrency: int, app: Celery
                    ) -> Iterator[tuple[Worker, Worker]]:
        """Both arms' workers with the same pool and concurrency, for one phase."""
        pair = (Worker("orch", pool, concurrency, self.url),
                Worker("raw", pool, concurrency, self.url))
        self.workers.extend(pair)
        try:
            for w in pair:
                w.start()
            for w in pair:
                w.wait_ready(app)
            yield pair
        finally:
            stop_workers(pair)
            for w in pair:
                self.workers.remove(w)

    def close(self) -> None:
        stop_workers(self.workers)
        self.workers.clear()
        self.server.close()


# --- Redis counters ---------------------------------------------------------------------


def reset_stats(r: redis.Redis) -> None:
    """``CONFIG RESETSTAT``: zero the command and I/O counters."""
    r.config_resetstat()


def command_counts(r: redis.Redis) -> dict[str, int]:
    """Calls per command since the last reset (``INFO commandstats``)."""
    stats: dict[str, Any] = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def command_usec(r: redis.Redis) -> int:
    """Server time spent executing commands since the last reset, in microseconds."""
    stats: dict[str, Any] = r.info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items()
               if k not in ("cmdstat_info", "cmdstat_config|resetstat"))


def server_cpu_usec(r: redis.Redis) -> int:
    """CPU the Redis server's main thread has used since it started (user + system,
    ``INFO cpu``), in microseconds: every command, script, parse and socket write it
    served, each counted once.  (``INFO commandstats`` counts a command a script calls on
    its own line and again in the script's ``EVALSHA``, so summing its ``usec``
    overstates a scripted workload.)"""
    cpu: dict[str, Any] = r.info("cpu")
    user = cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])
    sys_ = cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"])
    return round((float(user) + float(sys_)) * 1e6)


def reads_processed(r: redis.Redis) -> int:
    """``total_reads_processed``: socket reads Redis served, about one per round trip."""
    return int(r.info("stats")["total_reads_processed"])


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def purge(r: redis.Redis, queues: Sequence[str]) -> None:
    """Drop every message left in ``queues``."""
    if queues:
        r.delete(*queues)


def settle(r: redis.Redis, queues: Sequence[str], timeout_s: float = 30.0) -> None:
    """Wait until ``queues`` are empty and no message is unacked."""
    def empty() -> bool:
        return all(r.llen(q) == 0 for q in queues) and r.hlen("unacked") == 0
    def left() -> str:
        held = [json.loads(v)[0]["headers"].get("task", "?")
                for v in r.hvals("unacked")[:5]]
        return (f"queues {queues} not drained ({[r.llen(q) for q in queues]} messages, "
                f"{r.hlen('unacked')} unacked: {held})")
    wait_until(empty, timeout_s, interval_s=0.05, message=left)
