"""Test-side name of :mod:`orchestrator.dev.localredis` (the scripts call ``--which`` here)."""

from __future__ import annotations

import contextlib
import sys

from orchestrator.dev.localredis import (
    RedisServer,
    RedisServerError,
    find_redis_server_binary,
    free_loopback_port,
    main,
    shipped_redis_server_binary,
)

__all__ = ["RedisServer", "RedisServerError", "find_redis_server_binary",
           "free_loopback_port", "main", "shipped_redis_server_binary"]

if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
