"""Signing run-end callbacks, and verifying them on the receiving side.

Every callback carries ``X-Orchestrator-Timestamp: <Unix seconds>`` and
``X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body, key
Settings.callback_secret>``.  Signing the timestamp with the body lets a receiver refuse
a replayed callback: :func:`verify` rejects a timestamp older (or newer) than its
tolerance, 5 minutes by default.  Receivers dedupe with ``X-Orchestrator-Message-Id``
(the run id: one callback per run, whatever the attempts).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_S = 300.0
"""How far a callback's timestamp may be from the receiver's clock."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secret: str, timestamp: str | int | None,
           *, tolerance_s: float = TOLERANCE_S, now: float | None = None) -> bool:
    """True when ``signature`` signs ``timestamp`` and ``body`` with ``secret`` and the
    timestamp is within ``tolerance_s`` of ``now`` (default: this machine's clock).

    The comparison takes the same time wherever the first difference is.
    """
    if not signature or not secret or timestamp is None:
        return False
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(body, secret, ts).encode(), signature.encode())
