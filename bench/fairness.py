"""Fair-sharing benchmark of the HTTP API: ``python -m bench.fairness``.

Issue #15's figure: token A keeps ``--streams`` (300) server-sent event streams open at
once (each refused one retries after its ``Retry-After``), while token B submits runs at a
steady pace; B's submit latency (p50, p99) is compared with the same submits on an idle
server, in alternating rounds (idle, loaded, idle, loaded...).  ``/readyz`` is probed
throughout the loaded phases.

Starts its own private Redis and the API (``python -m orchestrator.api``, one uvicorn
process, default limits unless given) and no worker: the runs stay queued, so A's streams
last until A closes them.  A's clients run in a child process of their own
(``--streamer``), so that they do not share this process's interpreter with B's clients.
Every process it starts is stopped (by process id) before it exits.  Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.api import REPO, _env, child
from bench.report import percentile
from orchestrator.dev.localredis import RedisServer, free_loopback_port
from orchestrator.dev.waiting import wait_until

WORKFLOW = "customer_order"
SCOPES = ["runs:read", "runs:write", "workflows:read"]


def _order(i: int) -> dict[str, object]:
    return {"order_id": f"o-fair-{i}", "sku": "SKU-FAIR", "qty": 1,
            "customer_email": "fair@example.com"}


# --- token A: the streams (child process) --------------------------------------------------


async def _stream_forever(http: httpx.AsyncClient, path: str, seen: Counter[str],
                          holding: list[int], stop: asyncio.Event, retry: bool) -> None:
    """Hold one stream of ``path``; when refused, wait its Retry-After and ask again
    (without ``retry``: give up)."""
    while not stop.is_set():
        try:
            async with http.stream("GET", path) as resp:
                seen[str(resp.status_code)] += 1
                if resp.status_code == 200:
                    holding[0] += 1
                    try:
                        async for _ in resp.aiter_bytes():
                            if stop.is_set():
                                break
                    finally:
                        holding[0] -= 1
                    continue
                await resp.aread()
                retry_s = float(resp.headers.get("Retry-After") or 1)
        except httpx.HTTPError as exc:
            seen[type(exc).__name__] += 1
            retry_s = 1.0
        if not retry:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_s)


async def _streamer(base: str, token: str, run_id: str, count: int, retry: bool
                    ) -> dict[str, object]:
    seen: Counter[str] = Counter()
    holding = [0]
    stop = asyncio.Event()
    # One client (one connection) per simulated caller: a shared httpx pool of hundreds
    # of idle keep-alive connections costs its owner most of a core (it polls each one
    # on every request), which would load this 2-core machine, not the API.
    async with AsyncExitStack() as clients:
        https = [await clients.enter_async_context(httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60, connect=30))) for _ in range(count)]
        tasks = [asyncio.create_task(_stream_forever(http, f"/v1/runs/{run_id}/events",
                                                     seen, holding, stop, retry))
                 for http in https]
        while sum(seen.values()) < count:  # every client has had its first answer
            await asyncio.sleep(0.05)
        print(json.dumps({"ready": True, "holding": holding[0], "answers": dict(seen)}),
              flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        stop.set()
        held_at_end = holding[0]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"holding": held_at_end, "answers": dict(seen)}


def streamer_main(args: argparse.Namespace) -> int:
    """``--streamer``: token A's clients; one JSON line when all have an answer, another
    (the totals) when stdin gets a line or closes."""
    summary = asyncio.run(_streamer(args.base, args.token, args.run_id, args.streams,
                                    not args.no_retry))
    print(json.dumps(summary), flush=True)
    return 0


# --- token B: paced submits ----------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """B's submits of one phase (and the /readyz probes made meanwhile)."""

    name: str
    latencies_s: list[float]
    errors: int
    ready_codes: Counter[int]
    ready_latencies_s: list[float]
    api_cpu_s: float = 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000

    def row(self) -> tuple[str, ...]:
        ready = (f"{sum(self.ready_codes.values())} ({dict(self.ready_codes)}), "
                 f"p99 {percentile(self.ready_latencies_s, 0.99) * 1000:.1f} ms"
                 if self.ready_latencies_s else "-")
        return (self.name, str(len(self.latencies_s)), f"{self.p(0.5):.1f}",
                f"{self.p(0.99):.1f}", f"{max(self.latencies_s) * 1000:.1f}",
                str(self.errors), f"{self.api_cpu_s:.2f}", ready)


