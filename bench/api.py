"""HTTP API benchmark: ``python -m bench.api``.

Starts its own private Redis (:class:`orchestrator.dev.localredis.RedisServer` on a free
loopback port), one worker process (``celery -A workers.main worker``) and the API
(``python -m orchestrator.api``, one uvicorn process), then measures, with a few
concurrent clients (threads, one keep-alive connection each: the standard library's
``http.client`` by default, :mod:`bench.loadgen`; ``--client httpx``):

* ``submit``: ``POST /v1/workflows/customer_order/runs`` latency p50/p99 and submits/s;
* ``submit + Idempotency-Key``: the same with a fresh key per request (SET NX + EXPIRE);
* ``read``: ``GET /v1/runs/{id}`` of the runs just started;

then, in this process (no HTTP), with the same number of threads:

* ``client: Coordinator.submit``: the Python path that services embedding the
  orchestrator use to start runs (validate, create the run, claim, publish, record);
* ``raw Celery: apply_async``: Celery alone publishing the same canvas (the workflow's
  first unit, built by :func:`orchestrator.runtime.canvas.signature`) to a queue no worker
  reads, with no run store: the floor under a submit, measured in the same run;

The ``submit`` phase runs in ``--rounds`` (3), each followed at once by the raw Celery
arm while the worker still runs that round's runs, then every run ends: the summary gives
medians over the rounds and the per-round ratio of HTTP submits to raw ``apply_async``
(one 1-second phase moves with the machine's pace; a ratio of arms run back to back
does much less).  It reports, for each phase, the CPU seconds its process(es) spent per
request (robust on a shared machine, where wall times drift), then waits for every run to
end and reports end-to-end runs/s (bound by the worker).  Every process it starts is
stopped (by process id) before it exits.  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import redis

from bench.loadgen import KeepAlive, Reply
from bench.report import percentile, ratios, spread
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer, free_loopback_port
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.canvas import signature
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.celeryconf import client_app
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store.keys import Keys
from workflows.order import systems

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = "customer_order"
SKU = "SKU-BENCH"


@dataclass(frozen=True)
class Phase:
    """One measured phase: every request's latency and the wall time of all of them."""

    name: str
    clients: int
    latencies_s: list[float]
    wall_s: float
    errors: int
    cpu_s: float | None = None
    """CPU seconds the serving process(es) spent on the phase (None: not measured)."""

    def row(self) -> tuple[str, ...]:
        lat = sorted(self.latencies_s)
        cpu = "-" if self.cpu_s is None else f"{self.cpu_s / len(lat) * 1000:.2f}"
        return (self.name, str(len(lat)), str(self.clients), f"{self.wall_s:.2f}",
                f"{len(lat) / self.wall_s:.0f}", f"{percentile(lat, 0.5) * 1000:.1f}",
                f"{percentile(lat, 0.99) * 1000:.1f}", f"{lat[-1] * 1000:.1f}",
                str(self.errors), cpu)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (Linux /proc)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_calls(name: str, clients: int, count: int, call: Callable[[int], None]) -> Phase:
    """Make ``count`` calls from ``clients`` threads of this process; time each one and
    the whole, and count this process's CPU seconds."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(count))

    def work() -> None:
        nonlocal errors
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
                failed = 0
            except Exception as exc:  # counted, and the first one shown
                failed = 1
                if not errors:
                    print(f"  {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                errors += failed

    threads = [threading.Thread(target=work) for _ in range(clients)]
    cpu0 = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return Phase(name, clients, latencies, wall, errors, time.process_time() - cpu0)


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ORCH_REDIS_URL": redis_url,
                "ORCH_WORKFLOW_PACKAGES": json.dumps(["workflows"]),
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO),
                                                          env.get("PYTHONPATH")) if p)})
    env.update(extra)
    return env


@contextmanager
def child(cmd: list[str], env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own session with its output in a temp log; stop it on exit."""
    log = procs.temp_log(f"bench-api-{name}-")
    proc = procs.spawn(cmd, log=log, env=env, cwd=REPO)
    try:
        yield proc
    finally:
        code = procs.stop(proc, 20)
        if code not in (0, -signal.SIGTERM):
            print(f"[{name} exited with {code}; log {log}]\n" + procs.log_tail(log, 20),
                  file=sys.stderr)
        else:
            log.unlink(missing_ok=True)


