"""Deterministic stand-ins for the systems the deploy workflow talks to, kept in Redis.

A service registry (which version of each service is live, and what each release
replaced), an artifact store, a health endpoint, and a notification channel.  Tests and
the demo steer the health endpoint with :func:`fail_health_checks`.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "demo:deploy:"
REGISTRY = PREFIX + "registry"
"""Hash: service -> live version."""
REPLACED = PREFIX + "replaced"
"""Hash: ``service@version`` -> JSON of the version that release replaced (or null)."""
ARTIFACTS = PREFIX + "artifacts"
"""Hash: ``service@version`` -> image reference."""
HEALTH_FAILS = PREFIX + "health_fails"
"""Hash: service -> how many of its next health checks fail."""
NOTIFICATIONS = PREFIX + "notifications"


class Unhealthy(RuntimeError):
    """The service's health endpoint reported a failure."""


def live_version(redis: Any, service: str) -> str | None:
    """The version of ``service`` that is live, or ``None`` if it was never released."""
    v = redis.hget(REGISTRY, service)
    return None if v is None else str(v)


def set_live_version(redis: Any, service: str, version: str | None) -> None:
    """Make ``version`` live (``None``: the service is not deployed), without a release."""
    if version is None:
        redis.hdel(REGISTRY, service)
    else:
        redis.hset(REGISTRY, service, version)


def store_artifact(redis: Any, service: str, version: str, image: str) -> None:
    """Record the image built for ``service`` at ``version``."""
    redis.hset(ARTIFACTS, f"{service}@{version}", image)


def release(redis: Any, service: str, version: str) -> str | None:
    """Make ``version`` live and remember what it replaced; safe to repeat.

    Returns:
        The version this release replaced (``None`` if the service was not deployed).
    """
    key = f"{service}@{version}"
    previous = live_version(redis, service)
    if previous != version:
        pipe = redis.pipeline(transaction=True)
        pipe.hset(REPLACED, key, json.dumps(previous))
        pipe.hset(REGISTRY, service, version)
        pipe.execute()
    return _replaced(redis, key)


def roll_back(redis: Any, service: str, version: str) -> str | None:
    """Undo the release of ``version``: restore the version it replaced; safe to repeat.

    Does nothing if ``version`` is no longer live (already rolled back, or superseded) or
    was made live without :func:`release`.

    Returns:
        The version live afterwards (``None`` if the service is no longer deployed).
    """
    key = f"{service}@{version}"
    if live_version(redis, service) == version and redis.hexists(REPLACED, key):
        set_live_version(redis, service, _replaced(redis, key))
    return live_version(redis, service)


def _replaced(redis: Any, key: str) -> str | None:
    raw = redis.hget(REPLACED, key)
    version = None if raw is None else json.loads(raw)
    return None if version is None else str(version)


def check_health(redis: Any, service: str) -> None:
    """Call the service's health endpoint.

    Raises:
        Unhealthy: while failures set by :func:`fail_health_checks` remain.
    """
    if int(redis.hget(HEALTH_FAILS, service) or 0) > 0:
        redis.hincrby(HEALTH_FAILS, service, -1)
        raise Unhealthy(f"{service}: health endpoint answered 503")


def fail_health_checks(redis: Any, service: str, times: int) -> None:
    """Make the next ``times`` health checks of ``service`` fail."""
    redis.hset(HEALTH_FAILS, service, times)


def notify(redis: Any, text: str) -> None:
    """Post ``text`` to the deploy channel."""
    redis.rpush(NOTIFICATIONS, text)


def notifications(redis: Any) -> list[str]:
    """Every notification sent so far, oldest first."""
    return [str(x) for x in redis.lrange(NOTIFICATIONS, 0, -1)]
