"""Benchmarks of the orchestrator (``make bench``)."""
