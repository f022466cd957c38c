"""``python -m bench.rates``: rate limits across the pool.

1. **Limiters side by side** (no Celery): ``--clients`` threads, each with its own Redis
   connection, start "calls" as fast as a 10/s budget lets them for ``--limiter-s``
   seconds, through (a) ours, ``store/lua/rate_limit.lua`` (a GCRA that reserves the next
   start: one round trip, then the caller sleeps until its start), and (b) the maintained
   ``limits`` package (``MovingWindowRateLimiter`` on its Redis storage: ``hit`` or not;
   a refused caller sleeps until the window's reset and tries again).  Printed: starts
   against the budget, the most starts in any one second, and Redis commands per start.
2. **On the pool**: ``--workers`` workers (prefork, ``--concurrency`` each) on a private
   Redis; enough runs of a step limited to ``--rate`` to keep it busy for ``--seconds``;
   the starts in the middle ``--seconds`` window against the budget (±%).  Meanwhile,
   ``--side`` unlimited one-step runs: their time to finish is compared with the same
   batch on idle workers (a limited step that waits holds no worker slot, so the ratio
   stays near 1).

Figures are printed, not asserted; ``tests/integration/test_rate_limits.py`` checks the
behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import redis

from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store import scripts

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["bench.rate_flows"]
STAMPS = "bench:rate:starts"


def _commands(r: redis.Redis) -> int:
    return sum(int(v["calls"]) for v in r.info("commandstats").values()
               if isinstance(v, dict))


def limiter_compare(url: str, clients: int, seconds: float, rate: int) -> None:
    """Part 1: ours against ``limits``, the same budget, the same callers."""
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    def run(name: str, start_one: object) -> None:
        admin = redis.Redis.from_url(url, decode_responses=True)
        admin.flushall()
        admin.config_resetstat()
        stamps: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def client() -> None:
            fn = start_one()  # type: ignore[operator]
            while time.monotonic() < stop:
                if fn():
                    with lock:
                        stamps.append(time.monotonic())

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        stamps.sort()
        peak = max((sum(1 for u in stamps[i:] if u < s + 1.0) for i, s in enumerate(stamps)),
                   default=0)
        cmds = _commands(admin) - 1  # the CONFIG RESETSTAT itself
        print(f"  {name:<24} starts {len(stamps):>4} in {elapsed:4.1f} s "
              f"({len(stamps) / elapsed:5.2f}/s for a budget of {rate}/s)  most in one second "
              f"{peak:>3}  Redis commands per start {cmds / max(1, len(stamps)):5.1f}")

    interval_ms = 1000 // rate

    def ours() -> object:
        r = redis.Redis.from_url(url)

        def one() -> bool:
            wait_ms = int(scripts.RATE_LIMIT(r, ["bench:gcra"], [interval_ms]))
            if wait_ms > 0:
                time.sleep(wait_ms / 1000)  # its start is reserved: no second call
            return True
        return one

    def theirs() -> object:
        storage = RedisStorage(url.replace("redis://", "redis://", 1))
        limiter = MovingWindowRateLimiter(storage)
        item = RateLimitItemPerSecond(rate)

        def one() -> bool:
            if limiter.hit(item, "bench"):
                return True
            reset = limiter.get_window_stats(item, "bench").reset_time
            time.sleep(max(0.001, reset - time.time()))
            return False
        return one

    print(f"limiters, {clients} callers, {rate}/s, {seconds:.0f} s:")
    run("ours (GCRA, reserving)", ours)
    run("limits (moving window)", theirs)


def _worker(url: str, name: str, concurrency: int) -> tuple[object, Path]:
    env = dict(os.environ, ORCH_REDIS_URL=url, ORCH_WORKFLOW_PACKAGES=json.dumps(PACKAGES),
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-n", name,
           "-c", str(concurrency), "-P", "prefork", "-l", "WARNING", "--without-gossip",
           "--without-mingle", "--without-heartbeat"]
    log = procs.temp_log("bench-rates-")
    return procs.spawn(cmd, log=log, env=env, cwd=REPO, death_signal=signal.SIGTERM), log


def pool(url: str, workers: int, concurrency: int, rate: int, seconds: float,
         side: int) -> None:
    """Part 2: the budget on real workers, and whether waiting steps hold slots."""
    os.environ["BENCH_RATE"] = f"{rate}/s"
    settings = Settings(redis_url=url, workflow_packages=tuple(PACKAGES))
    coord = Coordinator(settings, discover(settings.workflow_packages))
    r = redis.Redis.from_url(url, decode_responses=True)
    started = [_worker(url, f"rates{i}@bench", concurrency) for i in range(workers)]
    try:
        for i, (proc, log) in enumerate(started):
            procs.wait_ready(proc, lambda i=i: coord.app.control.ping(  # type: ignore[misc]
                destination=[f"rates{i}@bench"], timeout=0.5), 60, name=f"rates{i}",
                log=log)

        def side_batch() -> float:
            t0 = time.monotonic()
            ids = [coord.submit("bench_rate_free") for _ in range(side)]
            wait_until(lambda: all(coord.store.run(i).status.terminal for i in ids), 120)
            return time.monotonic() - t0

        idle = side_batch()
        total = int(rate * (seconds + 10))
        for _ in range(total):
            coord.submit("bench_rate_limited")
        time.sleep(5)  # the backlog waits in the store
        busy = side_batch()
        wait_until(lambda: r.llen(STAMPS) >= total, seconds + 120, interval_s=0.5)
        stamps = sorted(float(x) for x in r.lrange(STAMPS, 0, -1))
        lo = stamps[0] + 5.0
        window = [s for s in stamps if lo <= s < lo + seconds]
        measured = len(window) / seconds
        print(f"pool, {workers} workers x {concurrency}, budget {rate}/s, {total} limited "
              f"runs:")
        print(f"  starts in the middle {seconds:.0f} s: {len(window)} = {measured:.2f}/s "
              f"({(measured / rate - 1) * 100:+.1f} % of the budget)")
        print(f"  {side} unlimited runs: {idle:.2f} s on idle workers, {busy:.2f} s while "
              f"the limited backlog waited ({busy / idle:.2f}x): waiting steps hold no slot")
    finally:
        for proc, _ in started:
            procs.stop(proc, 20)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=10)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--limiter-s", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--side", type=int, default=100)
    args = ap.parse_args(argv)
    with RedisServer() as server:
        limiter_compare(server.url, args.clients, args.limiter_s, args.rate)
        redis.Redis.from_url(server.url).flushall()
        pool(server.url, args.workers, args.concurrency, args.rate, args.seconds, args.side)
    return 0


if __name__ == "__main__":
    sys.exit(main())
