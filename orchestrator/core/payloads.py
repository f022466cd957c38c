"""Run inputs and step outputs: their size as JSON, and the limits on it.

Every run input and every step output is stored in the run store and read by the steps
after it, the API and the web UI, so each is bounded: ``Settings.run_input_max_bytes``
and ``Settings.step_output_max_bytes`` (1 MiB each by default).  Larger data goes by
reference: the input or output names where the data is (an object-store URL, a path on a
shared volume), and the step that needs it reads it from there.

The size of a value is the length of its compact JSON (``","`` and ``":"`` without
spaces) encoded as UTF-8: what it costs, whatever the store's own encoding.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import InputInvalid, RunInputTooLarge, StepOutputTooLarge


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON in UTF-8 (a lone surrogate counts 3 bytes).

    Raises:
        TypeError: ``value`` is not JSON data (a set, an object).
        ValueError: it is circular.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def check_input(value: Any, max_bytes: int, workflow: str) -> None:
    """Refuse a run input larger than ``max_bytes`` as JSON.

    Raises:
        RunInputTooLarge: larger; the message names the setting and says to pass a
            reference.
        InputInvalid: ``value`` is not JSON data.
    """
    try:
        size = json_size(value)
    except (TypeError, ValueError) as exc:
        raise InputInvalid(f"input of workflow {workflow!r} is not JSON data: {exc}. Fix: "
                           "pass dicts, lists, strings, numbers, booleans and null only"
                           ) from None
    if size > max_bytes:
        raise RunInputTooLarge(
            f"input of workflow {workflow!r} is {size:,} bytes as JSON, more than the "
            f"{max_bytes:,} a run input may have (ORCH_RUN_INPUT_MAX_BYTES). Fix: pass "
            "larger data by reference (e.g. an object-store URL in the input), not the "
            "data itself")


def check_output(value: Any, max_bytes: int, step: str) -> None:
    """Refuse a step output larger than ``max_bytes`` as JSON (``value`` is JSON data:
    the worker made it so).

    Raises:
        StepOutputTooLarge: larger; the message names the setting and says to return a
            reference.
    """
    size = json_size(value)
    if size > max_bytes:
        raise StepOutputTooLarge(
            f"the output of step {step!r} is {size:,} bytes as JSON, more than the "
            f"{max_bytes:,} a step output may have (ORCH_STEP_OUTPUT_MAX_BYTES, read by the "
            "workers). Fix: store the data elsewhere (an object store, a shared volume) "
            "and return a reference to it (e.g. its URL), not the data itself")
