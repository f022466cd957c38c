"""The previous release of this package, installed in a virtualenv of its own.

``tests/data/releases/`` holds exactly one wheel: the previous release, built by
``scripts/release-wheel.sh <ref>``.  :func:`install_previous` makes a virtualenv with that
wheel installed and this environment's dependencies visible (a ``.pth`` line pointing at
this venv's site-packages: the same Celery, redis-py and pydantic, no download).  A
process started with its interpreter, in a directory outside this tree, imports the
previous release's ``orchestrator`` and ``workers``, never this tree's.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from tests.support.paths import REPO

RELEASES = REPO / "tests" / "data" / "releases"


def previous_wheel() -> Path:
    """The previous release's wheel (there must be exactly one)."""
    wheels = sorted(RELEASES.glob("celery_orchestrator-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {RELEASES}, found {len(wheels)}: run "
                           "scripts/release-wheel.sh <ref of the previous release>")
    return wheels[0]


def previous_version() -> str:
    """The previous release's version, from its wheel's name."""
    return previous_wheel().name.split("-")[1]


def install_previous(where: Path) -> Path:
    """Create a virtualenv under ``where`` with the previous release; return its python."""
    env_dir = where / "venv-previous"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-index", "--no-input", "--disable-pip-version-check", "-q",
                    str(previous_wheel())], check=True)
    return py
