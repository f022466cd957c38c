"""What a request may carry: a body up to ``Settings.api_max_body_bytes`` (413 past it),
and only the query parameters its endpoint declares (422 otherwise: a misspelt
``?wiat=10`` must not be silently ignored).

A declared ``Content-Length`` over the limit is answered at once, before the body is
read.  A body without one (chunked) is counted as it arrives; the read that crosses the
limit raises :class:`~orchestrator.errors.ApiError` (413), which the error handlers
answer in the one error shape.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.failures import error_json
from orchestrator.errors import ApiError


def too_large(limit: int) -> ApiError:
    """The 413 error for a body over ``limit`` bytes."""
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes",
                    "Send a smaller body (the limit is the server's "
                    "ORCH_API_MAX_BODY_BYTES).")


class BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                resp = error_json(400, "bad_content_length", "Content-Length is not a number",
                                  "Send a valid Content-Length, or none (chunked).")
                await resp(scope, receive, send)
                return
            if size > self.max_bytes:
                exc = too_large(self.max_bytes)
                resp = error_json(413, exc.code, exc.message, exc.fix,
                                  headers={"Connection": "close"})
                await resp(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_only(request: Request) -> None:
    """App-wide dependency: refuse query parameters the endpoint does not declare.

    Raises:
        ApiError: 422 ``unknown_parameter``, naming the parameters the endpoint takes.
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if not isinstance(dependant, Dependant):
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ApiError(422, "unknown_parameter",
                       f"unknown query parameter(s): {', '.join(unknown)}",
                       f"Remove them; this endpoint takes: {takes}.")
