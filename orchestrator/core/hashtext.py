"""The canonical text of a workflow, the one its version hashes, spliced from its steps'.

The text is the definition's JSON with its keys sorted and no spaces, the label left out
and every field at its default left out (so spelling a default out, or a field added
later with a default, changes no version)::

    json.dumps(wf.model_dump(mode="json", by_alias=True, exclude={"label"},
                             exclude_defaults=True),
               sort_keys=True, separators=(",", ":"))

:func:`canonical_text` returns exactly that text, byte for byte, without dumping the whole
model: JSON with sorted keys is its members' texts joined in key order, so the steps'
texts are made one by one and spliced in.  A step that sets nothing but plain text fields
(id, function, ``after``, …: most steps of a large workflow) has its text written here
directly; any other step is dumped as above.  ``tests/unit/test_hashtext.py`` holds the
two ways equal.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from orchestrator.core.models import StepDef, WorkflowDef


def _dumps(value: Any) -> str:
    """JSON as the version hashes it: sorted keys, no spaces, non-ASCII escaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def dump_text(model: Any, exclude: set[str] | None = None) -> str:
    """The canonical text of any model, the slow way (what :func:`canonical_text`
    reproduces).

    Args:
        model: a pydantic model.
        exclude: fields left out.
    """
    return _dumps(model.model_dump(mode="json", by_alias=True, exclude=exclude,
                                   exclude_defaults=True))


_TEXT_FIELDS = frozenset(("after", "description", "function", "id", "on_failure", "queue",
                          "when"))
"""The step fields a plain step may set: text, or a tuple of text.  Their JSON keys are
their names (no alias)."""

_NO_DEFAULT = object()
_DEFAULTS = {name: _NO_DEFAULT if f.is_required() else f.get_default()
             for name, f in StepDef.model_fields.items() if name in _TEXT_FIELDS}
_KEYS = {name: _dumps(name) + ":" for name in _TEXT_FIELDS}
_ID_FUNCTION_AFTER = frozenset(("id", "function", "after"))


def step_text(step: StepDef) -> str:
    """The canonical text of one step (an element of the workflow text's ``steps``).

    A step whose explicitly set fields (pydantic's ``model_fields_set``) are all text
    fields is plain: every other field holds its default, which the text leaves out.
    """
    given = step.__pydantic_fields_set__
    if type(step) is not StepDef or not given <= _TEXT_FIELDS:
        return dump_text(step)
    values = step.__dict__
    if given == _ID_FUNCTION_AFTER and values["after"]:  # most steps of a large workflow
        return ('{"after":[' + ",".join(map(encode_basestring_ascii, values["after"]))
                + '],"function":' + encode_basestring_ascii(values["function"])
                + ',"id":' + encode_basestring_ascii(values["id"]) + "}")
    out: list[str] = []
    for name in sorted(given):  # the JSON keys are the names
        v = values[name]
        if v == _DEFAULTS[name]:
            continue  # a default spelled out: pydantic's exclude_defaults leaves it out
        if isinstance(v, str):
            out.append(_KEYS[name] + encode_basestring_ascii(v))
        else:
            out.append(_KEYS[name] + "[" + ",".join(map(encode_basestring_ascii, v)) + "]")
    return "{" + ",".join(out) + "}"


def canonical_text(wf: WorkflowDef) -> str:
    """The text ``wf``'s version hashes (see the module's docstring), built from its
    fields' and its steps' texts.

    Args:
        wf: the workflow.

    Returns:
        Its canonical JSON text.
    """
    head = wf.model_dump(mode="json", by_alias=True, exclude={"label", "steps"},
                         exclude_defaults=True)
    pieces = {k: _dumps(v) for k, v in head.items()}
    pieces["steps"] = "[" + ",".join(map(step_text, wf.steps)) + "]"
    return "{" + ",".join(_dumps(k) + ":" + pieces[k] for k in sorted(pieces)) + "}"