Client = httpx.Client | KeepAlive
Resp = httpx.Response | Reply
CLIENTS = ("stdlib", "httpx")
"""The load's HTTP clients: ``http.client`` keep-alive (:mod:`bench.loadgen`), httpx."""


def connect(kind: str, base_url: str, token: str) -> Client:
    """One client connection of ``kind`` (:data:`CLIENTS`) with the bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    if kind == "httpx":
        return httpx.Client(base_url=base_url, headers=headers, timeout=30)
    return KeepAlive(base_url, headers)


def run_phase(name: str, clients: int, count: int, base_url: str, token: str,
              request: Callable[[Client, int], Resp], ok: Callable[[Resp], bool],
              kind: str = "stdlib") -> tuple[Phase, list[Resp]]:
    """Send ``count`` requests from ``clients`` threads, each on its own keep-alive
    connection of a ``kind`` client; time each one and the whole."""
    latencies: list[float] = []
    responses: list[Resp] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(count))

    def work() -> None:
        nonlocal errors
        with connect(kind, base_url, token) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                resp = request(http, i)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    responses.append(resp)
                    errors += 0 if ok(resp) else 1

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Phase(name, clients, latencies, time.perf_counter() - start, errors), responses


def _created(resp: Resp) -> bool:
    return resp.status_code == 201


def table(rows: Sequence[tuple[str, ...]]) -> str:
    header = ("phase", "requests", "clients", "wall s", "req/s", "p50 ms", "p99 ms",
              "max ms", "errors", "CPU ms/req")
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in allrows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RAW_QUEUE = "bench-api-raw"
"""The queue the raw Celery arm publishes to: no worker reads it; emptied after."""


class InProcess:
    """The in-process arms, on one :class:`Coordinator` of the store at ``url``: the
    client (``Coordinator.submit``) and raw Celery (``apply_async`` of the workflow's
    first unit's canvas, no store, to a queue no worker reads)."""

    def __init__(self, url: str, order: dict[str, object]) -> None:
        settings = Settings(redis_url=url, workflow_packages=("workflows",))
        self.coord = Coordinator(settings, discover(settings.workflow_packages))
        self.order = order
        for _ in range(5):  # warm: compile and store the version, open connections
            self.coord.submit(WORKFLOW, order)
        self.published = 0

    def client(self, clients: int, count: int) -> Phase:
        """``count`` runs started by ``Coordinator.submit`` from ``clients`` threads."""
        def submit(i: int) -> None:
            self.coord.submit(WORKFLOW, self.order)

        return run_calls("client: Coordinator.submit", clients, count, submit)

    def raw(self, clients: int, count: int) -> Phase:
        """``count`` publishes of the first unit's canvas by Celery alone."""
        d = self.coord.compile(WORKFLOW)
        unit = d.plan.unit_map[d.plan.sources[0]]
        app, base = self.coord.app, self.published
        self.published += count

        def raw_publish(i: int) -> None:
            signature(app, d, unit.canvas, f"bench-raw-{base + i}", RAW_QUEUE).apply_async(
                queue=RAW_QUEUE)

        phase = run_calls("raw Celery: apply_async", clients, count, raw_publish)
        self.coord.store.client.delete(RAW_QUEUE)
        return phase


def rounds_summary(submits: Sequence[Phase], raws: Sequence[Phase]) -> str:
    """The HTTP submit and raw ``apply_async`` rates of each round (back to back, the
    worker running the round's runs during both), their medians and per-round ratios."""
    def rate(p: Phase) -> float:
        return len(p.latencies_s) / p.wall_s

    ours, raw = [rate(p) for p in submits], [rate(p) for p in raws]
    p99 = [percentile(p.latencies_s, 0.99) * 1000 for p in submits]
    return "\n".join([
        f"rounds: {len(submits)} (each: HTTP submits, then raw apply_async at once, the "
        "worker running the round's runs through both; then every run ends)",
        f"  HTTP submits/s        {spread(ours, '{:.0f}')}   per round: "
        + ", ".join(f"{v:.0f}" for v in ours),
        f"  raw apply_async/s     {spread(raw, '{:.0f}')}   per round: "
        + ", ".join(f"{v:.0f}" for v in raw),
        f"  HTTP / raw            {spread(ratios(ours, raw))}",
        f"  HTTP p99 ms           {spread(p99, '{:.1f}')}",
        f"  rounds with HTTP >= 500/s: {sum(v >= 500 for v in ours)} of {len(ours)}"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.splitlines()[0])
    p.add_argument("--submits", type=int, default=500, help="requests per phase (500)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of HTTP submits, each followed at once by the raw Celery "
                   "arm (3): medians and per-round ratios")
    p.add_argument("--worker-concurrency", type=int, default=2,
                   help="prefork children of the worker (2; 0: no worker, the API alone "
                   "on the cores, the runs queued and never run)")
    p.add_argument("--drain-timeout-s", type=float, default=600.0,
                   help="longest wait for every run to end (600)")
    p.add_argument("--client", choices=CLIENTS, default="stdlib",
                   help="the load's HTTP client: stdlib (http.client keep-alive, the "
                   "cheapest on the shared cores; the default) or httpx")
    p.add_argument("--api-workers", type=int, default=1,
                   help="serving processes of the API (python -m orchestrator.api "
                   "--workers; 1)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.submits < 1 or args.clients < 1:
        p.error("--rounds, --submits and --clients must be at least 1")

    token = secrets.token_urlsafe(32)
    order = {"order_id": "o-bench", "sku": SKU, "qty": 1, "customer_email": "b@example.com"}
    with RedisServer() as server:
        url = server.url
        r = redis.Redis.from_url(url, decode_responses=True)
        systems.set_stock(r, SKU, 10**9)
        port = free_loopback_port()
        worker_cmd = [sys.executable, "-m", "celery", "-A", "workers.main", "worker",
                      "-n", "bench-api@%h", "-Q", "default", "-c",
                      str(args.worker_concurrency), "-P", "prefork", "-l", "WARNING",
                      "--without-gossip", "--without-mingle", "--without-heartbeat"]
        api_cmd = [sys.executable, "-m", "orchestrator.api", "--port", str(port),
                   "--log-level", "warning", "--workers", str(args.api_workers)]
        # one token drives every phase: its request rate is the throughput measured here,
        # so the per-token limit (ORCH_API_RATE_PER_TOKEN) is out of the way
        api_env = _env(url, ORCH_API_TOKENS=json.dumps(
            [{"token": token, "scopes": ["runs:read", "runs:write", "workflows:read"]}]),
            ORCH_API_RATE_PER_TOKEN="1000000/second")
        alone = args.worker_concurrency == 0  # the API alone: runs are queued, never run
        with (nullcontext(None) if alone else child(worker_cmd, _env(url), "worker")
              ) as worker, child(api_cmd, api_env, "api") as api:
            base = f"http://127.0.0.1:{port}"
            app = client_app(Settings(redis_url=url))

            def up() -> bool:
                for proc, what in ((worker, "worker"), (api, "API")):
                    if proc is not None and proc.poll() is not None:
                        raise SystemExit(f"the {what} exited while starting")
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False
                return ready and (alone or bool(app.control.ping(timeout=0.5)))

            wait_until(up, 60, interval_s=0.2, message="API or worker did not start")
            print(f"redis {url}, API {base} ({args.api_workers} process(es)), worker -c "
                  f"{args.worker_concurrency}, {args.clients} clients ({args.client}), "
                  f"{args.submits} requests per phase", flush=True)
            # warm-up: compile and store the workflow, open connections
            run_phase("warm-up", args.clients, 20, base, token,
                      lambda h, i: h.post(f"/v1/workflows/{WORKFLOW}/runs", json=order),
                      _created, args.client)

            done = Keys(Settings().key_prefix).runs_by_status("succeeded")
            expected = 20

            def drain(what: str) -> None:
                # each phase starts on an idle machine: the worker shares its 2 cores
                if alone:
                    return
                t0 = time.perf_counter()
                wait_until(lambda: r.zcard(done) >= expected, args.drain_timeout_s,
                           interval_s=0.25, message=f"the runs of {what} did not all end")
                if what != "warm-up":
                    n = args.submits
                    print(f"  {what}: its {n} runs ended {time.perf_counter() - t0:.1f} s "
                          f"after the last submit", flush=True)

            drain("warm-up")
            arms = InProcess(url, order)
            expected += 5  # its warm-up runs
            submits: list[Phase] = []
            raws: list[Phase] = []
            subs: list[Resp] = []
            e2e_s = 0.0
            for k in range(1, args.rounds + 1):
                label = "submit" if args.rounds == 1 else f"submit, round {k}"
                cpu0 = tree_cpu_s(api.pid)
                submit, got = run_phase(
                    label, args.clients, args.submits, base, token,
                    lambda h, i: h.post(f"/v1/workflows/{WORKFLOW}/runs", json=order),
                    _created, args.client)
                submits.append(replace(submit, cpu_s=tree_cpu_s(api.pid) - cpu0))
                subs = subs or got
                t_runs = time.perf_counter() - submit.wall_s
                raw = arms.raw(args.clients, args.submits)
                raws.append(raw if args.rounds == 1 else replace(raw, name=f"{raw.name}, "
                                                                 f"round {k}"))
                expected += args.submits
                drain(label)
                e2e_s = e2e_s or time.perf_counter() - t_runs
            cpu0 = tree_cpu_s(api.pid)
            keyed, _ = run_phase(
                "submit + Idempotency-Key", args.clients, args.submits, base, token,
                lambda h, i: h.post(f"/v1/workflows/{WORKFLOW}/runs", json=order,
                                    headers={"Idempotency-Key": f"bench-{i}"}), _created,
                args.client)
            keyed = replace(keyed, cpu_s=tree_cpu_s(api.pid) - cpu0)
            expected += args.submits
            drain("submit + Idempotency-Key")
            ids = [s.json()["run_id"] for s in subs if s.status_code == 201]
            cpu0 = tree_cpu_s(api.pid)
            read, _ = run_phase(
                "read", args.clients, len(ids), base, token,
                lambda h, i: h.get(f"/v1/runs/{ids[i]}"), lambda resp: resp.is_success,
                args.client)
            read = replace(read, cpu_s=tree_cpu_s(api.pid) - cpu0)
            client = arms.client(args.clients, args.submits)
            expected += args.submits
            drain("client: Coordinator.submit")
            print()
            print(table([*(p.row() for p in submits), keyed.row(), read.row(), client.row(),
                         *(p.row() for p in raws)]))
            print("\nCPU ms/req: of the API process(es) for the HTTP phases, of this "
                  "process for the in-process ones (the bench's HTTP client threads are "
                  "idle then)")
            print("\n" + rounds_summary(submits, raws))
            if alone:
                print("\nno worker (--worker-concurrency 0): the API alone on the cores")
            else:
                print(f"\nend to end: {args.submits} runs of {WORKFLOW} (9 steps) in "
                      f"{e2e_s:.1f} s from the first submit to the last end = "
                      f"{args.submits / e2e_s:.1f} runs/s (bound by the worker: -c "
                      f"{args.worker_concurrency} on this machine)")
        r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
