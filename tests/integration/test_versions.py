"""Versions on real workers: every version is kept by content hash, a run stays pinned to
its version while the workflow is edited, and a named older version can be submitted.
The steps count their own executions (``test:exec:<run>``)."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from orchestrator.api.server import ServerThread
from orchestrator.core.models import WorkflowDef
from orchestrator.errors import VersionNotFound
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from tests.integration.flows import wait_event_flow
from tests.support.api import api_server_fixture, bearer
from tests.support.waits import executions, wait_waiting

pytestmark = pytest.mark.redis


def edited() -> WorkflowDef:
    """wait_event_flow with one more step after the wait."""
    data = wait_event_flow.model_dump(by_alias=True, exclude_defaults=True)
    data["steps"] = [*data["steps"], {"id": "audit", "function": "test.count", "after": ["after"]}]
    return WorkflowDef.model_validate(data)


def test_an_edit_never_changes_a_run_in_flight(coord: Coordinator) -> None:
    v1, v2 = wait_event_flow, edited()
    old_run = coord.submit("wait_event_flow", {"id": "ver1"})
    wait_waiting(coord, old_run, "paid")
    new_run = coord.submit(v2, {"id": "ver2"})  # the edit is stored and runs
    wait_waiting(coord, new_run, "paid")
    listed = coord.versions("wait_event_flow")
    assert [i.version for i in listed][-2:] == [v1.version, v2.version]
    assert [i.current for i in listed if i.version in (v1.version, v2.version)] == [True, False]

    for key in ("pay:ver1", "pay:ver2"):
        coord.send_event(key, {"ok": True}, by="test")
    old, new = wait_run(coord, old_run), wait_run(coord, new_run)
    assert old.run.version == v1.version and new.run.version == v2.version
    assert "audit" not in statuses(old) and statuses(new)["audit"] == "succeeded"
    assert executions(coord, old_run) == {"before": 1, "after": 1}
    assert executions(coord, new_run) == {"before": 1, "after": 1, "audit": 1}


def test_a_named_older_version_can_be_submitted(coord: Coordinator) -> None:
    v2 = edited()
    coord.compile(v2)  # stored, as a submit of it would
    run_id = coord.submit("wait_event_flow", {"id": "ver3"}, version=v2.version[:8])
    wait_waiting(coord, run_id, "paid")
    coord.send_event("pay:ver3", {}, by="test")
    view = wait_run(coord, run_id)
    assert view.run.version == v2.version and statuses(view)["audit"] == "succeeded"
    with pytest.raises(VersionNotFound, match="orchestrator versions wait_event_flow"):
        coord.submit("wait_event_flow", {"id": "x"}, version="ffffffffffff")
    with pytest.raises(VersionNotFound):  # a version of another workflow
        coord.submit("wait_event_flow", {"id": "x"},
                     version=coord.compile("approval_flow").wf.version)


def test_the_cli_lists_versions_and_diffs_two(coord: Coordinator,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.main import cli, main

    v2 = edited()
    coord.compile(v2)
    monkeypatch.setenv("ORCH_REDIS_URL", coord.settings.redis_url)
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", ",".join(coord.settings.workflow_packages))
    runner = CliRunner()
    out = runner.invoke(cli, ["versions", "wait_event_flow"])
    assert out.exit_code == 0, out.output
    assert f"* {wait_event_flow.version}" in out.output and f"  {v2.version}" in out.output
    out = runner.invoke(cli, ["diff", "wait_event_flow", f"wait_event_flow@{v2.version[:8]}"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == "+ audit"
    with pytest.raises(SystemExit) as exit_:
        main(["diff", "wait_event_flow", "wait_event_flow@nosuchversion"])
    assert exit_.value.code == 2
    assert "orchestrator versions wait_event_flow" in capsys.readouterr().err


TOKEN = "versions-test-token-0123456789-abcdefgh"
api = api_server_fixture(api_tokens=[{"token": TOKEN, "scopes": ["workflows:read"]}])


def test_the_api_lists_reads_and_diffs_versions(coord: Coordinator, api: ServerThread) -> None:
    v2 = edited()
    coord.compile(v2)
    with httpx.Client(base_url=api.url, headers=bearer(TOKEN), timeout=30) as http:
        listed = http.get("/v1/workflows/wait_event_flow/versions")
        assert listed.status_code == 200, listed.text
        versions = {v["version"]: v["current"] for v in listed.json()["versions"]}
        assert versions[wait_event_flow.version] is True and versions[v2.version] is False
        one = http.get(f"/v1/workflows/wait_event_flow/versions/{v2.version[:8]}")
        assert one.status_code == 200 and one.json()["version"] == v2.version
        assert [s["id"] for s in one.json()["steps"]][-1] == "audit"
        d = http.get("/v1/workflows/wait_event_flow/diff",
                     params={"from": wait_event_flow.version, "to": v2.version})
        assert d.status_code == 200, d.text
        assert d.json()["added"] == ["audit"] and d.json()["changed"] == {}
        missing = http.get("/v1/workflows/wait_event_flow/versions/abcdef0123")
        assert missing.status_code == 404
        assert "versions" in missing.json()["error"]["fix"] + missing.json()["error"]["message"]


WRITE = "versions-write-token-0123456789-abcdefgh"
api_w = api_server_fixture(api_tokens=[{"token": WRITE, "scopes": ["runs:read",
                                                                    "runs:write"]}])


def test_the_api_submits_a_named_version(coord: Coordinator, api_w: ServerThread) -> None:
    v2 = edited()
    coord.compile(v2)
    with httpx.Client(base_url=api_w.url, headers=bearer(WRITE), timeout=30) as http:
        r = http.post("/v1/workflows/wait_event_flow/runs", json={"id": "ver-api"},
                      params={"version": v2.version[:8]})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == v2.version
        bad = http.post("/v1/workflows/wait_event_flow/runs", json={"id": "x"},
                        params={"version": "abcdef999"})
        assert bad.status_code == 404 and "versions" in bad.text
    coord.send_event("pay:ver-api", {}, by="test")
    assert wait_run(coord, r.json()["run_id"]).run.status.value == "succeeded"
