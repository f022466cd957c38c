"""The ``orchestrator`` command line (:mod:`main`) and its live run view (:mod:`follow`)."""

from orchestrator.cli.main import cli, main

__all__ = ["cli", "main"]
