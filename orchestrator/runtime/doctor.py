"""``orchestrator doctor``: is this deployment sane, before a run finds out the hard way?

Each check returns :class:`Finding`s: ``ok`` ones say what was seen, the others also say
how to fix it.  The checks read Redis (``INFO``, ``CONFIG GET``), the settings, every
cataloged workflow, and the live workers (Celery remote control).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator import release
from orchestrator.errors import StoreIsCluster
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store import StoreError
from orchestrator.store.schema import SCHEMA_VERSION, is_cluster

CLOCK_COMMAND = "orch_clock"
"""The remote-control command workers answer with their clock (``workers/app.py``)."""
MAX_SKEW_S = 1.0


@dataclass(frozen=True)
class Finding:
    """One thing checked: ``ok``, or a problem with its ``fix``."""

    check: str
    ok: bool
    message: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _ok(check: str, message: str) -> Finding:
    return Finding(check, True, message)


def _bad(check: str, message: str, fix: str) -> Finding:
    return Finding(check, False, message, fix)


def redis_findings(coord: Coordinator) -> list[Finding]:
    """Redis: reachable, its version, persistence, and the eviction policy; and the
    broker's Redis the same, when it is another (``ORCH_BROKER_URL``)."""
    out = _server_findings(coord.store.client, "", "ORCH_REDIS_URL",
                           home=coord.store.keys.schema() if coord.store.cluster else None)
    if out[0].ok and out[1].ok:  # answers, and not a cluster node (MOVED for the schema)
        out.insert(1, schema_finding(coord))
    if coord.store.broker_apart:
        out += _server_findings(coord.store.broker_client, "broker ", "ORCH_BROKER_URL")
    return out


def _server_findings(r: Any, label: str, variable: str,
                     home: str | None = None) -> list[Finding]:
    """One Redis server's findings, their checks named with ``label`` first; ``home``: a
    key of a store on a Redis Cluster (``ORCH_REDIS_CLUSTER``), whose node ``r`` asks."""
    what = f"The {label}Redis" if label else "Redis"
    try:
        server = r.info("server")
        persistence = r.info("persistence")
        memory = r.info("memory")
    except StoreError as exc:
        return [_bad(f"{label}redis", f"{what} does not answer: {type(exc).__name__}: {exc}",
                     f"Start Redis, or point {variable} at it.")]
    out = [_ok(f"{label}redis", f"{what} {server.get('redis_version')} answers"),
           _cluster_finding(r, label, what, variable) if home is None
           else _home_finding(r, home)]
    aof = int(persistence.get("aof_enabled", 0)) == 1
    try:
        save = str(r.config_get("save").get("save", ""))
    except StoreError:  # CONFIG may be disabled (managed Redis): trust INFO alone
        save = ""
    if aof or save.strip():
        out.append(_ok(f"{label}persistence", "AOF on" if aof else f"RDB snapshots ({save})"))
    else:
        out.append(_bad(f"{label}persistence", f"{what} keeps nothing on disk: a restart "
                        "loses every queue, run and lease", "Run Redis with --appendonly "
                        "yes --appendfsync everysec."))
    policy = str(memory.get("maxmemory_policy", ""))
    if policy == "noeviction":
        out.append(_ok(f"{label}eviction", "maxmemory-policy noeviction"))
    else:
        out.append(_bad(f"{label}eviction", f"maxmemory-policy is {policy!r}: {what} may "
                        "drop queued messages, runs and leases when full",
                        "Set maxmemory-policy noeviction."))
    return out


def _cluster_finding(r: Any, label: str, what: str, variable: str) -> Finding:
    """Whether the server is a Redis Cluster node, which this release refuses
    (:func:`orchestrator.store.schema.refuse_cluster`)."""
    try:
        enabled = is_cluster(r)
    except StoreError:  # the server stopped answering after INFO server: not a cluster
        enabled = False
    if not enabled:
        return _ok(f"{label}cluster", f"{what} is one server, not a Redis Cluster node")
    return _bad(f"{label}cluster", f"{what} is a Redis Cluster node (cluster_enabled:1): "
                "the run store's scripts and the broker need one Redis server, and every "
                "command refuses it", StoreIsCluster.fix_for(variable))


def _home_finding(r: Any, home: str) -> Finding:
    """Where a store on a Redis Cluster lives: the one slot of its hash tag, and the node
    that serves it (the one whose persistence and eviction the next findings show)."""
    slot = r.keyslot(home)
    node = r.get_node_from_key(home)
    masters = len(r.get_primaries())
    return _ok("cluster", f"a Redis Cluster of {masters} masters; the run store's keys are "
               f"in one slot ({slot}, hash tag of {home.split(':', 1)[0]}), served by "
               f"{node.host}:{node.port}")


