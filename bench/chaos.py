"""``python -m bench.chaos``: workflows of mixed shapes through faults, counted by the steps.

Each scenario starts its own ``redis-server`` (AOF ``everysec``, ``noeviction``) and its
own workers (prefork), submits runs of five shapes (a chain, a fan-out/fan-in of 8 (a
chord), a zigzag, a random non series-parallel DAG, and a fan-out/fan-in of 24 (units
joined by a counter)) whose steps count their own executions
(:mod:`bench.chaos_steps`), injects its faults, waits for every run to end, and reports:
runs succeeded / failed / stuck, step runs executed more than once, concurrent duplicates,
side effects done other than exactly once, and the seconds from a worker's kill to the
re-run of the steps it was running (p50, max).

Scenarios: ``healthy-threads`` and ``healthy-prefork`` (no fault: 1,000 runs of no-wait
zigzag and random non series-parallel DAGs, where many parents end at once), ``kills`` (a
random worker SIGKILLed every few seconds, then restarted),
``redis`` (Redis SIGKILLed mid-run and restarted from its AOF), ``api`` (the HTTP API
SIGKILLed and restarted while callers wait on ``?wait``), ``long`` (a step that runs
far longer than the lease and the visibility timeout), ``cut`` (the link between one
worker's host, a network namespace, and Redis is cut for longer than a lease, then
restored; needs root and ``ip``), ``all`` (kills, a Redis restart and a cut together).
``--quick`` runs small versions (the test suite runs them too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import kombu.exceptions
import redis

from bench.chaos_steps import FAST, SHAPES, long_workflow
from bench.stack import PACKAGES, REPO
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer, free_loopback_port
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- chaos:start -->", "<!-- chaos:end -->"
FINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Result:
    """What one scenario measured."""

    scenario: str
    runs: int
    succeeded: int
    failed: int
    stuck: int
    executed_twice: int
    overlaps: int
    effects_not_once: int
    rerun_s: list[float]
    faults: list[str]
    seconds: float

    def row(self) -> str:
        p50 = f"{statistics.median(self.rerun_s):.1f}" if self.rerun_s else "—"
        mx = f"{max(self.rerun_s):.1f}" if self.rerun_s else "—"
        return (f"| {self.scenario} | {self.runs} | {self.succeeded} | {self.failed} | "
                f"{self.stuck} | {self.executed_twice} | {self.overlaps} | "
                f"{self.effects_not_once} | {p50} | {mx} | {'; '.join(self.faults)} |")

    @property
    def ok(self) -> bool:
        """Every run succeeded; nothing ran twice at once; every side effect once; and with
        no fault injected, no step function ran twice at all."""
        return (self.succeeded == self.runs and self.overlaps == 0
                and self.effects_not_once == 0
                and (bool(self.faults) or self.executed_twice == 0))


HEADER = ("| scenario | runs | succeeded | failed | stuck | step runs executed more than "
          "once | concurrent duplicates | side effects not exactly once | kill to re-run "
          "p50, s | max, s | faults |\n|---|---|---|---|---|---|---|---|---|---|---|")


class Namespace:
    """A test host: a network namespace joined to this one by a veth pair, so that a
    worker inside it reaches Redis over a link this host can cut (``ip`` as root)."""

    def __init__(self, name: str, host_ip: str, ns_ip: str) -> None:
        self.name, self.host_ip, self.ns_ip = name, host_ip, ns_ip
        self.host_if, self.ns_if = f"{name}-h", f"{name}-n"

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and shutil.which("ip") is not None

    def _ip(self, *args: str, ns: bool = False) -> None:
        cmd = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def create(self) -> Namespace:
        self.delete()
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self._ip("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if, ns=True)
        self._ip("link", "set", self.ns_if, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)
        return self

    def cut(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.host_if, "up")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@dataclass
class Cluster:
    """A private Redis and worker processes, with the faults the scenarios inject."""

    workers: int = 3
    concurrency: int = 2
    pool: str = "prefork"
    settings: dict[str, Any] = field(default_factory=dict)
    ns: Namespace | None = None
    """If given, worker 0 runs in this namespace and reaches Redis over its link."""
    api: Any = None
    api_port: int = 0
    api_token: str = ""
    apart: bool = False
    """The broker on a Redis of its own (``ORCH_BROKER_URL``), beside the store's."""
    server: RedisServer = field(init=False)
    broker: RedisServer | None = None
    procs: list[Any] = field(default_factory=list)
    kills: list[tuple[float, set[int]]] = field(default_factory=list)
    faults_at: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, what) of each fault other than a worker kill."""

    @contextlib.contextmanager
    def _fault(self, what: str) -> Iterator[None]:
        """Note the span of a fault injected within, for :meth:`timeline`."""
        t0 = time.time()
        try:
            yield
        finally:
            self.faults_at.append((t0, time.time(), what))

    def timeline(self, started: float) -> list[str]:
        """Every fault, seconds after ``started``: kills by worker pids, the others with
        their span."""
        spans = [(a, f"{what} +{a - started:.1f}-{b - started:.1f} s")
                 for a, b, what in self.faults_at]
        kills = [(t, f"kill +{t - started:.1f} s") for t, _ in self.kills]
        return [text for _, text in sorted(spans + kills)]

    def start(self) -> Cluster:
        extra: tuple[str, ...] = ("--maxmemory-policy", "noeviction")
        if self.ns is not None:
            self.ns.create()
            # reachable from our own namespace only (its /30 link) and loopback
            extra += ("--bind", f"127.0.0.1 {self.ns.host_ip}", "--protected-mode", "no")
        self.server = RedisServer(appendonly=True, extra_args=extra).start()
        if self.apart:
            self.broker = RedisServer(appendonly=True, extra_args=extra).start()
        self.procs = [self._spawn(i) for i in range(self.workers)]
        return self

    def env(self, i: int = 0) -> dict[str, str]:
        env = dict(os.environ)
        env["ORCH_REDIS_URL"] = self.server.url
        if self.broker is not None:
            env["ORCH_BROKER_URL"] = self.broker.url
        if self.ns is not None and i == 0:
            env["ORCH_REDIS_URL"] = f"redis://{self.ns.host_ip}:{self.server.port}/0"
            if self.broker is not None:
                env["ORCH_BROKER_URL"] = f"redis://{self.ns.host_ip}:{self.broker.port}/0"
        env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(list(PACKAGES))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH"))
                                            if p)
        for k, v in self.settings.items():
            env[f"ORCH_{k.upper()}"] = str(v)
        return env

    def _spawn(self, i: int) -> Any:
        log = procs.temp_log(f"chaos-worker{i}-")
        prefix = self.ns.prefix() if self.ns is not None and i == 0 else []
        return procs.spawn([*prefix, sys.executable, "-m", "celery", "-A", "workers.main",
                            "worker",
                            "-n", f"chaos{i}@%h", "-Q", "default", "-c",
                            str(self.concurrency), "-P", self.pool, "-l", "INFO",
                            "--without-gossip", "--without-mingle"],
                           log=log, env=self.env(i), cwd=REPO,
                           death_signal=signal.SIGKILL)

    def kill_worker(self, rng: random.Random, spare: int | None = None) -> str:
        i = rng.choice([j for j in range(len(self.procs)) if j != spare])
        p = self.procs[i]
        pids = {p.pid, *procs.child_pids(p.pid)}
        procs.kill_group(p)
        self.kills.append((time.time(), pids))
        time.sleep(1.0)
        self.procs[i] = self._spawn(i)
        return f"worker {i}"

    def restart_redis(self, down_s: float = 2.0) -> str:
        servers = [self.server, *([self.broker] if self.broker else [])]
        with self._fault("Redis down"):
            for srv in servers:
                srv.kill()
            time.sleep(down_s)
            for srv in servers:
                srv.restart()
        what = "both Redis servers" if self.broker else "Redis"
        return f"{what} SIGKILL, {down_s:.0f} s down, AOF restart"

    def start_api(self) -> None:
        """The HTTP API as a process of its own (restartable), with one token."""
        self.api_port = free_loopback_port()
        self.api_token = secrets.token_urlsafe(24)
        self._spawn_api()

    def _spawn_api(self) -> None:
        env = self.env(1)
        env["ORCH_API_TOKENS"] = json.dumps([{"token": self.api_token, "name": "chaos",
                                              "scopes": ["runs:read", "runs:write"]}])
        self.api = procs.spawn([sys.executable, "-m", "orchestrator.api", "--host",
                                "127.0.0.1", "--port", str(self.api_port)],
                               log=procs.temp_log("chaos-api-"), env=env, cwd=REPO,
                               death_signal=signal.SIGKILL)
        procs.wait_ready(self.api, self._api_ready, 60, name="chaos API")

    def _api_ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def restart_api(self) -> str:
        with self._fault("API down"):
            procs.kill_group(self.api)
            time.sleep(1.0)
            self._spawn_api()
        return "API SIGKILL and restart mid-wait"

    def cut_link(self, down_s: float) -> str:
        assert self.ns is not None
        with self._fault("worker 0 cut"):
            self.ns.cut()
            time.sleep(down_s)
            self.ns.restore()
        return f"worker 0's link to Redis cut for {down_s:.0f} s"

    def stop(self) -> None:
        if self.ns is not None:
            self.ns.restore()
        if self.api is not None:
            procs.stop(self.api, 10)
        procs.stop_all(self.procs, 30)
        self.server.close()
        if self.broker is not None:
            self.broker.close()
        if self.ns is not None:
            self.ns.delete()


SLOW_RERUN_S = 20.0
"""A kill-to-re-run slower than this is printed with the faults' timeline."""


