"""JSON given on the command line: inline text, or ``@file.json``."""

from __future__ import annotations

import json
from typing import Any

import click


def read_json(value: str | None, default: Any = None, *, option: str = "--input") -> Any:
    """Parse ``value`` (JSON text, or ``@path`` of a JSON file); ``default`` when None.

    Raises:
        click.BadParameter: the file cannot be read, or the text is not JSON.
    """
    if value is None:
        return default
    text = value
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}",
                                     param_hint=option) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from exc
