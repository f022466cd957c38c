"""Test-side name of :func:`orchestrator.dev.waiting.wait_until`."""

from orchestrator.dev.waiting import wait_until

__all__ = ["wait_until"]