def submit_and_wait(cluster: Cluster, workflow: str, key: str, out: list[str],
                    deadline_s: float) -> None:
    """What a careful HTTP caller does: submit with an Idempotency-Key and ``?wait``; on a
    lost connection (the API restarted), submit again with the same key (the same run)
    and keep waiting, until the run has ended."""
    base = f"http://127.0.0.1:{cluster.api_port}/v1"
    headers = {"Authorization": f"Bearer {cluster.api_token}", "Idempotency-Key": key}
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            resp = httpx.post(f"{base}/workflows/{workflow}/runs", params={"wait": 20},
                              headers=headers, json={}, timeout=30)
            if resp.status_code in (200, 201, 202):
                body = resp.json()
                if body["run_id"] not in out:
                    out.append(body["run_id"])
                if body["status"] in FINAL:
                    return
            else:
                time.sleep(0.5)
        except httpx.HTTPError:
            time.sleep(0.5)


def measure(cluster: Cluster, coord: Coordinator, run_ids: Sequence[str],
            scenario: str, faults: list[str], started: float) -> Result:
    """Read the runs and the steps' own counts."""
    r = redis.Redis.from_url(cluster.server.url, decode_responses=True)
    statuses = [r.hget(coord.store.keys.run(rid), "status") for rid in run_ids]
    execs = {k: int(v) for k, v in r.hgetall("chaos:exec").items()}
    overlaps = sum(int(v) for v in r.hgetall("chaos:overlap").values())
    effects = {k: int(v) for k, v in r.hgetall("chaos:effects").items()}
    not_once = sum(1 for k in execs if effects.get(k, 0) != 1)
    for k in [k for k in execs if effects.get(k, 0) != 1][:5]:  # say which, to look into
        print(f"side effect of {k} done {effects.get(k, 0)} times (executed {execs[k]}, "
              f"effect key {'set' if r.exists(f'chaos:effect:{k}') else 'absent'})",
              file=sys.stderr)
    starts = [json.loads(x) for x in r.lrange("chaos:starts", 0, -1)]
    ends = {(k, pid) for k, _t, pid in (json.loads(x) for x in r.lrange("chaos:ends", 0, -1))}
    stuck = [rid for rid, s in zip(run_ids, statuses, strict=True) if s not in FINAL]
    for rid in stuck[:5]:  # say why, for whoever reads the output
        steps = {k: json.loads(v).get("status") for k, v in
                 r.hgetall(coord.store.keys.steps(rid)).items()}
        leases = r.hgetall(coord.store.keys.leases(rid))
        done = sorted(r.smembers(coord.store.keys.units_done(rid)))
        print(f"stuck run {rid}: steps {steps}; leases {leases}; units done {done}",
              file=sys.stderr)
    rerun: list[float] = []
    for tk, pids in cluster.kills:
        cut = {k for k, t, pid in starts if pid in pids and t < tk and (k, pid) not in ends}
        for key in cut:
            later = [(t, pid) for k, t, pid in starts if k == key and t > tk]
            if later:
                rerun.append(min(later)[0] - tk)
                if min(later)[0] - tk > SLOW_RERUN_S:  # say which, to look into
                    print(f"slow re-run: {key} cut by the kill at +{tk - started:.1f} s "
                          f"(pids {sorted(pids)}), ran again at "
                          f"+{min(later)[0] - started:.1f} s in pid {min(later)[1]}; "
                          f"faults: {', '.join(cluster.timeline(started))}", file=sys.stderr)
    # retention: every key of an ended run carries a TTL (stragglers' writes included)
    no_ttl = [k for k in r.scan_iter(f"{coord.store.keys.run('')}*", count=1000)
              if r.ttl(k) == -1 and (r.hget(coord.store.keys.run(k.split(":")[2]), "status")
                                     in FINAL)]
    if no_ttl:
        faults = [*faults, f"{len(no_ttl)} keys of ended runs without a TTL"]
    return Result(scenario, len(run_ids), statuses.count("succeeded"),
                  statuses.count("failed"), sum(1 for s in statuses if s not in FINAL),
                  sum(1 for n in execs.values() if n > 1), overlaps, not_once, rerun, faults,
                  time.time() - started)


