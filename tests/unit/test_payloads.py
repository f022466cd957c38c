"""Sizes of run inputs and step outputs, and their limits (pure: no store, no worker)."""

from __future__ import annotations

import pytest

from orchestrator.core.payloads import check_input, check_output, json_size
from orchestrator.errors import InputInvalid, RunInputTooLarge, StepOutputTooLarge
from orchestrator.settings import Settings


def test_the_size_is_compact_json_in_utf8() -> None:
    assert json_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert json_size("é") == 4  # two quotes, two bytes
    assert json_size("\U0001f600") == 6
    assert json_size("\ud800") == 5  # a lone surrogate: counted, not refused
    assert json_size(None) == 4


def test_an_input_at_the_limit_passes_and_one_byte_more_is_refused() -> None:
    value = {"pad": "x" * 100}
    limit = json_size(value)
    check_input(value, limit, "wf")
    with pytest.raises(RunInputTooLarge) as info:
        check_input(value, limit - 1, "wf")
    message = str(info.value)
    assert "workflow 'wf'" in message and f"{limit:,} bytes" in message
    assert "ORCH_RUN_INPUT_MAX_BYTES" in message and "by reference" in message
    assert isinstance(info.value, InputInvalid)  # callers that refuse bad input refuse it


def test_an_input_that_is_not_json_is_invalid() -> None:
    with pytest.raises(InputInvalid, match="not JSON data"):
        check_input({"when": {1, 2}}, 1024, "wf")
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InputInvalid, match="not JSON data"):
        check_input(loop, 1024, "wf")


def test_an_output_over_the_limit_names_the_step_and_the_setting() -> None:
    check_output({"url": "s3://bucket/key"}, 1024, "extract")
    with pytest.raises(StepOutputTooLarge) as info:
        check_output({"rows": ["x" * 600, "y" * 600]}, 1024, "extract")
    message = str(info.value)
    assert "step 'extract'" in message and "ORCH_STEP_OUTPUT_MAX_BYTES" in message
    assert "reference" in message


def test_the_limits_are_settings_with_one_mib_defaults(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    s = Settings()
    assert s.run_input_max_bytes == s.step_output_max_bytes == 1024 * 1024
    monkeypatch.setenv("ORCH_RUN_INPUT_MAX_BYTES", "4096")
    monkeypatch.setenv("ORCH_STEP_OUTPUT_MAX_BYTES", "8192")
    s = Settings()
    assert (s.run_input_max_bytes, s.step_output_max_bytes) == (4096, 8192)
