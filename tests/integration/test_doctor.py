"""``orchestrator doctor`` on a healthy deployment, and on one with four problems."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import cli
from tests.integration.conftest import private_stack
from tests.integration.flows_queues import QUEUE_B
from tests.support.workers import TEST_PACKAGES

pytestmark = pytest.mark.redis


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"ORCH_REDIS_URL": url, "ORCH_WORKFLOW_PACKAGES": json.dumps(list(TEST_PACKAGES)),
            **extra}


def _doctor(url: str, **extra: str) -> tuple[int, dict[str, object]]:
    res = CliRunner().invoke(cli, ["doctor", "--json", "--timeout", "2"], env=_env(url, **extra))
    assert "Traceback" not in res.output, res.output
    return res.exit_code, json.loads(res.output)


@pytest.fixture
def healthy(redis_binary: str) -> Iterator[str]:
    with private_stack(redis_binary, ["doc"], appendonly=True,
                       server_args=("--maxmemory-policy", "noeviction"),
                       queues=("default", QUEUE_B)) as (server, _coord, _workers):
        yield server.url


def test_a_healthy_deployment(healthy: str) -> None:
    code, out = _doctor(healthy)
    assert code == 0, out
    checks = {f["check"] for f in out["findings"]}  # type: ignore[attr-defined]
    assert {"redis", "persistence", "eviction", "visibility timeout", "workers",
            "clock"} <= checks


@pytest.fixture
def sick(redis_binary: str) -> Iterator[str]:
    # no persistence, an evicting policy; a worker for the default queue only
    with private_stack(redis_binary, ["doc"],
                       server_args=("--maxmemory-policy", "allkeys-lru")) as (
            server, _coord, _workers):
        yield server.url


def test_a_sick_deployment_names_every_problem(sick: str) -> None:
    code, out = _doctor(sick, ORCH_VISIBILITY_TIMEOUT_S="60")  # a step allows 120 s
    assert code == 1
    bad = {f["check"]: f for f in out["findings"] if not f["ok"]}  # type: ignore[attr-defined]
    assert {"persistence", "eviction", "workers", "visibility timeout"} <= set(bad), bad
    assert "allkeys-lru" in bad["eviction"]["message"]
    assert f"queue {QUEUE_B!r}" in bad["workers"]["message"]
    assert "patient" in bad["visibility timeout"]["message"]
    assert all(f["fix"] for f in bad.values())
