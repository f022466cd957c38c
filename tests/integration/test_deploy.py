"""The deploy workflow, end to end on real workers."""

from __future__ import annotations

import redis

from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from workflows.deploy import systems


def test_deploy_succeeds(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_live_version(r, "api", "1.2.2")
    view = wait_run(coord, coord.submit("deploy_service",
                                        {"service": "api", "version": "1.2.3"}))
    st = statuses(view)
    assert view.run.status.value == "succeeded", st
    assert st == {"test": "succeeded", "build": "succeeded", "release": "succeeded",
                  "verify": "succeeded", "rollback": "skipped", "notify": "succeeded"}
    assert view.outputs["release"]["previous_version"] == "1.2.2"
    assert systems.live_version(r, "api") == "1.2.3"
    assert view.outputs["notify"]["outcome"] == "deployed"
    assert "api 1.2.3 is live and healthy" in systems.notifications(r)


def test_flaky_health_check_passes_on_retry(coord: Coordinator, r: redis.Redis) -> None:
    systems.fail_health_checks(r, "search", 1)
    view = wait_run(coord, coord.submit("deploy_service",
                                        {"service": "search", "version": "2.0.0"}))
    verify = next(s for s in view.steps if s.step_id == "verify")
    assert verify.status.value == "succeeded" and verify.attempt == 2
    assert view.outputs["verify"]["checks"] == 2
    assert statuses(view)["rollback"] == "skipped"
    assert view.run.status.value == "succeeded"
    assert systems.live_version(r, "search") == "2.0.0"


def test_broken_verify_rolls_back(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_live_version(r, "billing", "3.1.0")
    systems.fail_health_checks(r, "billing", 2)
    view = wait_run(coord, coord.submit("deploy_service",
                                        {"service": "billing", "version": "3.2.0"}))
    st = statuses(view)
    assert view.run.status.value == "failed"
    verify = next(s for s in view.steps if s.step_id == "verify")
    assert verify.status.value == "failed" and verify.attempt == 2
    assert verify.error is not None and verify.error["type"].endswith("Unhealthy")
    assert st["rollback"] == "succeeded" and st["notify"] == "succeeded"
    assert view.outputs["rollback"] == {"service": "billing", "rolled_back": "3.2.0",
                                        "restored_version": "3.1.0"}
    assert systems.live_version(r, "billing") == "3.1.0"
    assert view.outputs["notify"]["outcome"] == "rolled_back"
    assert ("billing 3.2.0 failed verification; rolled back to 3.1.0"
            in systems.notifications(r))
