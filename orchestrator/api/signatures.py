"""Verifying inbound webhooks: the Standard Webhooks scheme and GitHub's.

Pure functions over the raw body, the headers and the secret; each returns the sender's
message id (what deduplicates the event) or raises a 401 :class:`ApiError` whose message
says what was wrong.  Signatures are compared in constant time.

* **standard** (https://www.standardwebhooks.com, the ``standardwebhooks`` package):
  ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, several space-separated
  during a key rotation), secret ``whsec_<base64>``.  A timestamp further than the
  trigger's ``tolerance_s`` (at most 5 minutes) from our clock is refused: a captured
  request cannot be replayed later, and within the window its id finds its run.
* **github**: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.  GitHub
  signs no timestamp, so a captured request verifies forever: it is deduplicated by
  ``X-GitHub-Delivery`` (a redelivery keeps it), and never starts a second run.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

from orchestrator.core.triggers import WebhookScheme, WebhookSource
from orchestrator.errors import ApiError

GITHUB_SIGNATURE = "x-hub-signature-256"
GITHUB_DELIVERY = "x-github-delivery"
STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"
MAX_ID_CHARS = 200


def _refuse(message: str, fix: str) -> ApiError:
    return ApiError(401, "signature_invalid", message, fix)


def check_secret(scheme: WebhookScheme, secret: str) -> str | None:
    """What is wrong with ``secret`` for ``scheme`` (None: nothing)."""
    if not secret:
        return "the secret is empty"
    if scheme is WebhookScheme.STANDARD:
        try:
            Webhook(secret)
        except (ValueError, RuntimeError, EmptyWebhookSecretError) as exc:  # bad base64
            return f"not a Standard Webhooks secret (whsec_<base64>): {exc}"
    return None


def verify(source: WebhookSource, secret: str, body: bytes, headers: Mapping[str, str],
           now_s: float) -> str:
    """Check a webhook's signature.

    Args:
        source: the trigger's source (scheme and timestamp tolerance).
        secret: the trigger's secret.
        body: the raw request body, exactly as received.
        headers: the request's headers, names lower-cased.
        now_s: the server's clock (Unix seconds).

    Returns:
        The sender's message id (``webhook-id`` or ``X-GitHub-Delivery``).

    Raises:
        ApiError: 401 ``signature_invalid``: a header is missing, the timestamp is outside
            the window, or no signature matches.
    """
    if source.scheme is WebhookScheme.GITHUB:
        return _verify_github(secret, body, headers)
    return _verify_standard(secret, body, headers, source.tolerance_s, now_s)


def _verify_standard(secret: str, body: bytes, headers: Mapping[str, str],
                     tolerance_s: float, now_s: float) -> str:
    msg_id = headers.get(STANDARD_ID, "")
    stamp = headers.get(STANDARD_TIMESTAMP, "")
    if not (msg_id and stamp and headers.get(STANDARD_SIGNATURE)):
        raise _refuse("the webhook is not signed: webhook-id, webhook-timestamp and "
                      "webhook-signature are required",
                      "Sign the request with the Standard Webhooks scheme and the "
                      "trigger's secret.")
    if len(msg_id) > MAX_ID_CHARS:
        raise _refuse(f"webhook-id is longer than {MAX_ID_CHARS} characters",
                      "Send a shorter message id.")
    try:
        sent = float(stamp)
    except ValueError:
        sent = math.nan
    if not math.isfinite(sent) or abs(now_s - sent) > tolerance_s:
        raise _refuse(f"the webhook's timestamp {stamp[:20]!r} is not within "
                      f"{tolerance_s:g} s of the server's clock (a replay, or a clock off)",
                      "Sign with the current time; check the sender's clock.")
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed, not UTF-8
        raise _refuse(f"no webhook signature matches ({exc})",
                      "Sign '<webhook-id>.<webhook-timestamp>.<body>' with the trigger's "
                      "secret (the same whsec_ value as the server's).") from None
    return msg_id


def _verify_github(secret: str, body: bytes, headers: Mapping[str, str]) -> str:
    sent = headers.get(GITHUB_SIGNATURE, "")
    delivery = headers.get(GITHUB_DELIVERY, "")
    if not sent.startswith("sha256=") or not delivery:
        raise _refuse("the webhook is not signed: X-Hub-Signature-256 (sha256=...) and "
                      "X-GitHub-Delivery are required",
                      "Set the GitHub webhook's secret to the trigger's secret.")
    if len(delivery) > MAX_ID_CHARS:
        raise _refuse(f"X-GitHub-Delivery is longer than {MAX_ID_CHARS} characters",
                      "Send the delivery's GUID.")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise _refuse("X-Hub-Signature-256 does not match the body",
                      "Set the GitHub webhook's secret to the trigger's secret.")
    return delivery


def sign_standard(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The headers a Standard Webhooks sender adds (for clients and tests)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(timestamp_s, UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {STANDARD_ID: msg_id, STANDARD_TIMESTAMP: str(timestamp_s),
            STANDARD_SIGNATURE: signature}


def sign_github(secret: str, delivery: str, body: bytes) -> dict[str, str]:
    """The headers GitHub adds (for clients and tests)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}
