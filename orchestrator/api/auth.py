"""Bearer-token authentication with scopes (``Settings.api_tokens``).

Every endpoint but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``:
no header or an unknown token is a 401, a known token without the endpoint's scope a 403.
Tokens are compared by their SHA-256 digests with :func:`hmac.compare_digest`, against
every configured token (no early exit), so timing tells nothing about a near match.

The dependencies are ``async def`` although they never wait: FastAPI runs a plain
``def`` dependency in a worker thread, and those hand-offs cost the API more CPU per
request than the checks themselves (measured with ``python -m bench.api``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.errors import ApiError
from orchestrator.settings import ApiScope, ApiToken

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A token from ORCH_API_TOKENS. Scopes: runs:read, runs:write, "
                    "workflows:read.")


@dataclass(frozen=True)
class TokenTable:
    """The configured tokens, kept as SHA-256 digests."""

    entries: tuple[tuple[bytes, ApiToken], ...]

    @classmethod
    def of(cls, tokens: Sequence[ApiToken]) -> TokenTable:
        """Digest ``tokens`` once, at start-up."""
        return cls(tuple((_digest(t.token.get_secret_value()), t) for t in tokens))

    def find(self, presented: str) -> ApiToken | None:
        """The configured token equal to ``presented``, or None."""
        probe = _digest(presented)
        found: ApiToken | None = None
        for digest, token in self.entries:
            if hmac.compare_digest(digest, probe):
                found = token
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def authorize(table: TokenTable, credentials: HTTPAuthorizationCredentials | None,
              scope: ApiScope | None) -> ApiToken:
    """Return the caller's token if it grants ``scope`` (None: any valid token will do).

    Raises:
        ApiError: 401 without a bearer token or with an unknown one; 403 when the token
            lacks ``scope``.
    """
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "unauthorized", "this endpoint needs a bearer token",
                       "Send `Authorization: Bearer <token>` with a token from the "
                       "server's ORCH_API_TOKENS.")
    token = table.find(credentials.credentials)
    if token is None:
        raise ApiError(401, "unauthorized", "the bearer token is not valid",
                       "Use a token from the server's ORCH_API_TOKENS.")
    if scope is not None and scope not in token.scopes:
        raise ApiError(403, "insufficient_scope",
                       f"the token does not grant the scope {scope!r}",
                       f"Use a token whose scopes include {scope!r}.")
    return token


def _table(request: Request) -> TokenTable:
    table: TokenTable = request.app.state.tokens
    return table


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def read_runs(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may read runs (``runs:read``)."""
    return authorize(_table(request), credentials, "runs:read")


async def read_metrics(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may scrape the metrics (``metrics:read``)."""
    return authorize(_table(request), credentials, "metrics:read")


async def read_triggers(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may read event triggers and their events (``triggers:read``)."""
    return authorize(_table(request), credentials, "triggers:read")


async def write_runs(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may start and cancel runs (``runs:write``)."""
    return authorize(_table(request), credentials, "runs:write")


async def write_events(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may send events to waiting steps (``events:write``)."""
    return authorize(_table(request), credentials, "events:write")


async def read_workflows(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may read workflow definitions (``workflows:read``)."""
    return authorize(_table(request), credentials, "workflows:read")


async def any_token(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller has a valid token, whatever its scopes (the OpenAPI schema)."""
    return authorize(_table(request), credentials, None)
