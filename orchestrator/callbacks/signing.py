"""Signing run-end callbacks per the Standard Webhooks specification, and verifying them.

Every callback carries the three headers of https://www.standardwebhooks.com:

* ``webhook-id``: the message id, the run id (one callback per run, whatever the tries:
  receivers dedupe on it);
* ``webhook-timestamp``: Unix seconds of this try;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``.

The key is ``Settings.callback_secret``: a ``whsec_<base64>`` secret is used as its
decoded bytes (the specification's form), any other text as its UTF-8 bytes.  Receivers
verify with any Standard Webhooks library, e.g. in Python
``standardwebhooks.Webhook(secret.encode()).verify(body, headers)``, or with
:func:`verify` here, which also refuses a message id it has seen (a replay within the
5-minute timestamp tolerance; a later replay fails on its timestamp).

For receivers written against release 0.1.0, the ``X-Orchestrator-Timestamp`` and
``X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`` headers
are still sent (:func:`verify_legacy`); they will be dropped in a later release.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

TOLERANCE_S = 300.0
"""How far a callback's timestamp may be from the receiver's clock (the specification's
libraries use 5 minutes)."""
LEGACY_SIGNATURE_HEADER = "X-Orchestrator-Signature"
LEGACY_TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
LEGACY_MESSAGE_ID_HEADER = "X-Orchestrator-Message-Id"


def key(secret: str) -> bytes:
    """The HMAC key of ``secret``: a ``whsec_`` secret's decoded bytes, else its UTF-8.

    Raises:
        ValueError: a ``whsec_`` secret that is not base64 of at least one byte, or a
            secret that is not text (a lone surrogate).
    """
    if secret.startswith("whsec_"):
        decoded = base64.b64decode(secret.removeprefix("whsec_") + "==")
        if not decoded:
            raise ValueError("a whsec_ secret must be whsec_ and the base64 of at least "
                             "one byte")
        return decoded
    return secret.encode()


def headers(body: bytes, secret: str, message_id: str, timestamp: int) -> dict[str, str]:
    """The signature headers of one try: Standard Webhooks', then the legacy ones."""
    when = datetime.fromtimestamp(timestamp, UTC)
    signature = Webhook(key(secret)).sign(message_id, when, body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
            LEGACY_SIGNATURE_HEADER: sign(body, secret, timestamp),
            LEGACY_TIMESTAMP_HEADER: str(timestamp), LEGACY_MESSAGE_ID_HEADER: message_id}


def verify(body: bytes, received: Mapping[str, str], secret: str, *,
           seen: Callable[[str], bool] | None = None) -> bool:
    """True when ``received`` (the request's headers) carry a valid Standard Webhooks
    signature of ``body`` by ``secret``, with a timestamp within 5 minutes of this
    machine's clock, and ``seen`` (if given) says the message id is new.

    ``seen(message_id)`` should record the id and return whether it was recorded before
    (e.g. Redis ``SET id 1 NX EX 600`` returning false).
    """
    if not secret:
        return False
    try:
        Webhook(key(secret)).verify(body, dict(received), json_parse=False)
    except (WebhookVerificationError, EmptyWebhookSecretError, ValueError):
        return False  # ValueError: a malformed header or secret, a body not UTF-8
    message_id = {k.lower(): v for k, v in received.items()}["webhook-id"]
    return seen is None or not seen(message_id)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The legacy signature: ``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_legacy(body: bytes, signature: str | None, secret: str,
                  timestamp: str | int | None, *, tolerance_s: float = TOLERANCE_S,
                  now: float | None = None) -> bool:
    """The legacy check: ``signature`` signs ``timestamp`` and ``body`` with ``secret``
    and the timestamp is within ``tolerance_s`` of ``now`` (default: this machine's
    clock).  The comparison takes the same time wherever the first difference is."""
    if not signature or not secret or timestamp is None:
        return False
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(body, secret, ts).encode(), signature.encode())
