"""The child-process helpers of the local tooling start, wait for, stop and kill for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.dev import procs
from orchestrator.dev.waiting import WaitTimeout
from orchestrator.errors import OrchestratorError
from tests.support.wait import wait_until

# A child that ignores SIGTERM, starts a grandchild (in its own session when asked), says
# so in its log, and sleeps.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                       start_new_session=sys.argv[1] == "own-session")
print("ready", kid.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _grandchild(log: Path) -> int:
    """The pid that a child wrote to ``log`` in its line ``ready PID``.

    Only a whole line counts: a read can land between the child's writes of one line (its
    stdout is unbuffered when ``PYTHONUNBUFFERED`` is set), and sees ``ready`` alone.
    """

    def pid() -> int | None:
        found = re.search(r"^ready (\d+)\n", log.read_text() if log.exists() else "", re.M)
        return int(found[1]) if found else None

    return wait_until(pid, 10, message=lambda: f"not ready: {procs.log_tail(log)!r}")


def test_spawn_starts_a_session_leader_with_its_output_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_text("earlier run\n")
    proc = procs.spawn([sys.executable, "-c", (
        "import os, sys\n"
        "print(os.getcwd(), flush=True)\n"
        "print('stdin empty:', sys.stdin.read() == '', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n")], log=log, cwd=tmp_path)
    try:
        assert proc.wait(30) == 0
        first, cwd, *rest = log.read_text().splitlines()
        assert first == "earlier run"  # appended to, not truncated
        assert os.path.samefile(cwd, tmp_path)
        assert rest == ["stdin empty: True", "to stderr"]
    finally:
        procs.kill_group(proc)


def test_spawn_gives_the_child_its_own_session_and_environment(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = procs.spawn([sys.executable, "-c", "import os, time; print(os.environ['ONLY'], "
                        "flush=True); time.sleep(60)"], log=log, env={"ONLY": "this"})
    try:
        wait_until(lambda: procs.log_tail(log) == "this", 10)
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert procs.stop(proc, 10) == -signal.SIGTERM
    finally:
        procs.kill_group(proc)


@pytest.mark.parametrize(("where", "end"), [
    ("same-group", lambda proc: procs.stop(proc, 0.5)),  # SIGTERM is ignored: escalates
    ("own-session", procs.kill_group),
])
def test_the_group_and_every_child_are_killed(
        where: str, end: Callable[[subprocess.Popen[bytes]], int], tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = procs.spawn([sys.executable, "-c", STUBBORN, where], log=log)
    try:
        grandchild = _grandchild(log)
        assert procs.child_pids(proc.pid) == [grandchild]
        assert (os.getpgid(grandchild) == proc.pid) is (where == "same-group")
        assert end(proc) == -signal.SIGKILL
        wait_until(lambda: _gone(grandchild), 10, message="the grandchild outlived its parent")
    finally:
        procs.kill_group(proc)


def test_stop_and_kill_group_only_reap_a_child_that_already_exited() -> None:
    proc = procs.spawn([sys.executable, "-c", "raise SystemExit(4)"])
    wait_until(lambda: proc.poll() is not None, 30)
    assert procs.stop(proc, 1) == 4
    assert procs.kill_group(proc) == 4
    assert procs.child_pids(proc.pid) == []


def test_stop_all_stops_children_together() -> None:
    children = [procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(3)]
    try:
        assert procs.stop_all(children, 10) == [-signal.SIGTERM] * 3
    finally:
        for proc in children:
            procs.kill_group(proc)


def test_wait_ready_returns_the_first_truthy_value_while_the_child_runs() -> None:
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    answers = iter([None, 0, "up"])
    try:
        assert procs.wait_ready(proc, lambda: next(answers), 10, name="sleeper",
                                interval_s=0.01) == "up"
        with pytest.raises(WaitTimeout, match=r"sleeper not ready \(waited"):
            procs.wait_ready(proc, lambda: False, 0.1, name="sleeper", interval_s=0.01)
    finally:
        procs.stop(proc, 10)


def test_wait_ready_fails_at_once_with_the_status_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "crash.log"
    proc = procs.spawn([sys.executable, "-c", "print('no config found'); raise SystemExit(3)"],
                       log=log)
    with pytest.raises(procs.ChildExited) as err:
        procs.wait_ready(proc, lambda: False, 60, name="crasher", log=log)
    assert (err.value.name, err.value.returncode) == ("crasher", 3)
    assert err.value.log_tail == "no config found"
    assert str(err.value) == "crasher exited with status 3; log tail:\nno config found"
    assert isinstance(err.value, OrchestratorError)


def test_wait_timeout_is_an_orchestrator_error_and_an_assertion_error() -> None:
    with pytest.raises(WaitTimeout) as err:
        wait_until(lambda: False, 0.01, message="never")
    assert isinstance(err.value, OrchestratorError)
    assert isinstance(err.value, AssertionError)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_die_with_parent_arms_only_from_the_main_thread() -> None:
    assert callable(procs.die_with_parent(signal.SIGKILL))
    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(
        procs.die_with_parent(signal.SIGKILL)))
    thread.start()
    thread.join()
    assert elsewhere == [None]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_spawned_with_a_death_signal_dies_with_its_parent(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    parent = procs.spawn([sys.executable, "-c", (
        "import signal, time\n"
        "from orchestrator.dev import procs\n"
        "kid = procs.spawn(['sleep', '60'], death_signal=signal.SIGKILL)\n"
        "print('ready', kid.pid, flush=True)\n"
        "time.sleep(60)\n")], log=log, cwd=Path(__file__).resolve().parents[1])
    try:
        kid = _grandchild(log)
        assert os.getsid(kid) == kid  # out of the parent's group: only the kernel reaches it
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait(10) == -signal.SIGKILL
        wait_until(lambda: _gone(kid), 10, message="the child outlived its parent")
    finally:
        procs.kill_group(parent)
