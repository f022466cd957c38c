"""The benchmark harness runs end to end at tiny sizes (``python -m bench --smoke``).

Only completion is checked: every workload finishes and its rows are in the table.
Timings at these sizes mean nothing, so none is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
ROWS = (
    "| 1. linear workflow:",
    "| 1. Redis commands per step",
    "| 1. Redis reads",
    "| 1. Redis server CPU per step",
    "| 1. linear workflow, AOF everysec:",
    "| 2. fan-out/fan-in:",
    "| 2. fan-in: ms from the last branch's end",
    "| 3. ",
    "| 3. same, p50",
    "| 3. same, p99",
    "| 4. random non-SP DAG",
    "| 5. validate + compile + dispatch, layered DAG",
    "| 5. validate + compile + dispatch, line",
    "| 5. largest message, layered DAG",
    "| 5. largest message, line",
    "| 6. Redis bytes per finished",
    "| 6. worker RSS",
    "| 7. map, largest message",
    "| 7. map: one map step",
)


def test_every_workload_completes(redis_binary: str, tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--repeat", "1", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    table = out.read_text(encoding="utf-8")
    missing = [r for r in ROWS if r not in table]
    assert not missing, f"rows missing from the table: {missing}\n{table}"
    assert "FAILED" not in table
    assert "| workload | orchestrator | raw Celery | ratio | goal | met? |" in proc.stdout


def test_peer_arm_completes(redis_binary: str, tmp_path: Path) -> None:
    """``--peers``: celery-dyrygent runs workloads 1 and 2 to the end, every task of its
    workflows succeeding (the arm checks each task's stored result), beside both arms."""
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "1,2", "--repeat", "1",
         "--peers", "dyrygent-1s", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    table = out.read_text(encoding="utf-8")
    for row in ("| 1. linear workflow vs celery-dyrygent (1 s ticks",
                "| 2. fan-out/fan-in vs celery-dyrygent (1 s ticks"):
        assert row in table, f"row {row!r} missing from the table:\n{table}"
    assert "(celery-dyrygent)" in table
    assert "FAILED" not in table
    assert "dyrygent-1s/raw" in table  # the note with the peer's ratio to raw Celery


def test_the_broker_apart_bench_completes() -> None:
    """``python -m bench.apart`` at a tiny size: every arm's runs succeed (it exits
    otherwise) and its table has the three arms."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.apart", "--rounds", "1", "--lines", "2", "--steps",
         "10"], cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, f"bench.apart failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    for arm in ("| shared |", "| apart |", "| raw |"):
        assert arm in proc.stdout, proc.stdout