def run_scenario(name: str, runs: int, *, kill_every_s: float = 4.0,
                 redis_restart_at_s: float | None = None, cut_at_s: float | None = None,
                 api_restart_at_s: float | None = None, pool: str = "prefork",
                 concurrency: int = 2, fast: bool = False,
                 cut_s: float = 12.0, deadline_s: float = 600,
                 settings: dict[str, Any] | None = None, long_ms: int | None = None,
                 apart: bool = False, progress: Callable[[str], None] = print) -> Result:
    """One scenario (see the module docstring); returns its figures."""
    ns = Namespace("orchchaos", "10.213.7.1", "10.213.7.2") if cut_at_s is not None else None
    cluster = Cluster(settings=settings or {}, ns=ns, pool=pool,
                      concurrency=concurrency, apart=apart).start()
    try:
        s = Settings(redis_url=cluster.server.url, workflow_packages=PACKAGES,
                     broker_url=cluster.broker.url if cluster.broker else "",
                     **(settings or {}))
        coord = Coordinator(s, discover(s.workflow_packages))
        def pong(i: int) -> Any:
            """The worker's answer to a ping; None while it, or the link, is not ready (a
            broker connection dropped while a worker starts is retried, not fatal)."""
            try:
                return coord.app.control.ping(
                    destination=[f"chaos{i}@{os.uname().nodename}"], timeout=0.5)
            except (OSError, redis.RedisError, kombu.exceptions.OperationalError) as exc:
                progress(f"{name}: ping of chaos worker {i} failed ({exc}); retrying")
                return None

        for i, p in enumerate(cluster.procs):
            procs.wait_ready(p, lambda i=i: pong(i), 60, name=f"chaos worker {i}")
        shapes_ = (list(FAST) if fast else list(SHAPES)) if long_ms is None else [
            long_workflow(long_ms)]
        started = time.time()
        run_ids: list[str] = []
        waiters: list[threading.Thread] = []
        if api_restart_at_s is not None:  # a quarter of the runs come over HTTP, waiting
            cluster.start_api()
            for wf in shapes_:
                coord.compile(wf)  # stored, so the API can read its versions
        for i in range(runs):
            wf = shapes_[i % len(shapes_)]
            if api_restart_at_s is not None and i % 4 == 0:
                th = threading.Thread(target=submit_and_wait, daemon=True,
                                      args=(cluster, wf.name, f"chaos-{i}", run_ids,
                                            deadline_s))
                th.start()
                waiters.append(th)
            else:
                run_ids.append(coord.submit(wf))
        progress(f"{name}: {runs} runs submitted")
        faults: list[str] = []
        stop = threading.Event()
        rng = random.Random(5)

        def inject() -> None:
            next_kill = time.time() + kill_every_s
            restarted = redis_restart_at_s is None
            was_cut = cut_at_s is None
            api_done = api_restart_at_s is None
            while not stop.wait(0.2):
                now = time.time()
                if not api_done and now - started >= (api_restart_at_s or 0):
                    faults.append(cluster.restart_api())
                    api_done = True
                if not was_cut and now - started >= (cut_at_s or 0):
                    faults.append(cluster.cut_link(cut_s))
                    was_cut = True
                if not restarted and now - started >= (redis_restart_at_s or 0):
                    faults.append(cluster.restart_redis())
                    restarted = True
                if kill_every_s > 0 and now >= next_kill:
                    faults.append("kill " + cluster.kill_worker(rng, spare=0 if ns else None))
                    next_kill = time.time() + kill_every_s

        t = threading.Thread(target=inject, daemon=True)
        t.start()
        deadline = time.time() + deadline_s
        for th in waiters:
            th.join(max(1.0, deadline - time.time()))
        r = redis.Redis.from_url(cluster.server.url, decode_responses=True)
        while time.time() < deadline:
            try:
                done = sum(1 for rid in run_ids
                           if r.hget(coord.store.keys.run(rid), "status") in FINAL)
            except redis.RedisError:
                done = -1
            if done == len(run_ids):
                break
            time.sleep(0.5)
        stop.set()
        t.join(30)
        kills = sum(1 for f in faults if f.startswith("kill"))
        summary = [f"{kills} worker kills"] if kills else []
        summary += [f for f in faults if not f.startswith("kill")]
        result = measure(cluster, coord, run_ids, name, summary, started)
        progress(f"{name}: {result.row()}")
        return result
    finally:
        cluster.stop()


SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy-threads": {"kill_every_s": 0, "fast": True, "pool": "threads",
                        "concurrency": 32, "runs": 1000},
    "healthy-prefork": {"kill_every_s": 0, "fast": True, "runs": 1000},
    "kills": {"kill_every_s": 4.0},
    "redis": {"kill_every_s": 0, "redis_restart_at_s": 6.0},
    "long": {"kill_every_s": 0, "long_ms": 10_000,
             "settings": {"lease_s": 2.0, "visibility_timeout_s": 3}},
    "cut": {"kill_every_s": 0, "cut_at_s": 4.0},
    "api": {"kill_every_s": 0, "api_restart_at_s": 5.0},
    "all": {"kill_every_s": 4.0, "redis_restart_at_s": 10.0, "cut_at_s": 25.0,
            "api_restart_at_s": 40.0},
}


def write_doc(results: list[Result], note: str) -> None:
    """Replace the generated section of docs/reliability.md."""
    text = DOC.read_text(encoding="utf-8")
    body = (f"{START}\n{note}\n\n{HEADER}\n" + "\n".join(r.row() for r in results)
            + f"\n{END}")
    if START in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a] + body + text[b:]
    else:
        text = text.rstrip() + "\n\n## Chaos (`python -m bench.chaos`)\n\n" + body + "\n"
    DOC.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios; exit 1 if any run did not succeed or anything ran twice at once."""
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small versions (~3 min)")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    p.add_argument("--runs", type=int, help="runs per scenario (default 200, quick 24)")
    p.add_argument("--no-write", action="store_true", help="do not update the doc")
    p.add_argument("--broker-apart", action="store_true", help="the broker on a Redis of "
                   "its own (ORCH_BROKER_URL); a Redis fault kills both; writes no doc")
    args = p.parse_args(argv)
    runs = args.runs or (24 if args.quick else 200)
    results = []
    for name in args.only or list(SCENARIOS):
        kw = dict(SCENARIOS[name])
        n = 4 if name == "long" else runs
        fixed = kw.pop("runs", None)
        if fixed and not args.runs:
            n = fixed if not args.quick else runs
        results.append(run_scenario(name, n, apart=args.broker_apart, **kw))
    print(HEADER)
    for res in results:
        print(res.row())
    if not args.no_write and not args.quick and not args.broker_apart:
        write_doc(results, f"Generated by `python -m bench.chaos` on "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (3 workers, "
                  "prefork -c 2 unless the scenario says otherwise, Redis AOF everysec, "
                  "default lease and visibility timeout unless the scenario says "
                  "otherwise).")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
