"""The run page names the run's OpenTelemetry trace and links to it
(``ORCH_TRACE_URL_TEMPLATE``), in a real headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.runtime.tracing import trace_id_hex
from tests.browser.conftest import TRACE_URL, UiStack
from tests.integration.conftest import wait_run
from tests.support.api import RO_TOKEN

pytestmark = pytest.mark.redis


def test_run_page_links_to_the_trace(ui_stack: UiStack, signed_in: Any) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("fail_flow")
    wait_run(coord, run_id)
    tid = trace_id_hex(run_id, coord.settings.key_prefix)
    page = signed_in(RO_TOKEN)
    page.goto(f"{ui_stack.url}/ui/runs/{run_id}")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    assert page.locator("#trace-id").inner_text() == tid
    link = page.locator("#trace-link")
    assert link.get_attribute("href") == TRACE_URL.replace("{trace_id}", tid)
    assert link.get_attribute("rel") == "noreferrer"
