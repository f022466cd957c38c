"""Unit tests of the pure core: no broker, no Redis."""
