"""Signing run-end callbacks, and verifying them on the receiving side.

The header is ``X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of the body, key
Settings.callback_secret>``; receivers check it with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(body: bytes, secret: str) -> str:
    """Return the signature header value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secret: str) -> bool:
    """True when ``signature`` (the header's value) signs ``body`` with ``secret``.

    The comparison takes the same time wherever the first difference is.
    """
    if not signature or not secret:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), signature.encode())
