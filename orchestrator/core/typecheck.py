"""Static type compatibility between a step's output and the input that consumes it."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

UNKNOWN: Any = object()
"""The type of a value we cannot know statically (e.g. a field of an untyped dict)."""

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


def output_type(annotation: Any, path: tuple[str, ...]) -> Any:
    """Return the type at ``path`` inside a value of type ``annotation``.

    Returns:
        The field's annotation, :data:`UNKNOWN` when it cannot be known, or ``None`` when
        ``annotation`` is a pydantic model that has no such field (a definite error).
    """
    t = annotation
    for name in path:
        if t is UNKNOWN or t is Any:
            return UNKNOWN
        if isinstance(t, type) and issubclass(t, BaseModel):
            field = t.model_fields.get(name)
            if field is None:
                return None
            t = field.annotation
        else:
            return UNKNOWN
    return t


def schema_type(schema: Any, path: tuple[str, ...]) -> Any:
    """Return the Python type at ``path`` in a JSON schema, :data:`UNKNOWN`, or ``None``.

    ``None`` means the schema is a closed object (``additionalProperties: false``) that
    has no such property.
    """
    node = schema
    for name in path:
        if not isinstance(node, dict):
            return UNKNOWN
        props = node.get("properties")
        if isinstance(props, dict) and name in props:
            node = props[name]
            continue
        if node.get("additionalProperties") is False:
            return None
        return UNKNOWN
    if not isinstance(node, dict):
        return UNKNOWN
    t = node.get("type")
    if isinstance(t, str) and t in _JSON_TYPES:
        return _JSON_TYPES[t]
    return UNKNOWN


def _is_union(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType)


def compatible(src: Any, dst: Any) -> bool:
    """True when a value of type ``src`` can feed a parameter of type ``dst``.

    Lenient where we cannot know (``Any``, unknown, generics' arguments), strict where we
    can: ``str`` never feeds ``int``, a model never feeds an unrelated model.
    """
    if src is UNKNOWN or src is Any or dst is Any:
        return True
    if _is_union(src):
        return all(compatible(s, dst) for s in get_args(src))
    if _is_union(dst):
        return any(compatible(src, d) for d in get_args(dst))
    src_o, dst_o = get_origin(src) or src, get_origin(dst) or dst
    if not isinstance(src_o, type) or not isinstance(dst_o, type):
        return True
    if dst_o is float and src_o is int:
        return True
    if issubclass(dst_o, BaseModel) and src_o is dict:
        return True  # validated when the step runs
    if issubclass(src_o, BaseModel) and dst_o is dict:
        return True  # a model output crosses the wire as a JSON object
    if src_o is bool and dst_o is int:
        return False  # bool is an int subclass, but feeding it is almost always a bug
    return issubclass(src_o, dst_o)


def literal_fits(value: Any, dst: Any) -> str | None:
    """Return ``None`` if the literal ``value`` validates as ``dst``, else the reason."""
    if dst is Any:
        return None
    try:
        strict = dst in (int, float, str, bool)  # no "3" -> 3; dicts may still fill models
        TypeAdapter(dst).validate_python(value, strict=strict)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    except Exception:  # a type pydantic cannot build an adapter for: don't guess
        return None
    return None


def type_name(t: Any) -> str:
    """A short readable name of a type for error messages."""
    if t is UNKNOWN:
        return "unknown"
    if isinstance(t, type) and not get_args(t):
        return t.__name__
    return str(t).replace("typing.", "")