def submit_phase(name: str, base: str, token: str, count: int, rate: float, clients: int,
                 probe: bool, start: int) -> Phase:
    """``count`` submits of B at ``rate`` a second in all (open loop: each client sends on
    its own schedule, whatever the latency), and, with ``probe``, /readyz every 0.1 s."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_client = count // clients
    interval = clients / rate
    done = threading.Event()
    ready: Counter[int] = Counter()
    ready_lat: list[float] = []

    def work(c: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as http:
            t_next = time.perf_counter() + c * interval / clients
            for i in range(per_client):
                pause = t_next - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                t_next += interval
                t0 = time.perf_counter()
                resp = http.post(f"/v1/workflows/{WORKFLOW}/runs",
                                 json=_order(start + c * per_client + i))
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors += resp.status_code != 201

    def probes() -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            while not done.wait(0.1):
                t0 = time.perf_counter()
                try:
                    code = http.get("/readyz").status_code
                except httpx.HTTPError:
                    code = 0
                ready[code] += 1
                ready_lat.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    prober = threading.Thread(target=probes)
    if probe:
        prober.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    if probe:
        prober.join()
    return Phase(name, latencies, errors, ready, ready_lat)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(api_pid: int, *args: Any) -> Phase:
    """:func:`submit_phase` with the API process's CPU time over it."""
    before = cpu_s(api_pid)
    phase = submit_phase(*args)
    return dataclasses.replace(phase, api_cpu_s=cpu_s(api_pid) - before)


