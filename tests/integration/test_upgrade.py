"""Rolling upgrades and rollbacks: workers of the previous release and of this tree share a
pool and a run store, and a run started on one finishes on the other.

The previous release is the wheel in ``tests/data/releases/`` installed in a virtualenv of
its own (:mod:`tests.support.release`).  Each test starts a run of ``upgrade_flow``
(``tests/data/upgrade/upgradeflow.py``: a chain around a fan-out) with one release's CLI on
that release's worker, starts a worker of the other release once two steps ran (the others
wait for it), stops the first worker (a warm shutdown, as a deploy does; or SIGKILL, a
crash mid-deploy) and sees the run finish.  Executions are counted in the step function:
every step ends exactly once, a step interrupted by the kill starts again only after the
kill, and both releases ran steps of the run.  Each release's ``status`` then reads the
finished run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from tests.support.redis_server import RedisServer
from tests.support.release import install_previous, previous_version
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.redis

FLOW_DIR = Path(__file__).resolve().parents[1] / "data" / "upgrade"
STEPS = ["a", "b", "f0", "f1", "f2", "c", "d", "e", "g"]
SETTINGS: dict[str, Any] = {"workflow_packages": ["upgradeflow"], "lease_s": 3.0}


@pytest.fixture(scope="module")
def previous_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(install_previous(tmp_path_factory.mktemp("previous-release")))


@pytest.fixture
def server(redis_binary: str) -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary) as s:
        yield s


def _cli(python: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One release's ``orchestrator`` command, run outside this tree (so that the previous
    release's interpreter imports the previous release)."""
    return subprocess.run([python, "-m", "orchestrator.cli", *args], cwd=FLOW_DIR,
                          env=worker_env(url, **SETTINGS), capture_output=True, text=True,
                          timeout=60)


def _worker(python: str, url: str, release: str) -> WorkerProcess:
    return WorkerProcess(url, release, python=python, cwd=str(FLOW_DIR), concurrency=2,
                         env={"UPGRADE_RELEASE": release}, **SETTINGS)


def _start_run(python: str, url: str) -> str:
    out = _cli(python, url, "run", "upgrade_flow", "--no-follow")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()[1]  # "run <id> started (upgrade_flow)"


def _records(r: redis.Redis, run_id: str) -> list[tuple[str, str, str, float]]:
    """``(start|end, step, release, time)`` of every execution, as the steps recorded."""
    rows = [x.decode().split("|") for x in r.lrange(f"upgrade:{run_id}", 0, -1)]
    return [(what, step, rel, float(t)) for what, step, rel, t in rows]


def _swap(server: RedisServer, first: str, second: str, how: str) -> tuple[str, float]:
    """Start a run with ``first`` (a python) on its worker; mid-run add a worker of
    ``second``, then stop (``warm``) or kill (``kill``) the first.  Returns the run id and
    when the first worker was stopped."""
    url = server.url
    r = server.client()
    coord = Coordinator(Settings(redis_url=url), Catalog())
    pythons = {first: "first", second: "second"}
    one = _worker(first, url, pythons[first])
    two: WorkerProcess | None = None
    try:
        one.wait_ready(coord.app)
        r.set("upgrade:hold", 1)  # steps after b wait for the swap (upgradeflow.py)
        run_id = _start_run(first, url)
        wait_until(lambda: r.llen(f"upgrade:{run_id}") >= 4, 30,  # a and b ended
                   message=lambda: f"the run did not start on the first worker:\n{one.tail()}")
        two = _worker(second, url, pythons[second])
        two.wait_ready(coord.app)
        r.delete("upgrade:hold")
        stopped = time.time()
        if how == "warm":
            one.stop()
        else:
            one.kill()
            # the kill lands after the clock was read: a step the first worker began in
            # between (seen in CI, 8 ms) was cut by the kill, not run beside its re-run
            stopped = time.time()
        wait_until(lambda: coord.store.run(run_id).status.terminal, 60,
                   message=lambda: f"run {run_id} did not end:\n{two.tail() if two else ''}")
        view = coord.view(run_id)
        assert view.run.status.value == "succeeded", {s.step_id: s.status.value
                                                      for s in view.steps}
        return run_id, stopped
    finally:
        one.stop()
        if two is not None:
            two.stop()


def _check_executions(server: RedisServer, run_id: str, stopped: float, how: str) -> None:
    """Every step ended once; both releases ran steps; a step started twice only when the
    kill cut its first execution short, and then started again after the kill."""
    recs = _records(server.client(), run_id)
    ends = [(step, rel) for what, step, rel, _ in recs if what == "end"]
    assert sorted(s for s, _ in ends) == sorted(STEPS), f"each step must end once: {recs}"
    assert {rel for _, rel in ends} == {"first", "second"}, recs  # the swap was mid-run
    for step in STEPS:
        starts = [(rel, t) for what, s, rel, t in recs if what == "start" and s == step]
        if len(starts) == 1:
            continue
        assert how == "kill" and len(starts) == 2, f"{step} started {starts}: {recs}"
        (rel1, t1), (_, t2) = sorted(starts, key=lambda x: x[1])
        ended_first = any(s == step and rel == rel1 and what == "end"
                          for what, s, rel, _ in recs if rel1 == "first")
        assert rel1 == "first" and t1 < stopped <= t2 and not ended_first, (
            f"{step} ran twice at once or twice in full: {starts}: {recs}")


@pytest.mark.parametrize("how", ["warm", "kill"])
def test_upgrade_mid_run(server: RedisServer, previous_python: str, how: str) -> None:
    """Previous release → this tree, the run started by the previous release."""
    run_id, stopped = _swap(server, previous_python, sys.executable, how)
    _check_executions(server, run_id, stopped, how)
    for python in (previous_python, sys.executable):  # both releases read the run
        out = _cli(python, server.url, "status", run_id)
        assert out.returncode == 0 and f"run {run_id}: succeeded" in out.stdout, (
            out.stdout + out.stderr)


def test_rollback_mid_run(server: RedisServer, previous_python: str) -> None:
    """This tree → previous release, the run started by this tree; then the previous
    release keeps working on the store this tree wrote (its schema key included)."""
    run_id, stopped = _swap(server, sys.executable, previous_python, "warm")
    _check_executions(server, run_id, stopped, "warm")
    out = _cli(previous_python, server.url, "status", run_id)
    assert out.returncode == 0 and f"run {run_id}: succeeded" in out.stdout, (
        out.stdout + out.stderr)
    assert server.client().hget("orch:schema", "version") == b"1"
    old = _worker(previous_python, server.url, "old")
    try:
        old.wait_ready(Coordinator(Settings(redis_url=server.url), Catalog()).app)
        out = _cli(previous_python, server.url, "run", "upgrade_flow", "--timeout", "50")
        assert out.returncode == 0 and "succeeded" in out.stdout, out.stdout + out.stderr
    finally:
        old.stop()


def test_previous_release_is_older() -> None:
    """The wheel is a release before this tree's (refresh it with
    scripts/release-wheel.sh at each release)."""
    from orchestrator import release

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")[:3])

    assert key(previous_version()) < key(release.current())
