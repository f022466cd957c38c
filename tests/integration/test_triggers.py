"""Event triggers end to end: signed webhooks on the real API server, and the stream
consumer service as a real process (SIGKILLed before it acknowledges), on a private Redis
with a real worker.  Runs and step executions are counted, never timed."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.api.signatures import sign_github, sign_standard
from orchestrator.core.triggers import run_id
from orchestrator.dev import procs
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.consumer import READY_LINE
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from tests.integration.conftest import wait_run
from tests.integration.flows_triggers import EXECUTIONS, STREAM
from tests.support.api import RW_TOKEN, TOKENS, api_settings, bearer
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, worker_env

pytestmark = pytest.mark.redis

PACKAGES = [*TEST_PACKAGES, "tests.integration.flows_triggers"]
STD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
GH_SECRET = secrets.token_urlsafe(24)
TRIG_TOKEN = secrets.token_urlsafe(24)
WORKFLOW = "triggered_order"


@pytest.fixture(scope="module")
def env(redis_binary: str) -> Iterator[dict[str, Any]]:
    """A private Redis, one worker that knows the trigger flows, a coordinator, and the
    API (webhook secrets set, body cap 4 KiB) on a free port."""
    with RedisServer(binary=redis_binary) as server:
        settings = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(settings, discover(settings.workflow_packages))
        # a consumer killed between creating a run and publishing it: the reaper publishes
        # (claim_grace_s) or replays (stall_s) its units; short here, so tests wait less
        worker = WorkerProcess(server.url, "trig", concurrency=2, workflow_packages=PACKAGES,
                               claim_grace_s=2.0, stall_s=3.0)
        api_conf = api_settings(
            server.url, workflow_packages=PACKAGES, hook_max_body_bytes=4096,
            trigger_secrets={"hook_std": STD_SECRET, "hook_gh": GH_SECRET},
            api_tokens=[*TOKENS, {"token": TRIG_TOKEN, "scopes": ["triggers:read"],
                                  "name": "trig"}])
        try:
            worker.wait_ready(coord.app)
            with ServerThread(create_api(api_conf)) as api:
                yield {"url": server.url, "coord": coord, "api": api}
        finally:
            worker.stop()


@pytest.fixture
def r(env: dict[str, Any]) -> redis.Redis:
    return redis.Redis.from_url(env["url"], decode_responses=True)


@pytest.fixture
def http(env: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=env["api"].url, timeout=30) as c:
        yield c


def _runs(coord: Coordinator) -> list[str]:
    return coord.store.list_runs(WORKFLOW, None, 0, 1000)


def _executions(r: redis.Redis, order_id: str) -> int:
    return sum(1 for x in r.lrange(EXECUTIONS, 0, -1) if json.loads(x)["order_id"] == order_id)


def _std(body: bytes, msg_id: str, at: float | None = None) -> dict[str, str]:
    ts = int(time.time() if at is None else at)
    return {**sign_standard(STD_SECRET, msg_id, ts, body),
            "Content-Type": "application/json"}


def _order_created(order_id: str) -> bytes:
    return json.dumps({"type": "order.created", "data": {"order_id": order_id}}).encode()


def _events(http: httpx.Client, trigger: str) -> list[dict[str, Any]]:
    resp = http.get(f"/v1/triggers/{trigger}/events", headers=bearer(TRIG_TOKEN))
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


# --- webhooks ---------------------------------------------------------------------------


def test_standard_webhook_starts_one_run_and_a_replay_none(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    coord = env["coord"]
    body = _order_created("o-std-1")
    headers = _std(body, "msg-std-1")
    resp = http.post("/v1/hooks/hook_std", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    rec = resp.json()
    rid = run_id("hook_std", "msg-std-1")
    assert rec["outcome"] == "accepted" and rec["run_id"] == rid
    assert resp.headers["Location"] == f"/v1/runs/{rid}"
    view = wait_run(coord, rid)
    assert view.run.status.value == "succeeded"
    assert view.run.input == {"order_id": "o-std-1"}
    assert view.run.origin.kind.value == "event"
    assert (view.run.origin.trigger, view.run.origin.event_id) == ("hook_std", "msg-std-1")

    # the very same request again (a replay within the window), then a fresh signature
    # over the same id (the sender's retry): the existing run, no new one
    again = http.post("/v1/hooks/hook_std", content=body, headers=headers)
    retry = http.post("/v1/hooks/hook_std", content=body, headers=_std(body, "msg-std-1"))
    for resp in (again, retry):
        assert resp.status_code == 200, resp.text
        assert resp.json()["outcome"] == "duplicate"
        assert resp.json()["run_id"] == rid
    assert [x for x in _runs(coord) if x == rid] == [rid]
    assert _executions(r, "o-std-1") == 1
    outcomes = [e["outcome"] for e in _events(http, "hook_std") if e.get("run_id") == rid]
    assert outcomes == ["duplicate", "duplicate", "accepted"]


def test_bad_webhooks_start_no_run_and_are_recorded(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    coord = env["coord"]
    before = set(_runs(coord))
    body = _order_created("o-bad")
    good = _std(body, "msg-bad")
    forged = {**good, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
    cases = {
        "unsigned": (body, {"Content-Type": "application/json"}),
        "bad signature": (body, forged),
        "tampered body": (_order_created("o-bad-2"), good),
        "old timestamp": (body, _std(body, "msg-old", at=time.time() - 600)),
        "future timestamp": (body, _std(body, "msg-new", at=time.time() + 600)),
    }
    for what, (content, headers) in cases.items():
        resp = http.post("/v1/hooks/hook_std", content=content, headers=headers)
        assert resp.status_code == 401, (what, resp.text)
        assert resp.json()["error"]["code"] == "signature_invalid", what
    not_json = b"{not json"
    resp = http.post("/v1/hooks/hook_std", content=not_json, headers=_std(not_json, "m-nj"))
    assert resp.status_code == 400
    filtered = json.dumps({"type": "order.cancelled", "data": {"order_id": "x"}}).encode()
    resp = http.post("/v1/hooks/hook_std", content=filtered, headers=_std(filtered, "m-f"))
    assert resp.status_code == 200 and resp.json()["outcome"] == "filtered"
    unmappable = json.dumps({"type": "order.created", "data": {}}).encode()
    resp = http.post("/v1/hooks/hook_std", content=unmappable,
                     headers=_std(unmappable, "m-u"))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "event_invalid"
    big = json.dumps({"type": "order.created", "pad": "x" * 5000}).encode()
    resp = http.post("/v1/hooks/hook_std", content=big, headers=_std(big, "m-big"))
    assert resp.status_code == 413
    assert set(_runs(coord)) == before
    assert _executions(r, "o-bad") == 0 and _executions(r, "o-bad-2") == 0
    latest = _events(http, "hook_std")[:10]
    assert [e["outcome"] for e in latest[:9]] == [
        "rejected", "invalid", "filtered", "invalid", "rejected", "rejected", "rejected",
        "rejected", "rejected"]
    assert "larger than 4096" in latest[0]["reason"]
    assert "not within 300 s" in latest[5]["reason"]
    # no trigger, or no webhook trigger: the very answer of a forged request, so nobody
    # learns by probing which trigger names exist
    refused = http.post("/v1/hooks/hook_std", content=body, headers=forged)
    for name in ("no_such_trigger", "orders_stream"):  # a stream trigger takes no webhook
        for headers in (good, forged, {"Content-Type": "application/json"}):
            resp = http.post(f"/v1/hooks/{name}", content=body, headers=headers)
            assert (resp.status_code, resp.json()) == (401, refused.json()), name
        resp = http.post(f"/v1/hooks/{name}", content=big, headers=_std(big, "m-big"))
        assert resp.status_code == 413, name  # the body limit first, as for hook_std
    assert "signature" in _events(http, "hook_std")[0]["reason"]  # the why, kept


def test_trigger_events_need_the_read_scope(http: httpx.Client) -> None:
    assert http.get("/v1/triggers/hook_std/events").status_code == 401
    resp = http.get("/v1/triggers/hook_std/events", headers=bearer(RW_TOKEN))
    assert resp.status_code == 403
    resp = http.get("/v1/triggers/nope/events", headers=bearer(TRIG_TOKEN))
    assert resp.status_code == 404
    listed = http.get("/v1/triggers", headers=bearer(TRIG_TOKEN)).json()["triggers"]
    assert {t["name"]: t["source"] for t in listed} == {
        "hook_std": "webhook", "hook_gh": "webhook", "orders_stream": "stream"}


def test_github_webhook_dedupes_by_delivery(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    coord = env["coord"]
    body = json.dumps({"ref": "refs/heads/main", "after": "o-gh-1"}).encode()
    headers = {**sign_github(GH_SECRET, "delivery-1", body), "X-GitHub-Event": "push",
               "Content-Type": "application/json"}
    resp = http.post("/v1/hooks/hook_gh", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    rid = resp.json()["run_id"]
    assert rid == run_id("hook_gh", "delivery-1")
    assert wait_run(coord, rid).run.status.value == "succeeded"
    # GitHub signs no timestamp: a replay verifies, and its delivery id finds the run
    resp = http.post("/v1/hooks/hook_gh", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json()["outcome"] == "duplicate"
    bad = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64,
           "X-GitHub-Delivery": "delivery-2"}
    assert http.post("/v1/hooks/hook_gh", content=body, headers=bad).status_code == 401
    no_delivery = {k: v for k, v in headers.items() if k != "X-GitHub-Delivery"}
    assert http.post("/v1/hooks/hook_gh", content=body,
                     headers=no_delivery).status_code == 401
    ping = {**sign_github(GH_SECRET, "delivery-3", body), "X-GitHub-Event": "ping"}
    resp = http.post("/v1/hooks/hook_gh", content=body, headers=ping)
    assert resp.status_code == 200 and resp.json()["outcome"] == "filtered"
    assert [x for x in _runs(coord) if x.startswith("evt-hook_gh-")] == [rid]
    assert _executions(r, "o-gh-1") == 1


# --- the stream consumer ----------------------------------------------------------------


class Consumer:
    """``orchestrator triggers`` as a child process, its log in a temp file."""

    def __init__(self, url: str, name: str, **settings: Any) -> None:
        self.log: Path = procs.temp_log(f"consumer-{name}-")
        self.heartbeat = self.log.with_suffix(".alive")
        conf = {"workflow_packages": PACKAGES, "consumer_block_s": 0.2,
                "consumer_claim_idle_s": 0.5, **settings}
        self.proc = procs.spawn([sys.executable, "-m", "orchestrator.cli", "triggers",
                                 "--heartbeat-file", str(self.heartbeat)],
                                log=self.log, env=worker_env(url, **conf))

    def wait_ready(self) -> None:
        procs.wait_ready(self.proc, lambda: READY_LINE in self.log.read_text(), 30,
                         name="trigger consumer", log=self.log)

    def stop(self) -> None:
        procs.stop(self.proc, 20)


def _stream_outcomes(http: httpx.Client, event_id: str) -> list[str]:
    return [e["outcome"] for e in _events(http, "orders_stream")
            if e.get("event_id") == event_id]


def _pending(r: redis.Redis) -> int:
    return int(r.xpending(STREAM, "orch:trigger:orders_stream")["pending"])


def test_stream_entry_starts_one_run_when_its_consumer_dies_before_ack(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    coord = env["coord"]
    entry = r.xadd(STREAM, {"event": json.dumps({"order_id": "o-stream-1"})})
    rid = run_id("orders_stream", entry)
    doomed = Consumer(env["url"], "doomed", consumer_crash_before_ack=True)
    try:
        # it starts the run, then SIGKILLs itself before XACK
        assert doomed.proc.wait(timeout=60) == -9, procs.log_tail(doomed.log)
    finally:
        doomed.stop()
    assert coord.store.run(rid).workflow == WORKFLOW
    assert _pending(r) == 1  # delivered, never acknowledged
    assert _stream_outcomes(http, entry) == ["accepted"]

    second = Consumer(env["url"], "second")
    try:
        second.wait_ready()
        wait_until(lambda: _pending(r) == 0, 30, message="the pending entry was not claimed")
        assert _stream_outcomes(http, entry) == ["duplicate", "accepted"]
        assert wait_run(coord, rid).run.status.value == "succeeded"
        assert [x for x in _runs(coord) if x == rid] == [rid]
        assert _executions(r, "o-stream-1") == 1

        # the survivor goes on with new entries, each once
        nxt = r.xadd(STREAM, {"event": json.dumps({"order_id": "o-stream-2"}), "id": "e-2"})
        wait_until(lambda: _stream_outcomes(http, "e-2") == ["accepted"], 30,
                   message="the next entry started no run")
        assert wait_run(coord, run_id("orders_stream", "e-2")).run.status.value == "succeeded"
        wait_until(lambda: _pending(r) == 0, 30, message=f"{nxt} was not acknowledged")
        assert _executions(r, "o-stream-2") == 1
    finally:
        second.stop()


def test_poison_entries_are_recorded_and_acknowledged(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    coord = env["coord"]
    before = set(_runs(coord))
    poison = [
        r.xadd(STREAM, {"other": "no event field"}),
        r.xadd(STREAM, {"event": "{not json"}),
        r.xadd(STREAM, {"event": b"\xff\xfe"}),
        r.xadd(STREAM, {"event": json.dumps({"no_order_id": 1})}),
        r.xadd(STREAM, {"event": json.dumps({"order_id": 7})}),  # input_schema: a string
    ]
    consumer = Consumer(env["url"], "poison")
    try:
        consumer.wait_ready()

        def recorded() -> bool:
            seen = {e.get("message_id") for e in _events(http, "orders_stream")
                    if e["outcome"] == "invalid"}
            return set(poison) <= seen

        wait_until(recorded, 30, message="the poison entries were not all recorded")
        wait_until(lambda: _pending(r) == 0, 30, message="poison entries left pending")
    finally:
        consumer.stop()
    assert set(_runs(coord)) == before


def test_killed_consumers_lose_and_double_nothing(
        env: dict[str, Any], http: httpx.Client, r: redis.Redis) -> None:
    """Consumers SIGKILLed from outside at whatever point they reached, three times over,
    then one left running: every entry started exactly one run, which ran once."""
    coord = env["coord"]
    total = 150
    ids = {f"loop-{i}" for i in range(total)}
    for i in range(total):
        r.xadd(STREAM, {"event": json.dumps({"order_id": f"o-loop-{i}"}), "id": f"loop-{i}"})

    def started() -> set[str]:
        """Entries recorded as having their run (a consumer killed between starting the
        run and recording it leaves the record to the next delivery: ``duplicate``)."""
        return {e["event_id"] for e in _events_all(r) if e.get("event_id", "") in ids
                and e["outcome"] in ("accepted", "duplicate")}

    for round_ in range(3):
        victim = Consumer(env["url"], f"victim{round_}")
        try:
            seen = len(started())
            if seen >= total:
                break
            wait_until(lambda s=seen: len(started()) > s, 30,  # type: ignore[misc]
                       message="the consumer made no progress")
        finally:
            procs.kill_group(victim.proc)  # SIGKILL, wherever it is
    last = Consumer(env["url"], "last")
    try:
        wait_until(lambda: len(started()) == total and _pending(r) == 0, 60,
                   message="not every entry became a run and was acknowledged")
    finally:
        last.stop()
    rids = {run_id("orders_stream", eid) for eid in ids}
    assert rids <= set(_runs(coord))
    for rid in rids:
        assert wait_run(coord, rid).run.status.value == "succeeded"
    executions = [json.loads(x)["order_id"] for x in r.lrange(EXECUTIONS, 0, -1)]
    looped = [o for o in executions if o.startswith("o-loop-")]
    assert sorted(looped) == sorted(f"o-loop-{i}" for i in range(total))  # each once
    accepted = [e["event_id"] for e in _events_all(r)
                if e.get("event_id", "") in ids and e["outcome"] == "accepted"]
    assert len(accepted) == len(set(accepted))  # no event started two runs


def _events_all(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange("orch:trigger:orders_stream:events", 0, -1)]


def test_consumer_rides_out_a_redis_outage(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        consumer = Consumer(server.url, "outage")
        try:
            consumer.wait_ready()
            wait_until(consumer.heartbeat.exists, 30, message="no heartbeat")
            client.xadd(STREAM, {"event": json.dumps({"order_id": "o-1"}), "id": "before"})
            wait_until(lambda: any(e.get("event_id") == "before" for e in _events_all(client)),
                       30, message="no run before the outage")
            server.kill()
            wait_until(lambda: "retrying with backoff" in consumer.log.read_text(), 30,
                       message="the consumer did not notice the outage")
            server.restart()  # empty: the group is gone too, and made again
            client.xadd(STREAM, {"event": json.dumps({"order_id": "o-2"}), "id": "after"})
            wait_until(lambda: any(e.get("event_id") == "after" and e["outcome"] == "accepted"
                                   for e in _events_all(client)), 30,
                       message="no run after the outage")
            assert consumer.proc.poll() is None
            log = consumer.log.read_text()
            assert log.count("retrying with backoff") == 1
            assert log.count("Redis answers again") == 1
        finally:
            consumer.stop()
            client.close()


def test_a_run_whose_creator_died_before_claiming_its_first_units_still_runs(
        env: dict[str, Any], r: redis.Redis) -> None:
    """The window a consumer (or any submitter) can die in after the run exists: created
    (in one script, so never half-made), its first units neither claimed nor published.
    The reaper claims and publishes them once the run has been quiet for stall_s."""
    coord = env["coord"]
    d = coord.compile(WORKFLOW)
    coord.store.create_run("evt-cut-short", d.wf, d.plan, {"order_id": "o-cut"})
    assert wait_run(coord, "evt-cut-short").run.status.value == "succeeded"
    assert _executions(r, "o-cut") == 1


def test_the_cli_reads_a_triggers_events(env: dict[str, Any], http: httpx.Client) -> None:
    body = _order_created("o-cli")
    assert http.post("/v1/hooks/hook_std", content=body,
                     headers=_std(body, "msg-cli")).status_code == 202
    cmd = [sys.executable, "-m", "orchestrator.cli", "trigger", "events", "hook_std"]
    run_env = worker_env(env["url"], workflow_packages=PACKAGES)
    res = subprocess.run([*cmd, "--json", "--limit", "1"], capture_output=True, text=True,
                         env=run_env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert (rec["outcome"], rec["event_id"]) == ("accepted", "msg-cli")
    res = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=60,
                         check=False)
    assert "accepted" in res.stdout and run_id("hook_std", "msg-cli") in res.stdout
    res = subprocess.run([*cmd[:-1], "nope"], capture_output=True, text=True, env=run_env,
                         timeout=60, check=False)
    assert res.returncode == 2 and "no trigger named 'nope'" in res.stderr
