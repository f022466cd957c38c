"""``python -m fuzz``: run every fuzzer (or those named) for a while, one after another.

    python -m fuzz --minutes 10              # each target 10 minutes
    python -m fuzz --target cel --minutes 60
    python -m fuzz --runs 100000             # each target 100,000 inputs

Work files go to ``.fuzz/<target>/`` (git-ignored): the inputs found (``corpus/``) and any
crashing input (``crash-<sha1>``, replayed by ``python -m fuzz.run <target> <file>``).
Exit status 1 if any fuzzer crashed.  An input worth keeping as a seed (it reaches code
the seeds do not) can be copied into ``fuzz/corpus/<target>/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from fuzz import ROOT, TARGETS, command


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzers; return the exit status (0: no crash)."""
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None,
                        help="how long each target runs (default 10 unless --runs)")
    parser.add_argument("--runs", type=int, default=None, help="inputs per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="a target to run (repeatable; default all)")
    parser.add_argument("--work", type=Path, default=ROOT.parent / ".fuzz",
                        help="where found inputs and crashes go (default .fuzz/)")
    args = parser.parse_args(argv)
    minutes = args.minutes if args.minutes is not None or args.runs is not None else 10.0
    crashed = []
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    for target in args.target or list(TARGETS):
        work = args.work / target
        cmd = command(target, work, seconds=None if minutes is None else minutes * 60,
                      runs=args.runs)
        print(f"fuzz {target}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            crashed.append(target)
            print(f"fuzz {target}: CRASH; the input is in {work}/ (crash-* or timeout-*)",
                  flush=True)
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    print("no crash", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
