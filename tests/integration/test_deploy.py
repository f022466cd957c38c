"""The deploy workflow, end to end on real workers: a release that fails verification is
rolled back by its compensation."""

from __future__ import annotations

import redis

from orchestrator.core.compensation import undo_run_id
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from workflows.deploy import systems


def test_deploy_succeeds(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_live_version(r, "api", "1.2.2")
    run_id = coord.submit("deploy_service", {"service": "api", "version": "1.2.3"})
    view = wait_run(coord, run_id)
    st = statuses(view)
    assert view.run.status.value == "succeeded", st
    assert st == {"test": "succeeded", "build": "succeeded", "release": "succeeded",
                  "verify": "succeeded", "notify": "succeeded"}
    assert not coord.store.exists(undo_run_id(run_id))
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
    assert view.run.status.value == "succeeded"
    assert systems.live_version(r, "search") == "2.0.0"


def test_broken_verify_rolls_back(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_live_version(r, "billing", "3.1.0")
    systems.fail_health_checks(r, "billing", 2)
    run_id = coord.submit("deploy_service", {"service": "billing", "version": "3.2.0"})
    view = wait_run(coord, run_id)
    st = statuses(view)
    assert view.run.status.value == "compensated", st
    verify = next(s for s in view.steps if s.step_id == "verify")
    assert verify.status.value == "failed" and verify.attempt == 2
    assert verify.error is not None and verify.error["type"].endswith("Unhealthy")
    assert st["release"] == "compensated" and st["notify"] == "succeeded", st
    assert st["test"] == st["build"] == "succeeded"  # nothing to undo
    assert systems.live_version(r, "billing") == "3.1.0"
    assert view.outputs["notify"]["outcome"] == "rolling_back"
    assert ("billing 3.2.0 failed verification; rolling back to 3.1.0"
            in systems.notifications(r))
    undo = coord.view(undo_run_id(run_id))
    assert undo.run.workflow == "deploy_service.undo" and undo.run.compensates == run_id
    assert statuses(undo) == {"release": "succeeded"}
    assert undo.outputs["release"] == {"service": "billing", "rolled_back": "3.2.0",
                                       "restored_version": "3.1.0"}


def test_first_release_rolls_back_to_nothing(coord: Coordinator, r: redis.Redis) -> None:
    systems.fail_health_checks(r, "ledger", 2)
    run_id = coord.submit("deploy_service", {"service": "ledger", "version": "0.1.0"})
    view = wait_run(coord, run_id)
    assert view.run.status.value == "compensated", statuses(view)
    assert systems.live_version(r, "ledger") is None
    assert view.outputs["notify"]["text"] == ("ledger 0.1.0 failed verification; rolling "
                                              "back to nothing")
    assert coord.view(undo_run_id(run_id)).outputs["release"]["restored_version"] is None
