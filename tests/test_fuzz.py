"""The fuzzers (``fuzz/``): every seed of the kept corpus is handled (a regression test of
each crash found so far), and each coverage-guided fuzzer runs briefly without a crash.

The longer run is ``python -m fuzz --minutes 10`` (docs/security.md, Fuzzing).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from fuzz import ROOT, TARGETS, command, seeds

CI_SECONDS = 8
"""How long each fuzzer runs in the test suite."""


@pytest.mark.parametrize(("target", "seed"), [
    pytest.param(t, p, id=f"{t}/{p.name}") for t in TARGETS for p in seeds(t)])
def test_every_seed_is_handled(target: str, seed: Path) -> None:
    """Each kept input ends in a result or a documented error (the harness raises
    anything else)."""
    harness = importlib.import_module(TARGETS[target])
    harness.test_one_input(seed.read_bytes())


def test_each_target_has_seeds() -> None:
    assert all(len(seeds(t)) >= 5 for t in TARGETS), {t: len(seeds(t)) for t in TARGETS}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_fuzzer_finds_no_crash_in_its_ci_budget(target: str, tmp_path: Path) -> None:
    before = sorted(p.name for p in seeds(target))
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    res = subprocess.run(command(target, tmp_path, seconds=CI_SECONDS), env=env,
                         capture_output=True, text=True, errors="replace", timeout=300,
                         check=False)
    log = res.stderr
    found = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert res.returncode == 0 and not found, (
        f"fuzz {target} crashed (exit {res.returncode}); the input is {found}; replay it "
        f"with python -m fuzz.run {target} <file>\n" + log[-6000:])
    runs = re.search(r"stat::number_of_executed_units: (\d+)", log)
    assert runs and int(runs.group(1)) > len(before), log[-2000:]  # it fuzzed
    assert sorted(p.name for p in seeds(target)) == before  # the kept seeds are read only
