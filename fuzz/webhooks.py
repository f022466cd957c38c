"""Fuzz target ``webhooks``: the inbound webhook verifier
(:func:`orchestrator.api.signatures.verify`, Standard Webhooks and GitHub) and the
callback verifier receivers use (:func:`orchestrator.callbacks.signing.verify`).

The input is NUL-separated fields, ``<scheme> <secret> <id> <timestamp> <signature>
<body>``, with scheme ``g`` (GitHub), ``c`` (a callback receiver's check) or anything
else (Standard Webhooks, e.g. ``s``).  Header values are latin-1 text, as the server
decodes them; the body is bytes.  An empty secret means a fixed valid one, a timestamp
``!`` means now, and a signature ``!`` means the harness signs the request itself (and
then changes the body's first byte when the body starts with ``~``): so the fuzzer
reaches the accepting path, and a tampered body must be refused.  Allowed outcomes: a
message id, or a 401 :class:`~orchestrator.errors.ApiError` (``signatures``); ``True`` or
``False`` (``signing``).  Accepting a tampered body is a crash too.
"""

from __future__ import annotations

import time

from orchestrator.api import signatures
from orchestrator.callbacks import signing
from orchestrator.core.triggers import WebhookScheme, WebhookSource
from orchestrator.errors import ApiError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""A valid Standard Webhooks secret (a test value, not a credential)."""


class Tampered(AssertionError):
    """A body changed after signing was accepted."""


def _fields(data: bytes) -> tuple[bytes, str, str, str, str, bytes]:
    parts = data.split(b"\x00", 5)
    parts += [b""] * (6 - len(parts))
    scheme, secret, msg_id, stamp, signature, body = parts
    text = [p.decode("latin-1") for p in (secret, msg_id, stamp, signature)]
    return scheme, text[0], text[1], text[2], text[3], body


def test_one_input(data: bytes) -> None:
    """Verify the request ``data`` describes; raise only on a crash."""
    scheme, secret, msg_id, stamp, signature, body = _fields(data)
    secret = secret or SECRET
    now = time.time()
    if stamp == "!":
        stamp = str(int(now))
    tamper = body.startswith(b"~")
    if scheme == b"g":
        source = WebhookSource(scheme=WebhookScheme.GITHUB)
        headers = {signatures.GITHUB_DELIVERY: msg_id, signatures.GITHUB_SIGNATURE: signature}
        if signature == "!":
            signed = signatures.sign_github(secret, msg_id, body)
            headers = {k.lower(): v for k, v in signed.items()}
    else:
        source = WebhookSource()
        headers = {signatures.STANDARD_ID: msg_id, signatures.STANDARD_TIMESTAMP: stamp,
                   signatures.STANDARD_SIGNATURE: signature}
        if signature == "!" and stamp.isdigit() and len(stamp) < 12:
            try:
                key = SECRET if scheme != b"c" and signatures.check_secret(
                    WebhookScheme.STANDARD, secret) else secret
                headers = signing.headers(body, key, msg_id, int(stamp)) if scheme == b"c" \
                    else signatures.sign_standard(key, msg_id, int(stamp), body)
                secret = key
            except (UnicodeDecodeError, ValueError):
                return  # a sender cannot sign a body that is not UTF-8 text
    if tamper and signature == "!":
        body = b"!" + body[1:]
    if scheme == b"c":
        ok = signing.verify(body, headers, secret, seen=lambda _: False)
        if ok and tamper:
            raise Tampered(f"a tampered callback verified: {data!r}")
        return
    if scheme != b"g" and signatures.check_secret(WebhookScheme.STANDARD, secret):
        return  # the API refuses such a trigger secret when it starts (api/hooks.py)
    try:
        signatures.verify(source, secret, body, headers, now)
    except ApiError as exc:
        if exc.status_code != 401:
            raise
        return
    if tamper and signature == "!":
        raise Tampered(f"a tampered webhook verified: {data!r}")
