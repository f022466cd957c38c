"""Child processes of the local tooling: start each in its own session, stop it by its id.

The local stack, the private Redis, the tests' workers and Flower, and the benchmark all
start long-running children the same way: :func:`spawn` puts each in a new session (so it
leads its own process group, whose id is its pid) with its output in a log file;
:func:`wait_ready` waits for it to answer while failing at once if it exits; :func:`stop`
(or :func:`stop_all`) asks it to exit with SIGTERM and SIGKILLs its group if it does not.

Every function signals only the process it is handed, that process's own group, or its
children found by parent pid: never a process looked up by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from orchestrator.dev.waiting import wait_until
from orchestrator.errors import OrchestratorError

T = TypeVar("T")

KILL_WAIT_S = 10.0
"""How long to wait for a child to be reaped after SIGKILL (it cannot ignore that signal)."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_TAIL_LINES = 40


class ChildExited(OrchestratorError):
    """A child process exited while its caller waited for it to become ready.

    Attributes:
        name: what the child is, as the caller named it (``"worker w1@test"``).
        returncode: its exit status (negative: the signal that ended it).
        log_tail: the last lines of its log, or ``""`` if it has none.
    """

    def __init__(self, name: str, returncode: int, log_tail: str = "") -> None:
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail
        tail = f"; log tail:\n{log_tail}" if log_tail else ""
        super().__init__(f"{name} exited with status {returncode}{tail}")


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that has the kernel send ``sig`` to the child if we die.

    Without it, a parent that is itself SIGKILLed (a CI time limit, an OOM kill) leaves its
    children running.  Linux sends the signal when the *thread* that forked the child exits,
    so it is only armed from the main thread.

    Args:
        sig: The signal the child gets (SIGKILL: no clean-up; SIGTERM: a warm shutdown).

    Returns:
        A function for :class:`subprocess.Popen`'s ``preexec_fn``, or None where it cannot
        work (not Linux, or not the main thread).
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not after
    number = int(sig)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, number)

    return arm


def temp_log(prefix: str) -> Path:
    """Create an empty log file in the temporary directory; return its path.

    Args:
        prefix: The start of the file's name, e.g. ``"worker-w1-"``; it ends in ``.log``.
    """
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(path)


def log_tail(log: Path, lines: int = _TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``log`` (undecodable bytes replaced; ``""`` if absent)."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    args: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    death_signal: signal.Signals | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` as a child in a new session, its stdout and stderr appended to ``log``.

    The child leads its own session and process group (the group's id is its pid): a Ctrl-C
    in the terminal reaches only the parent, which then stops its children in order rather
    than racing them, and :func:`kill_group` reaches whatever the child started.  Its stdin
    is ``/dev/null``.

    Args:
        args: The command line; ``args[0]`` is looked up on ``PATH``.
        log: The file that gets the child's output, created if need be and appended to;
            None: the output is discarded.
        env: The child's whole environment; None: the parent's.
        cwd: The child's working directory; None: the parent's.
        death_signal: A signal the kernel sends the child if the parent dies (see
            :func:`die_with_parent`; Linux, from the main thread); None: none.

    Returns:
        The running child.

    Raises:
        OSError: The program cannot be run, or the log cannot be opened.
    """
    preexec = None if death_signal is None else die_with_parent(death_signal)
    with contextlib.ExitStack() as files:
        # The child holds its own copy of the log's descriptor: ours is closed at once.
        out = subprocess.DEVNULL if log is None else files.enter_context(log.open("ab"))
        return subprocess.Popen(
            list(args),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], T],
    timeout_s: float,
    *,
    name: str,
    log: Path | None = None,
    interval_s: float = 0.2,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll ``ready`` until it returns a truthy value, failing at once if ``proc`` exits.

    Args:
        proc: The child that must keep running.
        ready: Called with no arguments while ``proc`` runs; a truthy value ends the wait.
            An exception it raises propagates.
        timeout_s: How long to wait, in seconds.
        name: What the child is, for the messages (``"flower"``, ``"worker w1@test"``).
        log: The child's log, whose tail :class:`ChildExited` carries; None: no tail.
        interval_s: Pause between two calls of ``ready``, in seconds.
        message: What did not happen, for :class:`~orchestrator.dev.waiting.WaitTimeout`
            (see :func:`~orchestrator.dev.waiting.wait_until`); default ``"NAME not ready"``.

    Returns:
        The first truthy value ``ready`` returned.

    Raises:
        ChildExited: ``proc`` exited before ``ready`` returned a truthy value.
        WaitTimeout: ``ready`` returned no truthy value within ``timeout_s``.
    """

    def running_and_ready() -> T:
        code = proc.poll()
        if code is not None:
            raise ChildExited(name, code, "" if log is None else log_tail(log))
        return ready()

    return wait_until(running_and_ready, timeout_s, interval_s=interval_s,
                      message=f"{name} not ready" if message is None else message)


def child_pids(pid: int) -> list[int]:
    """Return the ids of the direct children of process ``pid`` (``pgrep -P``).

    Returns:
        Their pids, in ``pgrep``'s order; empty if there are none or ``pid`` does not exist.

    Raises:
        FileNotFoundError: There is no ``pgrep`` on ``PATH``.
    """
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    return [int(x) for x in out.split()]


def kill_group(proc: subprocess.Popen[bytes], wait_s: float | None = KILL_WAIT_S) -> int:
    """SIGKILL ``proc``, its process group and its children at once (a crash), then reap it.

    ``proc`` must lead its own group, as a child of :func:`spawn` does.  Its children are
    listed first (where ``pgrep`` exists) and killed by pid too, in case one has left the
    group.  A child that has already exited is only reaped: its group id may since have
    been reused.

    Args:
        proc: The child to kill.
        wait_s: How long to wait for it to be reaped; None: as long as it takes.

    Returns:
        Its exit status (``-9`` unless it had exited on its own).

    Raises:
        subprocess.TimeoutExpired: It was not reaped within ``wait_s``.
    """
    if proc.poll() is None:
        try:
            children = child_pids(proc.pid)
        except FileNotFoundError:  # no pgrep: the group kill still reaches those in it
            children = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return proc.wait(wait_s)


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Stop ``proc`` gracefully: SIGTERM, wait up to ``timeout_s``, then :func:`kill_group`.

    A child that has already exited is only reaped.

    Args:
        proc: The child to stop (started by :func:`spawn`).
        timeout_s: How long it may take to exit after SIGTERM, in seconds.

    Returns:
        Its exit status (negative: the signal that ended it).

    Raises:
        subprocess.TimeoutExpired: It was not reaped even :data:`KILL_WAIT_S` after SIGKILL.
    """
    (code,) = stop_all([proc], timeout_s)
    return code


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    """Stop several children together: SIGTERM to each, then wait for each in turn.

    They shut down in parallel; a child still running ``timeout_s`` after the wait for it
    began (that is, after the children before it in ``procs`` were reaped) is killed with
    :func:`kill_group`.  Children that have already exited are only reaped.

    Args:
        procs: The children to stop (started by :func:`spawn`), in the order to reap them.
        timeout_s: How long each may take to exit once its turn comes, in seconds.

    Returns:
        Their exit statuses, in the order of ``procs``.

    Raises:
        subprocess.TimeoutExpired: One was not reaped even :data:`KILL_WAIT_S` after SIGKILL.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            codes.append(kill_group(proc))
    return codes
