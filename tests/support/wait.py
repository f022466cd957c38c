"""Test-side name of :func:`orchestrator.waiting.wait_until`."""

from orchestrator.waiting import wait_until

__all__ = ["wait_until"]