def table(rows: Sequence[tuple[str, ...]]) -> str:
    header = ("phase", "submits", "p50 ms", "p99 ms", "max ms", "errors", "API CPU s",
              "/readyz probes (status: count), p99")
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in allrows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness",
                                description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=300,
                   help="streams token A keeps trying to hold (300)")
    p.add_argument("--submits", type=int, default=400, help="B's submits per phase (400)")
    p.add_argument("--rate", type=float, default=40.0, help="B's submits a second (40)")
    p.add_argument("--clients", type=int, default=4, help="B's client threads (4)")
    p.add_argument("--rounds", type=int, default=2, help="idle/loaded pairs (2)")
    p.add_argument("--max-streams-per-token", type=int, default=None,
                   help="ORCH_API_MAX_STREAMS_PER_TOKEN of the API (default: its default)")
    p.add_argument("--no-retry", action="store_true",
                   help="A's refused clients give up instead of retrying after Retry-After")
    p.add_argument("--streamer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.streamer:
        return streamer_main(args)

    a_token, b_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    tokens = [{"token": a_token, "scopes": SCOPES, "name": "a"},
              {"token": b_token, "scopes": SCOPES, "name": "b"}]
    extra = {"ORCH_API_TOKENS": json.dumps(tokens)}
    if args.max_streams_per_token:
        extra["ORCH_API_MAX_STREAMS_PER_TOKEN"] = str(args.max_streams_per_token)
    with RedisServer() as server:
        port = free_loopback_port()
        base = f"http://127.0.0.1:{port}"
        api_cmd = [sys.executable, "-m", "orchestrator.api", "--port", str(port),
                   "--log-level", "warning"]
        with child(api_cmd, _env(server.url, **extra), "api") as api:
            def up() -> bool:
                if api.poll() is not None:
                    raise SystemExit("the API exited while starting")
                try:
                    return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 60, interval_s=0.2, message="the API did not start")
            run_id = httpx.post(f"{base}/v1/workflows/{WORKFLOW}/runs", json=_order(-1),
                                headers={"Authorization": f"Bearer {a_token}"},
                                timeout=30).json()["run_id"]
            print(f"redis {server.url}, API {base}; token A: {args.streams} streams of "
                  f"run {run_id} (queued: no worker); token B: {args.submits} submits per "
                  f"phase at {args.rate:g}/s from {args.clients} clients", flush=True)
            submit_phase("warm-up", base, b_token, 40, args.rate, args.clients, False, 0)
            phases: list[Phase] = []
            loads: list[dict[str, object]] = []
            n = 100
            for rnd in range(1, args.rounds + 1):
                phases.append(measured(api.pid, f"idle {rnd}", base, b_token,
                                       args.submits, args.rate, args.clients, True, n))
                n += args.submits
                cmd = [sys.executable, "-m", "bench.fairness", "--streamer", "--base", base,
                       "--token", a_token, "--run-id", run_id, "--streams",
                       str(args.streams)] + (["--no-retry"] if args.no_retry else [])
                with subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True,
                                      env=_env(server.url)) as streamer:
                    assert streamer.stdin is not None and streamer.stdout is not None
                    first = json.loads(streamer.stdout.readline() or "{}")
                    if not first.get("ready"):
                        streamer.kill()
                        raise SystemExit("the streamer did not start")
                    a_cpu = cpu_s(streamer.pid)
                    phases.append(measured(
                        api.pid, f"{args.streams} streams {rnd}", base, b_token,
                        args.submits, args.rate, args.clients, True, n))
                    a_cpu = cpu_s(streamer.pid) - a_cpu
                    n += args.submits
                    streamer.stdin.write("stop\n")
                    streamer.stdin.flush()
                    last = json.loads(streamer.stdout.readline() or "{}")
                    streamer.wait(30)
                loads.append({"client CPU": a_cpu, "first answers": first["answers"],
                              "holding": first["holding"], "answers in all":
                              last.get("answers")})
            print()
            print(table([ph.row() for ph in phases]))
            idle = [ph.p(0.99) for ph in phases if ph.name.startswith("idle")]
            loaded = [ph.p(0.99) for ph in phases if not ph.name.startswith("idle")]
            ratios = [lo / il for lo, il in zip(loaded, idle, strict=True)]
            print("\nB's submit p99 loaded / idle, per round: "
                  + ", ".join(f"{x:.2f}" for x in ratios)
                  + f"  (median {sorted(ratios)[len(ratios) // 2]:.2f})")
            pooled = {arm: [x for ph in phases if ph.name.startswith("idle") == (arm == "idle")
                            for x in ph.latencies_s] for arm in ("idle", "loaded")}
            p99 = {arm: percentile(xs, 0.99) * 1000 for arm, xs in pooled.items()}
            print(f"B's submit p99 over every round: idle {p99['idle']:.1f} ms, loaded "
                  f"{p99['loaded']:.1f} ms: {p99['loaded'] / p99['idle']:.2f}x "
                  f"(p50 {percentile(pooled['idle'], 0.5) * 1000:.1f} -> "
                  f"{percentile(pooled['loaded'], 0.5) * 1000:.1f} ms); API CPU "
                  f"{sum(ph.api_cpu_s for ph in phases if ph.name.startswith('idle')):.2f} -> "
                  f"{sum(ph.api_cpu_s for ph in phases if not ph.name.startswith('idle')):.2f} s")
            for rnd, load in enumerate(loads, 1):
                print(f"token A, round {rnd}: its clients' CPU during the phase "
                      f"{load['client CPU']:.2f} s; first answers {load['first answers']}, "
                      f"streams held {load['holding']}; every answer "
                      f"{load['answers in all']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
