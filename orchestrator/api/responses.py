"""The API's JSON responses: UTF-8, and never a 500 for a string Python cannot encode.

JSON allows a lone surrogate (``"\\ud800"``) in a string; UTF-8 cannot carry it.  Run
inputs with one are refused at the door (400), but a step function may still return one
in its output.  Such a body is sent with non-ASCII characters escaped (``\\ud800``): the
same JSON value, faithfully, instead of a failed encode.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse as _Starlette
from fastapi.responses import Response
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError


class JSONResponse(_Starlette):
    """Starlette's JSON response, falling back to ASCII escapes when UTF-8 cannot encode
    the content."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("ascii")


def model_response(model: BaseModel, status_code: int = 200,
                   headers: dict[str, str] | None = None) -> Response:
    """``model`` as a JSON response, encoded by pydantic (a quarter of the CPU of
    ``model_dump`` and ``json.dumps``: it is the submit's answer); a model holding a
    string UTF-8 cannot carry goes by :class:`JSONResponse`, escaped."""
    try:
        body = model.model_dump_json()
    except PydanticSerializationError:
        return JSONResponse(model.model_dump(mode="json"), status_code=status_code,
                            headers=headers)
    return Response(body, status_code=status_code, headers=headers,
                    media_type="application/json")


def unencodable(value: Any) -> str | None:
    """The path (``a/0/b``) of the first string (key or value) in ``value`` that UTF-8
    cannot encode, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return path or "(input)"
        elif isinstance(v, dict):
            for k, x in v.items():
                where = f"{path}/{k}" if path else str(k)
                try:
                    str(k).encode("utf-8")
                except UnicodeEncodeError:
                    return (path + "/" if path else "") + "(a key)"
                stack.append((x, where))
        elif isinstance(v, list):
            stack.extend((x, f"{path}/{i}" if path else str(i)) for i, x in enumerate(v))
    return None
