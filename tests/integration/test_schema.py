"""The run store's schema version: recorded on first use, and a store of another schema
stops the CLI, the coordinator, the worker and the doctor before they change anything."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestrator import release
from orchestrator.api.app import create_api
from orchestrator.cli.main import EXIT_SCHEMA, cli, main
from orchestrator.errors import RunDamaged, StoreSchemaMismatch
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.schema import SCHEMA_VERSION
from tests.integration.conftest import make_settings
from tests.support.api import api_settings
from tests.support.workers import TEST_PACKAGES, WorkerProcess

pytestmark = pytest.mark.redis


def _coord(url: str) -> Coordinator:
    s = make_settings(url)
    return Coordinator(s, discover(s.workflow_packages))


def _env(url: str) -> dict[str, str]:
    return {"ORCH_REDIS_URL": url, "ORCH_WORKFLOW_PACKAGES": json.dumps(list(TEST_PACKAGES))}


def _future_store(url: str) -> redis.Redis:
    r = redis.Redis.from_url(url, decode_responses=True)
    r.hset("orch:schema", mapping={"version": SCHEMA_VERSION + 1, "release": "9.0.0"})
    return r


def test_the_first_use_records_the_schema(redis_url: str) -> None:
    coord = _coord(redis_url)
    assert coord.store.schema() is None
    coord.submit("n_shape")
    have = coord.store.schema()
    assert have is not None
    assert (have.version, have.release) == (SCHEMA_VERSION, release.current())


def test_a_newer_store_stops_everything_before_any_write(
        redis_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    r = _future_store(redis_url)
    before = set(r.keys("orch:*"))
    with pytest.raises(StoreSchemaMismatch, match=r"schema version 2 \(set by "
                       "celery-orchestrator 9.0.0.*run celery-orchestrator 9.0.0 or newer"):
        _coord(redis_url).submit("n_shape")

    for k, v in _env(redis_url).items():
        monkeypatch.setenv(k, v)
    for argv in (["status", "some-run"], ["runs"], ["run", "n_shape", "--no-follow"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == EXIT_SCHEMA, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: the run store at") and "9.0.0" in err, err

    res = CliRunner().invoke(cli, ["doctor", "--json", "--timeout", "1"], env=_env(redis_url))
    found = {f["check"]: f for f in json.loads(res.output)["findings"]}
    assert res.exit_code == 1 and not found["schema"]["ok"], res.output
    assert "9.0.0" in found["schema"]["fix"]

    worker = WorkerProcess(redis_url, "future", concurrency=1)
    try:
        assert worker.proc.wait(60) == EXIT_SCHEMA, worker.tail()
        assert "schema version 2" in worker.tail()
    finally:
        worker.stop()
    assert set(r.keys("orch:*")) == before  # no run data written by anyone


def test_a_definition_from_a_newer_release_is_refused_by_name(redis_url: str) -> None:
    coord = _coord(redis_url)
    d = coord.compile("n_shape")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = coord.store.keys.definition(d.wf.version)
    stored = json.loads(r.get(key) or "{}")
    stored["steps"][0]["sla_s"] = 30  # a field this release does not have
    r.set(key, json.dumps(stored))
    with pytest.raises(RunDamaged, match=r"does not know \(steps\.0\.sla_s\)"):
        coord.store.load_definition(d.wf.version)


def test_the_api_refuses_to_serve_a_newer_store(redis_url: str) -> None:
    _future_store(redis_url)
    app = create_api(api_settings(redis_url))
    with pytest.raises(StoreSchemaMismatch), TestClient(app):
        pass