def schema_finding(coord: Coordinator) -> Finding:
    """The run store's schema version against this release's."""
    have = coord.store.schema()
    if have is None:
        return _ok("schema", f"no run store yet (this release writes schema {SCHEMA_VERSION})")
    if have.version == SCHEMA_VERSION:
        return _ok("schema", f"run store schema {have.version} (set by {have.release})")
    return _bad("schema", f"the run store has schema {have.version} (set by "
                f"{have.release}); this release ({release.current()}) uses "
                f"{SCHEMA_VERSION}", f"Run celery-orchestrator {have.release} or a release "
                f"that uses schema {have.version} (docs/operations.md, Upgrades).")


def timing_findings(coord: Coordinator) -> list[Finding]:
    """The visibility timeout and the lease against every step's timeout and backoff."""
    s = coord.settings
    vt = s.visibility_timeout_s
    out: list[Finding] = []
    longest = max(((wf.name, st.id, st.timeout_s) for wf in coord.catalog.workflows.values()
                   for st in wf.steps if st.timeout_s), key=lambda x: x[2], default=None)
    if longest and longest[2] >= vt:
        out.append(_bad("visibility timeout", f"ORCH_VISIBILITY_TIMEOUT_S={vt} is not above "
                        f"the {longest[2]:g} s timeout of step {longest[1]!r} of workflow "
                        f"{longest[0]!r}: the broker redelivers its message while it runs "
                        "(the copies are deferred, never run, but each costs a message)",
                        f"Set ORCH_VISIBILITY_TIMEOUT_S above {longest[2]:g}."))
    else:
        out.append(_ok("visibility timeout", f"{vt} s, above every step's timeout"))
    if s.lease_s < 4 * s.reaper_interval_s:
        out.append(_bad("lease", f"ORCH_LEASE_S={s.lease_s:g} is short for a reaper that "
                        f"runs every {s.reaper_interval_s:g} s", "Keep ORCH_LEASE_S at "
                        "least 4 times ORCH_REAPER_INTERVAL_S."))
    else:
        out.append(_ok("lease", f"{s.lease_s:g} s, renewed every {s.lease_s / 4:g} s; "
                       f"reaper every {s.reaper_interval_s:g} s"))
    return out


def worker_findings(coord: Coordinator, timeout_s: float = 1.0) -> list[Finding]:
    """Live workers: every cataloged workflow's preflight, and their clocks."""
    out: list[Finding] = []
    workers = coord.workers(timeout_s)
    for name in sorted(coord.catalog.workflows):
        problems = coord.preflight(name, workers=workers)
        if problems:
            out += [_bad("workers", f"workflow {name!r}: {p.split('. Fix: ')[0]}",
                         p.split(". Fix: ", 1)[1] if ". Fix: " in p else
                         "Start a worker (orchestrator worker).") for p in problems]
        else:
            out.append(_ok("workers", f"workflow {name!r}: every step has a live worker"))
    sent = time.time()
    replies = coord.app.control.broadcast(CLOCK_COMMAND, reply=True, timeout=timeout_s)
    got = time.time()
    for reply in replies or []:
        for worker, answer in reply.items():
            their = float((answer or {}).get("time", 0))
            skew = their - (sent + got) / 2
            if abs(skew) > MAX_SKEW_S + (got - sent) / 2:
                out.append(_bad("clock", f"{worker}'s clock is {skew:+.1f} s off this host's",
                                "Run NTP (chrony, systemd-timesyncd) on every host."))
            else:
                out.append(_ok("clock", f"{worker}: {skew * 1000:+.0f} ms"))
    return out


def http_findings(urls: Iterable[tuple[str, str]]) -> list[Finding]:
    """Each ``(name, url)`` answers 200."""
    out = []
    for name, url in urls:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError) as exc:
            out.append(_bad(name, f"{url} does not answer ({exc})",
                            f"Start the {name}, or give its URL."))
            continue
        out.append(_ok(name, f"{url} answers") if ok else
                   _bad(name, f"{url} answers {resp.status}", f"Check the {name}'s log."))
    return out


def diagnose(coord: Coordinator, urls: Iterable[tuple[str, str]] = (),
             timeout_s: float = 1.0) -> list[Finding]:
    """Every check; workers are asked (and workflows compiled into the store) only if
    Redis answers, is no cluster node (the store's or the broker's), and the store's
    schema is this release's."""
    out = redis_findings(coord)
    if all(f.ok for f in out if f.check in ("redis", "cluster", "broker cluster", "schema")):
        out += timing_findings(coord)
        out += worker_findings(coord, timeout_s)
    out += http_findings(urls)
    return out
