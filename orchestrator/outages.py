"""What a failure to use Redis means, said once for the CLI and the API.

Redis is the broker, the result backend and the run store.  When a command or a request
cannot use it, the person at the keyboard needs one line: which server (the URL with its
password masked), what went wrong (unreachable, password refused, no answer in time) and
the fix.  :func:`explain` turns whatever redis-py or kombu raised into that line, a
:class:`~orchestrator.errors.StoreUnavailable`; the CLI maps its kind to an exit code and
the API to a 503.

Nothing here imports redis (only the store does): exceptions are recognised by their
class names, their cause chain and the server's error words (``NOAUTH``, ``WRONGPASS``).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from orchestrator.errors import (
    RedisAuthFailed,
    RedisTimedOut,
    RedisUnreachable,
    StoreUnavailable,
)

_AUTH_WORDS = ("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password",
               "Authentication required", "AUTH <password> called without any password")
_REDIS_MODULES = ("redis.", "kombu.", "celery.", "amqp.")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (a user name is kept); each address
    of a Sentinel URL (``sentinel://...;sentinel://...``) is masked.

    >>> mask_url("redis://:secret@db:6380/2")
    'redis://:***@db:6380/2'
    >>> mask_url("sentinel://:secret@s1:26379;sentinel://:secret@s2:26379/0")
    'sentinel://:***@s1:26379;sentinel://:***@s2:26379/0'
    """
    if ";" in url:
        return ";".join(_mask_one(part) for part in url.split(";"))
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query,
                       parts.fragment))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (``raise ... from``, then implicit context), each once."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def kind_of(exc: BaseException) -> type[StoreUnavailable] | None:
    """The kind of Redis failure ``exc`` is (looking through its causes), or None when it
    is not a failure to reach or use Redis."""
    chain = _chain(exc)
    if not any(type(e).__module__.startswith(_REDIS_MODULES) for e in chain):
        return None  # an OSError of our own (a file, say) is not a Redis failure
    texts = " ".join(str(e) for e in chain)
    names: set[str] = set().union(*(_names(e) for e in chain))
    if "AuthenticationError" in names or any(w in texts for w in _AUTH_WORDS):
        return RedisAuthFailed
    if "TimeoutError" in names or "timeout" in names or "Timeout" in texts:
        return RedisTimedOut
    if names & {"ConnectionError", "OperationalError", "OSError", "ClusterDownError",
                 "MasterDownError"}:
        return RedisUnreachable
    if ("RedisClusterException" in names and "cannot be connected" in texts
            and "not enabled" not in texts):
        return RedisUnreachable  # no node of a cluster answered
    return None


def explain(exc: BaseException, url: str, timeout_s: float | None = None,
            variable: str = "ORCH_REDIS_URL") -> StoreUnavailable | None:
    """The one-line error for ``exc`` raised while using the Redis at ``url``.

    Args:
        exc: what redis-py, kombu or Celery raised (or a wrapper of it).
        url: the Redis URL in use (its password is masked in the message).
        timeout_s: the timeout in force, named in a timeout's message.
        variable: the setting that names ``url``, in the fix.

    Returns:
        A :class:`StoreUnavailable` subclass instance (unreachable, password refused, timed
        out) whose message names the masked URL and the fix; None if ``exc`` is not a
        failure to reach or use Redis.
    """
    kind = kind_of(exc)
    if kind is None:
        return None
    chain = _chain(exc)
    # the client library's own words, not those of a wrapper that already added advice
    source = next((e for e in chain if type(e).__module__.startswith("redis.") and str(e)),
                  exc)
    detail = " ".join(str(source).split()).rstrip(".") or type(source).__name__
    for password in _passwords(url):
        detail = detail.replace(password, "***")
    return kind(mask_url(url), detail, timeout_s, variable)


def explain_either(exc: BaseException, redis_url: str, broker_url: str = "",
                   timeout_s: float | None = None) -> StoreUnavailable | None:
    """:func:`explain` for a process that uses the store's Redis (``redis_url``) and a
    broker's (``broker_url``, ``ORCH_BROKER_URL``; empty or the same: none apart)."""
    url = failing_url(exc, redis_url, broker_url)
    variable = "ORCH_REDIS_URL" if url == redis_url else "ORCH_BROKER_URL"
    return explain(exc, url, timeout_s, variable)


def failing_url(exc: BaseException, redis_url: str, broker_url: str = "") -> str:
    """Which Redis ``exc`` (raised while using them) is about: the broker's
    (``broker_url``, when it is another server than the store's ``redis_url``) if the
    error names its address, or came up through kombu (a publish); else the store's."""
    if not broker_url or broker_url.strip() == redis_url.strip():
        return redis_url
    chain = _chain(exc)
    words = " ".join(str(e) for e in chain)
    for part in broker_url.split(";"):
        try:
            parts = urlsplit(part)
            host, port = parts.hostname, parts.port or 6379
        except ValueError:
            continue
        if host and f"{host}:{port}" in words:
            return broker_url
    if any(type(e).__module__.startswith("kombu.") for e in chain):
        return broker_url
    return redis_url


def _passwords(url: str) -> list[str]:
    """The passwords of ``url``'s addresses (one, or one per Sentinel address)."""
    out = []
    for part in url.split(";"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            out.append(password)
    return out
