"""The web UI in a real headless Chromium (Playwright driving Debian's ``chromium``),
against the API process, a private Redis and real workers.

Each test fails when the page is broken: it waits for what a person would see (a
status badge, a step's reason, a traceback), never for time to pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import FLOWER_LOGIN, UiStack, wait_status
from tests.integration.conftest import wait_run
from tests.support.api import RO_TOKEN, RW_TOKEN
from tests.support.wait import wait_until
from workflows.order import systems

pytestmark = pytest.mark.redis

ORDER = {"order_id": "o-ui", "sku": "SKU-UI", "qty": 1, "customer_email": "ui@example.com"}
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
TIMEOUT_MS = 30_000


def _node(page: Any, step: str) -> Any:
    return page.locator(f'svg.graph g.node[data-step="{step}"]')


def _expect_node(page: Any, step: str, status: str) -> None:
    page.wait_for_selector(f'svg.graph g.node[data-step="{step}"][data-status="{status}"]',
                           timeout=TIMEOUT_MS)


def _open_run(page: Any, base: str, run_id: str, fragment: str = "") -> None:
    page.goto(f"{base}/ui/runs/{run_id}{fragment}")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)


def test_order_run_updates_live_and_shows_the_skipped_back_order(
        ui_stack: UiStack, signed_in: Any, shots: Path) -> None:
    coord, r = ui_stack.coord, ui_stack.r
    systems.set_stock(r, "SKU-UI", 5)
    systems.hold_payments(r)  # the run waits for the payment event: the page opens mid-run
    try:
        run_id = coord.submit("customer_order", ORDER)
        page = signed_in(RW_TOKEN)
        _open_run(page, ui_stack.url, run_id)
        wait_status(coord, run_id, "await_payment", "waiting")
        _expect_node(page, "await_payment", "waiting")  # live, from the server-sent events
        _expect_node(page, "reserve_item", "succeeded")
        assert _node(page, "send_shipping_request").get_attribute("data-status") == "pending"
        assert page.locator("#run-status").inner_text() == "running"
        coord.send_event(systems.payment_event("o-ui"), {"payment_id": "PAY-o-ui"}, by="test")
        _expect_node(page, "send_shipping_request", "succeeded")
        _expect_node(page, "notify_customer", "succeeded")
        page.wait_for_selector("#run-status >> text=succeeded", timeout=TIMEOUT_MS)
    finally:
        systems.hold_payments(r, False)
    # the Gantt chart and the critical path
    assert page.locator("svg.gantt g.row").count() >= 8
    assert page.locator("svg.graph g.node.critical").count() >= 3
    assert page.locator('svg.graph g.node.critical[data-step="receive_order"]').count() == 1
    # the back-order step was skipped: its reason says why
    _node(page, "notify_backorder").click()
    page.wait_for_selector("#detail-title >> text=notify_backorder")
    assert page.locator("#detail-status").inner_text() == "skipped"
    assert "condition" in page.locator("#detail-reason").inner_text()
    assert "in_stock" in page.locator("#step-detail").inner_text()  # the condition shown
    trail = page.locator("#detail-decision").inner_text()  # and what it read and gave
    assert "steps.check_inventory.output" in trail and "false" in trail, trail
    # a step's output, truncated preview and download
    page.locator("tr[data-step=send_shipping_request] button").click()
    page.wait_for_selector("#output-download")
    assert "TRK-o-ui" in page.locator("#step-detail").inner_text()
    _node(page, "notify_backorder").click()  # the screenshot shows the skipped step
    page.wait_for_selector("#detail-reason")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "ui-run.png"), full_page=True)


def test_failed_step_shows_its_traceback_and_links_to_flower(
        ui_stack: UiStack, signed_in: Any) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("fail_flow")
    view = wait_run(coord, run_id)
    bad = next(s for s in view.steps if s.step_id == "bad")
    user, password = FLOWER_LOGIN  # the browser answers Flower's login prompt
    page = signed_in(RW_TOKEN, http_credentials={"username": user, "password": password})
    _open_run(page, ui_stack.url, run_id)
    assert page.locator("#run-status").inner_text() == "failed"
    _node(page, "bad").focus()  # keyboard: focus the box, press Enter
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail-error")
    assert "bad step" in page.locator("#detail-error").inner_text()
    page.locator("#traceback summary").click()
    trace = page.locator("#traceback pre")
    trace.wait_for(state="visible")
    assert "RuntimeError: bad step" in trace.inner_text()
    link = page.locator("#flower-link")
    assert bad.task_id
    flower = ui_stack.flower_url
    assert link.get_attribute("href") == f"{flower}/task/{bad.task_id}"
    # following it opens the real Flower's page of that task, which shows it failed
    with page.expect_request(re.compile(r".*/task/.*")) as req:
        link.click()
    assert req.value.url == f"{flower}/task/{bad.task_id}"
    assert "referer" not in {k.lower() for k in req.value.headers}
    page.wait_for_url(f"{flower}/task/{bad.task_id}")

    def flower_shows_the_failure() -> bool:
        text = page.locator("body").inner_text()
        if bad.task_id in text and "FAILURE" in text:
            return True
        page.reload()  # Flower may still be reading the task's events
        return False

    wait_until(flower_shows_the_failure, 30, interval_s=0.5,
               message=lambda: page.locator("body").inner_text()[:500])
    assert "RuntimeError" in page.locator("body").inner_text()


def test_a_resumed_run_and_the_run_it_resumes_link_to_each_other(
        ui_stack: UiStack, signed_in: Any) -> None:
    coord = ui_stack.coord
    first = coord.submit("fail_flow")
    wait_run(coord, first)
    second, _ = coord.resume(first)
    wait_run(coord, second)
    page = signed_in(RO_TOKEN)
    _open_run(page, ui_stack.url, first)
    page.locator("#resumed-by a").click()
    page.wait_for_url(f"{ui_stack.url}/ui/runs/{second}")
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)
    assert page.locator("#resumed-from").inner_text() == first
    assert page.locator("#undo-run").count() == 0  # fail_flow compensates nothing


def test_cancel_a_run_and_read_only_sees_no_button(ui_stack: UiStack, signed_in: Any) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("cancel_flow")
    wait_status(coord, run_id, "first", "running")
    ro = signed_in(RO_TOKEN)
    _open_run(ro, ui_stack.url, run_id)
    assert ro.locator("#cancel").count() == 0
    page = signed_in(RW_TOKEN)
    _open_run(page, ui_stack.url, run_id)
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_selector("#run-status >> text=cancelled", timeout=TIMEOUT_MS)
    _expect_node(page, "second", "cancelled")
    assert coord.store.run(run_id).status.value == "cancelled"
    assert page.locator("#cancel").count() == 0
    # the read-only page follows the same run live
    ro.wait_for_selector("#run-status >> text=cancelled", timeout=TIMEOUT_MS)


def test_runs_list_filters_and_updates_live(ui_stack: UiStack, signed_in: Any,
                                            shots: Path) -> None:
    coord = ui_stack.coord
    page = signed_in(RW_TOKEN)
    page.goto(f"{ui_stack.url}/ui/runs?workflow=grandparent_condition&since=3600")
    page.wait_for_selector("body[data-ready=true]")
    assert page.get_by_label("Workflow").input_value() == "grandparent_condition"
    run_id = coord.submit("grandparent_condition")  # appears without a reload
    row = page.locator(f'tr[data-run="{run_id}"]')
    row.wait_for(timeout=TIMEOUT_MS)
    row.locator("text=succeeded").wait_for(timeout=TIMEOUT_MS)
    other = coord.submit("logging_flow")
    wait_run(coord, other)
    assert page.locator(f'tr[data-run="{other}"]').count() == 0  # filtered out
    page.get_by_label("Status").select_option("failed")
    page.wait_for_url(re.compile(r".*status=failed.*"))
    page.wait_for_selector("text=No run matches.", timeout=TIMEOUT_MS)
    page.get_by_label("Status").select_option("")
    page.get_by_label("Started by").select_option("python")
    page.locator(f'tr[data-run="{run_id}"]').wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(shots / "ui-runs.png"))
    row = page.locator(f'tr[data-run="{run_id}"] a')
    row.click()
    page.wait_for_selector("body[data-ready=true]")
    assert run_id in page.locator("h1").inner_text()


def test_workflows_and_workers_pages(ui_stack: UiStack, signed_in: Any, shots: Path) -> None:
    coord = ui_stack.coord
    wait_run(coord, coord.submit("grandparent_condition"))
    page = signed_in(RO_TOKEN)
    page.goto(f"{ui_stack.url}/ui/workflows")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("link", name="grandparent_condition").click()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("svg.graph g.node").count() == 4
    assert page.locator("#success-rate").inner_text() == "100 %"
    page.goto(f"{ui_stack.url}/ui/workers")
    page.wait_for_selector("#queues-body tr[data-queue=default]", timeout=TIMEOUT_MS)
    assert "ui1@test" in page.locator("#queues-body").inner_text()
    link = page.locator('#workers-body tr[data-worker="ui1@test"] a')
    assert link.get_attribute("href") == f"{ui_stack.flower_url}/worker/ui1@test"
    page.screenshot(path=str(shots / "ui-workers.png"))


def _axe(page: Any) -> list[dict[str, Any]]:
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_accessibility_has_no_serious_violations(ui_stack: UiStack, signed_in: Any) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("fail_flow")
    wait_run(coord, run_id)
    page = signed_in(RW_TOKEN)
    problems: dict[str, Any] = {}
    for path in (f"/ui/runs/{run_id}#step=bad", "/ui/runs", "/ui/workflows",
                 "/ui/workflows/customer_order", "/ui/workers"):
        page.goto(ui_stack.url + path)
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector("#status-line:not(:empty)", timeout=TIMEOUT_MS)
        found = _axe(page)
        if found:
            problems[path] = [(v["id"], v["help"], [n["target"] for n in v["nodes"][:3]])
                              for v in found]
    page.goto(ui_stack.url + "/ui/login")
    assert not _axe(page) or pytest.fail(f"sign-in page: {_axe(page)}")
    assert not problems, problems
    # keyboard: the skip link is the first stop, then the navigation
    page.goto(ui_stack.url + "/ui/runs")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_thousand_step_run_page_time_to_interactive(ui_stack: UiStack, signed_in: Any,
                                                    shots: Path) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("ui_big_1000")
    wait_run(coord, run_id, timeout_s=600)
    page = signed_in(RO_TOKEN)
    figures = []
    for _ in range(3):
        page.goto(f"{ui_stack.url}/ui/runs/{run_id}")
        page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)
        tti = page.evaluate(
            "performance.getEntriesByName('orch-interactive')[0].startTime")
        figures.append(tti)
        # interactive: a click on a box selects its step at once
        _node(page, "s999").click()
        page.wait_for_selector("#detail-title >> text=s999")
    assert page.locator("svg.graph g.node").count() == 1000
    assert page.locator("svg.gantt g.row").count() == 1000
    print(f"\n1,000-step run page: time to interactive {', '.join(f'{t:.0f}' for t in figures)}"
          " ms (navigation start to the page's 'orch-interactive' mark; 3 loads)")
    page.screenshot(path=str(shots / "ui-run-1000.png"))
