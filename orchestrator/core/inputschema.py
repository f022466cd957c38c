"""A workflow's input schema as a checker, built once per version.

Building a ``jsonschema`` validator walks the schema and resolves its vocabulary; a
submit only needs to run it.  A version's schema never changes (the version is the hash
of the content), so the validator of a version is built the first time one of its runs
is submitted in this process and reused by every later one (least recently used out past
:data:`CACHE_SIZE` versions).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from jsonschema import Draft202012Validator

from orchestrator import forks
from orchestrator.core.models import WorkflowDef

CACHE_SIZE = 256
"""Versions whose validators a process keeps (as many as its definitions cache)."""

_cache: OrderedDict[tuple[str, str], Draft202012Validator] = OrderedDict()
_lock = forks.lock()


def validator(wf: WorkflowDef) -> Draft202012Validator:
    """The validator of ``wf``'s ``input_schema`` (JSON Schema 2020-12), built once per
    version in this process.  Keyed by the version and the schema's canonical JSON, so
    two definitions that share a version but not a schema (never, unless the version
    was forged) cannot share a validator."""
    key = (wf.version, json.dumps(wf.input_schema, sort_keys=True, separators=(",", ":")))
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    built = Draft202012Validator(wf.input_schema)  # the schema as written: same error order
    with _lock:
        _cache[key] = built
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return built


def problems(wf: WorkflowDef, data: Any) -> list[str]:
    """Every place where ``data`` breaks ``wf``'s input schema, as ``path: message``
    (``(input)`` for the top), sorted by path; empty when it matches."""
    checker = validator(wf)
    if checker.is_valid(data):  # the common case: one pass, no error objects
        return []
    errors = sorted(checker.iter_errors(data), key=lambda e: list(e.path))
    return [f"{'/'.join(str(p) for p in e.path) or '(input)'}: {e.message}" for e in errors]
