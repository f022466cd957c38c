"""The tests' process fixtures' mix-in: :class:`orchestrator.dev.lifecycle.Started`."""

from orchestrator.dev.lifecycle import Started

__all__ = ["Started"]
