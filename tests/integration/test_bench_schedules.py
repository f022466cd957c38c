"""``python -m bench.schedules`` runs end to end at a small size (two real schedulers).

Only correctness is checked: every fire has exactly one run, none is missing.  Lags at
this size say nothing, so none is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]


def test_schedules_bench_smoke() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.schedules", "--count", "40",
                           "--minutes", "0.25", "--schedulers", "2"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line}
    for scenario in ("spread", "burst"):
        assert "duplicates 0" in lines[scenario] and "missing 0" in lines[scenario], \
            done.stdout
    assert " runs    40 " in lines["burst"], done.stdout
    assert "traceback" not in done.stdout.lower()
