"""Run one fuzzer under libFuzzer: ``python -m fuzz.run <target> [libFuzzer options]
[corpus directories or files]``.

The target's harness (and the orchestrator code it reaches) is imported under atheris'
instrumentation, so that its branches guide the mutations.  libFuzzer's options are its
own (``-runs=N``, ``-max_total_time=S``, ``-timeout=S``, ``-max_len=N``,
``-artifact_prefix=DIR/``); a file argument replays that input (to reproduce a crash).
A crash prints the exception and its traceback and writes the input as
``crash-<sha1>`` (under ``-artifact_prefix``); the exit status is then non-zero.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from fuzz import INSTRUMENTED, TARGETS


def main(argv: list[str]) -> None:
    """Fuzz ``argv[1]`` with the libFuzzer arguments after it (never returns)."""
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options] "
                 "[corpus dirs or files]")
    target = argv[1]
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        harness = importlib.import_module(TARGETS[target])
    test_one_input: Callable[[bytes], None] = harness.test_one_input
    atheris.Setup([f"fuzz-{target}", *argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
