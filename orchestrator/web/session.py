"""Web UI sessions: a signed, expiring cookie that stands for an API token, and CSRF tokens.

A person signs in once with an API token (a POST form); the answer sets the session
cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``, ``Secure`` over https).  The
cookie holds no secret: ``<payload>.<signature>``, the payload being base64url JSON of the
token's key id (an HMAC of the token under the UI secret, so the token cannot be read back
from it), the expiry time and a random nonce; the signature is HMAC-SHA256 under
``Settings.ui_secret``.  A session lasts ``Settings.ui_session_s`` and ends early when its
token leaves ``ORCH_API_TOKENS`` (the key id no longer matches a token) or the secret
changes.  Its scopes are always the token's scopes as configured now.

Every state-changing request carries the session's CSRF token (a hidden form field, or
the ``X-CSRF-Token`` header from ``fetch``): an HMAC of the session's nonce, compared in
constant time.  The sign-in form itself is protected the same way by a short-lived
signed nonce cookie (login CSRF).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.api.auth import TokenTable
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.settings import ApiScope, ApiToken, Settings

SESSION_COOKIE = "orch_ui_session"
LOGIN_COOKIE = "orch_ui_login"
COOKIE_PATH = "/ui"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
LOGIN_NONCE_S = 1800


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the token's name and scopes, and the session's CSRF token."""

    name: str
    scopes: frozenset[ApiScope]
    csrf: str
    expires_at: float
    tenant: str = DEFAULT_TENANT
    """The token's tenant: the session sees only its runs (every tenant's with
    ``admin``)."""

    def can(self, scope: ApiScope) -> bool:
        """Whether the session's token grants ``scope``."""
        return scope in self.scopes


class Sessions:
    """Issues and checks session cookies and CSRF tokens under one secret."""

    def __init__(self, secret: bytes, tokens: Sequence[ApiToken], lifetime_s: int) -> None:
        """Args:
            secret: the signing key (``Settings.ui_secret``, or a random one).
            tokens: the API's tokens; a session names one of them.
            lifetime_s: how long a session lasts after sign-in.
        """
        self._secret = secret
        self._table = TokenTable.of(tokens)
        self._by_kid = {self._kid(t): t for t in tokens}
        self.lifetime_s = lifetime_s

    @classmethod
    def of(cls, settings: Settings) -> Sessions:
        """The sessions of an API process: its tokens, its UI secret (a random one when
        ``ORCH_UI_SECRET`` is empty: sessions then end when the process restarts)."""
        key = settings.ui_secret.get_secret_value().encode() or secrets.token_bytes(32)
        return cls(key, settings.api_tokens, settings.ui_session_s)

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"|" + data, hashlib.sha256).digest()

    def _kid(self, token: ApiToken) -> str:
        return _b64(self._mac("token", token.token.get_secret_value().encode())[:18])

    def _seal(self, purpose: str, payload: dict[str, object]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(purpose, body.encode()))}"

    def _open(self, purpose: str, value: str) -> dict[str, object] | None:
        body, _, sig = value.partition(".")
        try:
            good = hmac.compare_digest(_unb64(sig), self._mac(purpose, body.encode()))
            payload = json.loads(_unb64(body)) if good else None
        except (ValueError, TypeError):
            return None
        return payload if isinstance(payload, dict) else None

    def sign_in(self, presented: str) -> str | None:
        """The session cookie's value for a presented API token; None if it is unknown."""
        token = self._table.find(presented)
        if token is None:
            return None
        return self._seal("session", {"k": self._kid(token),
                                      "e": int(time.time()) + self.lifetime_s,
                                      "n": secrets.token_urlsafe(16)})

    def read(self, cookie: str | None) -> Viewer | None:
        """The viewer of a session cookie; None when it is missing, forged, expired, or
        its token is no longer configured."""
        payload = self._open("session", cookie) if cookie else None
        if payload is None:
            return None
        kid, expires, nonce = payload.get("k"), payload.get("e"), payload.get("n")
        if not (isinstance(kid, str) and isinstance(expires, int) and isinstance(nonce, str)):
            return None
        token = self._by_kid.get(kid)
        if token is None or expires <= time.time():
            return None
        return Viewer(name=token.name or "token", scopes=token.scopes,
                      csrf=_b64(self._mac("csrf", nonce.encode())), expires_at=expires,
                      tenant=token.tenant)

    def login_nonce(self) -> tuple[str, str]:
        """A fresh sign-in form's (cookie value, hidden field value)."""
        nonce = secrets.token_urlsafe(16)
        cookie = self._seal("login", {"n": nonce, "e": int(time.time()) + LOGIN_NONCE_S})
        return cookie, _b64(self._mac("login-csrf", nonce.encode()))

    def login_ok(self, cookie: str | None, field: str) -> bool:
        """Whether a sign-in form's hidden field matches its nonce cookie (not expired)."""
        payload = self._open("login", cookie) if cookie else None
        if payload is None:
            return False
        nonce, expires = payload.get("n"), payload.get("e")
        if not isinstance(nonce, str) or not isinstance(expires, int) or expires <= time.time():
            return False
        return hmac.compare_digest(field.encode(),
                                   _b64(self._mac("login-csrf", nonce.encode())).encode())


def csrf_ok(viewer: Viewer, presented: str | None) -> bool:
    """Whether ``presented`` is the viewer's CSRF token (constant time)."""
    return presented is not None and hmac.compare_digest(presented.encode(),
                                                         viewer.csrf.encode())
