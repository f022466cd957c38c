"""Coverage-guided fuzzers (atheris, libFuzzer) over the code that reads what callers we
do not control send: workflow files, CEL conditions and expressions, webhook signatures.

One harness module per target, each with ``test_one_input(data: bytes)``: it feeds the
input to the code under test and lets only the documented errors pass (a definition
error, a condition error, a refused signature); anything else raised (a ``KeyError``, a
``RecursionError``, a ``UnicodeEncodeError``) is a crash.  A seed corpus per target is
kept in ``fuzz/corpus/<target>/``; the test suite replays it and runs each fuzzer briefly
(``tests/test_fuzz.py``); ``python -m fuzz --minutes 10`` runs them longer (see
``docs/security.md``, Fuzzing).

This package imports no harness and nothing of the orchestrator: the runner
(:mod:`fuzz.run`) imports a harness under atheris' instrumentation, so that the code it
reaches is coverage-guided.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TARGETS: dict[str, str] = {
    "yaml": "fuzz.yaml_loader",
    "cel": "fuzz.cel",
    "webhooks": "fuzz.webhooks",
}
"""Each target's harness module."""
INSTRUMENTED = ("orchestrator", "yaml", "celpy", "lark", "standardwebhooks")
"""Packages whose Python code guides the fuzzers (their branches count as coverage)."""
MAX_LEN = {"yaml": 8192, "cel": 512, "webhooks": 2048}
"""Longest input libFuzzer makes for each target."""


def corpus(target: str) -> Path:
    """The seed corpus of ``target``, kept in the repository."""
    return ROOT / "corpus" / target


def seeds(target: str) -> list[Path]:
    """The seed files of ``target``, sorted."""
    return sorted(p for p in corpus(target).iterdir() if p.is_file())


def command(target: str, work: Path, *, seconds: float | None = None,
            runs: int | None = None, timeout_s: int = 20) -> list[str]:
    """The command that fuzzes ``target`` for ``seconds`` or ``runs`` inputs (forever with
    neither): new inputs go to ``work/corpus`` (the repository's seeds are only read),
    a crashing input to ``work/crash-<sha1>``; an input that runs longer than
    ``timeout_s`` is a crash too (a definition must not hang the loader)."""
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fuzz.run", target, f"-max_len={MAX_LEN[target]}",
           f"-timeout={timeout_s}", "-rss_limit_mb=2048", f"-artifact_prefix={work}/",
           "-print_final_stats=1"]
    if seconds is not None:
        cmd.append(f"-max_total_time={max(1, round(seconds))}")
    if runs is not None:
        cmd.append(f"-runs={runs}")
    return [*cmd, str(work / "corpus"), str(corpus(target))]
