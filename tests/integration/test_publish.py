"""Publishing a unit in one script: Celery's own messages, sent with the store's records.

``Progress.publish`` lets Celery build a unit's messages as always, holds the Redis
commands kombu would send for them (``broker.capture``) and sends them in
``publish_units.lua`` with the unit's claim, its ``published`` record and its entry steps'
``queued``.  No worker consumes the queue here: the messages stay in it to be read.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import signals
from celery.app.task import Context
from celery.canvas import signature as from_dict
from celery.utils.time import utcoffset

from orchestrator.core.priorities import Priority
from orchestrator.core.states import StepStatus
from orchestrator.runtime import broker, messages
from orchestrator.runtime.canvas import held_chain, signature
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store import scripts
from orchestrator.store.records import LeaseMode
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.redis

QUEUE = "nobody-reads"
ORDER = {"order_id": "o-1", "sku": "SKU-1", "qty": 1, "customer_email": "a@example.com"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def coord(redis_url: str) -> Coordinator:
    settings = make_settings(redis_url, default_queue=QUEUE)
    return Coordinator(settings, discover(settings.workflow_packages))


def _shape(raw: bytes) -> Any:
    """A kombu message with its ids, delivery tag and sender's pid made uniform."""
    msg = json.loads(raw)
    msg["body"] = json.loads(base64.b64decode(msg["body"]))
    del msg["properties"]["delivery_tag"]
    text = UUID.sub("<id>", json.dumps(msg, sort_keys=True))
    return json.loads(re.sub(r'"gen\d+@', '"gen<pid>@', text))


def test_a_submit_sends_celerys_own_message_and_event_with_its_records(
        coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    events = r.pubsub()
    events.psubscribe("*celeryev*")
    assert events.get_message(timeout=2) is not None  # the subscription's confirmation
    run_id = coord.submit("customer_order", ORDER)

    assert r.llen(QUEUE) == 1
    ours = r.rpop(QUEUE)
    assert ours is not None
    sent = events.get_message(timeout=2)
    assert sent is not None and sent["channel"].endswith(b"task.sent")
    # the same unit published by Celery itself, without holding anything
    d = coord.compile("customer_order")
    unit = d.plan.unit_map[d.plan.sources[0]]
    signature(coord.app, d, unit.canvas, run_id, QUEUE).apply_async()
    theirs = r.rpop(QUEUE)
    assert theirs is not None
    assert _shape(ours) == _shape(theirs)
    assert json.loads(base64.b64decode(json.loads(sent["data"])["body"]))["type"] == "task-sent"

    store = coord.store
    assert r.smembers(store.keys.units_published(run_id)) == {d.plan.sources[0].encode()}
    assert r.smembers(store.keys.units_claimed(run_id)) == {d.plan.sources[0].encode()}
    assert store.step_runs(run_id)["receive_order"].status is StepStatus.QUEUED
    assert r.zcard(store.keys.claims()) == 0
    events.close()


def test_nothing_reaches_redis_while_held(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    d = coord.compile("customer_order")
    unit = d.plan.unit_map[d.plan.sources[0]]
    assert broker.captures(coord.app)
    with broker.capture() as held:
        signature(coord.app, d, unit.canvas, "r-held", QUEUE).apply_async()
    assert r.llen(QUEUE) == 0
    assert [name for name, _ in held.commands] == ["lpush", "publish"]
    assert held.commands[0][1][0] == QUEUE


def test_a_unit_claimed_before_is_not_published_again(coord: Coordinator,
                                                      redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    run_id = coord.submit("customer_order", ORDER)
    d = coord.compile("customer_order")
    assert coord.progress.publish(d, run_id, d.plan.sources, claim=True) == []
    assert r.llen(QUEUE) == 1
    # without a claim (the caller claimed it: the reaper's replay) it goes out again
    assert coord.progress.publish(d, run_id, d.plan.sources) == list(d.plan.sources)
    assert r.llen(QUEUE) == 2


def test_a_run_that_is_gone_publishes_nothing(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    d = coord.compile("customer_order")
    assert coord.progress.publish(d, "no-such-run", d.plan.sources, claim=True) == []
    assert r.llen(QUEUE) == 0


def test_only_publishing_commands_are_sent(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    run_id = coord.submit("customer_order", ORDER)
    before = r.llen(QUEUE)
    with pytest.raises(ValueError, match="only LPUSH, PUBLISH and PEXPIRE"):
        coord.store.publish_units(run_id, [("u9", [], [("del", (QUEUE, ""))])], claim=True)
    # the script itself refuses before writing anything, even after a good command
    k = coord.store.keys
    keys = [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id),
            k.metrics(), k.units_claimed(run_id), k.units_published(run_id), k.claims(), QUEUE]
    with pytest.raises(redis.ResponseError, match="unexpected command"):
        scripts.PUBLISH_UNITS(r, keys, [run_id, "1", 0, "{}", "pending", "u9", 0, 2,
                                        "lpush", QUEUE, "x", "flushall", "", ""])
    assert r.llen(QUEUE) == before
    assert not r.sismember(k.units_claimed(run_id), "u9")


# --- message templates (orchestrator.runtime.messages) ---------------------------------------


def _normal(cmd: tuple[str, tuple[Any, ...]]) -> tuple[Any, list[int]]:
    """A held command with ids, pids and event stamps made uniform, and the pattern of
    its ids (each id as the index of its first appearance: which ones are the same)."""
    name, (key, value) = cmd
    msg = json.loads(value)
    body = json.loads(base64.b64decode(msg["body"]))
    if name == "publish":
        for k in ("clock", "timestamp", "utcoffset"):
            body.pop(k)
    msg["body"] = body
    del msg["properties"]["delivery_tag"]
    text = json.dumps(msg, sort_keys=True)
    ids = UUID.findall(text)
    pattern = [ids.index(x) for x in ids]
    text = re.sub(r'"gen\d+@', '"gen<pid>@', UUID.sub("<id>", text))
    return (name, key, json.loads(text)), pattern


def _builder(coord: Coordinator, d: Any, canvas: Any, priority: Priority,
             calls: list[str]) -> Any:
    def build(rid: str) -> list[tuple[str, tuple[Any, ...]]]:
        calls.append(rid)
        with broker.capture() as got:
            signature(coord.app, d, canvas, rid, QUEUE, priority).apply_async()
        return got.commands
    return build


@pytest.mark.parametrize("priority", list(Priority))
def test_a_template_renders_what_celery_builds(coord: Coordinator, redis_url: str,
                                               priority: Priority) -> None:
    r = redis.Redis.from_url(redis_url)
    templates = messages.Templates(coord.app)
    checked = 0
    for name in sorted(coord.catalog.workflows):
        d = coord.compile(name)
        for uid in d.plan.sources:
            canvas = d.plan.unit_map[uid].canvas
            calls: list[str] = []
            build = _builder(coord, d, canvas, priority, calls)
            got = templates.commands((d.wf.version, uid, priority.value, QUEUE), canvas,
                                     "run-1", build)
            again = templates.commands((d.wf.version, uid, priority.value, QUEUE), canvas,
                                       "run-2", build)
            want = build("run-1")
            assert [_normal(c) for c in got] == [_normal(c) for c in want], (name, uid)
            if messages.single_message(canvas):
                checked += 1
                assert len(calls) == 3  # two builds make the template; renders build none
                # no id is shared by two runs but the app's own (the reply-to address)
                shared = set(UUID.findall(str(got))) & set(UUID.findall(str(again)))
                assert shared <= {coord.app.thread_oid}, (name, uid)
                assert "run-2" in str(again) and "run-1" not in str(again)
            else:
                assert len(calls) == 3  # built each time (and once more for `want`)
    assert checked >= 3
    assert not r.keys("celery-task-meta-*")  # building wrote nothing to the backend


def test_a_template_stamps_each_task_sent_event_as_celery_does(coord: Coordinator) -> None:
    # the event's clock, timestamp and utcoffset are taken at each render, written as
    # json.dumps writes the event Celery builds (the bytes Flower and the events read)
    templates = messages.Templates(coord.app)
    d = coord.compile("customer_order")
    uid = d.plan.sources[0]
    canvas = d.plan.unit_map[uid].canvas
    build = _builder(coord, d, canvas, Priority.NORMAL, [])
    clocks = []
    for run_id in ("run-1", "run-2", "run-3"):
        t0 = time.time()
        got = templates.commands((d.wf.version, uid, "normal", QUEUE), canvas, run_id, build)
        events = [json.loads(v) for name, (_, v) in got if name == "publish"]
        assert len(events) == 1
        text = base64.b64decode(events[0]["body"]).decode()
        event = json.loads(text)
        assert text == json.dumps(event)  # json.dumps' own layout, key order kept
        assert event["type"] == "task-sent"
        assert type(event["clock"]) is int and type(event["timestamp"]) is float
        assert t0 <= event["timestamp"] <= time.time()
        assert event["utcoffset"] == utcoffset()
        assert run_id in text
        clocks.append(event["clock"])
    assert clocks == sorted(set(clocks))  # the app's Lamport clock, forwarded each time


def test_no_template_when_a_publish_could_differ_by_more_than_ids(
        coord: Coordinator) -> None:
    templates = messages.Templates(coord.app)
    d = coord.compile("customer_order")
    uid = d.plan.sources[0]
    canvas = d.plan.unit_map[uid].canvas
    assert messages.single_message(canvas)
    calls: list[str] = []
    build = _builder(coord, d, canvas, Priority.NORMAL, calls)

    def hook(**_: Any) -> None:
        return None

    signals.before_task_publish.connect(hook)
    try:
        assert not templates.usable()
        templates.commands(("v", uid), canvas, "run-1", build)
        templates.commands(("v", uid), canvas, "run-2", build)
    finally:
        signals.before_task_publish.disconnect(hook)
    assert calls == ["run-1", "run-2"]
    assert templates.usable()


# --- a chain going on in the script that records a step's success ---------------------------


@dataclass
class _Begun:
    """A customer order's first step task, delivered and begun under lease ``t1``."""

    r: redis.Redis
    run_id: str
    d: Any
    req: Any
    step: str
    chain: list[Any]

    def ended_as(self, coord: Coordinator, status: StepStatus) -> None:
        """The step run's record, and a later copy of its message dropped (its lease
        was settled with the record)."""
        assert coord.store.step_runs(self.run_id)[self.step].status is status
        assert coord.store.begin_step(self.run_id, self.step, [], [], [], True, {},
                                      token="t2")[3] is LeaseMode.DROP


def _begun(coord: Coordinator, redis_url: str) -> _Begun:
    r = redis.Redis.from_url(redis_url)
    run_id = coord.submit("customer_order", ORDER)
    req, kwargs = _delivered(r, QUEUE)
    step = kwargs["step_id"]
    coord.store.begin_step(run_id, step, [], [], [], True, {"attempt": 1}, token="t1")
    return _Begun(r, run_id, coord.compile("customer_order"), req, step, list(req.chain))


def _delivered(r: redis.Redis, queue: str) -> tuple[Any, Any]:
    """The oldest message of ``queue`` as a worker's task would see it: (its request
    context, its kwargs)."""
    raw = r.rpop(queue)
    assert raw is not None
    msg = json.loads(raw)
    headers = msg["headers"]
    _, kwargs, embed = json.loads(base64.b64decode(msg["body"]))
    req = Context(id=headers["id"], root_id=headers["root_id"], chain=embed["chain"],
                  chord=embed["chord"], callbacks=embed["callbacks"],
                  delivery_info={"priority": msg["properties"].get("priority")})
    return req, kwargs


def test_a_chain_goes_on_in_the_script_that_records_the_success(
        coord: Coordinator, redis_url: str) -> None:
    b = _begun(coord, redis_url)
    done = {"run_id": b.run_id, "step_id": b.step, "status": "succeeded"}

    assert coord.progress.succeeded(b.d, b.run_id, b.step, {"ok": True}, "t1", b.req, done)
    assert b.req.chain is None  # Celery must not send it again
    ours = b.r.rpop(QUEUE)
    assert ours is not None and b.r.llen(QUEUE) == 0
    # what Celery's tracer itself would have sent for the chain
    from_dict(b.chain[-1], app=coord.app).apply_async(
        (done,), chain=b.chain[:-1], parent_id=b.req.id, root_id=b.req.root_id)
    theirs = b.r.rpop(QUEUE)
    assert theirs is not None
    assert _shape(ours) == _shape(theirs)
    assert json.loads(ours)["headers"]["parent_id"] == b.req.id
    # recorded with it: the success, the follower queued, the lease settled (a copy of
    # the message delivered again is dropped, not carried on a second time)
    follower = b.d.followers[b.step][0]
    assert coord.store.step_runs(b.run_id)[follower].status is StepStatus.QUEUED
    b.ended_as(coord, StepStatus.SUCCEEDED)


def test_a_fenced_success_sends_nothing(coord: Coordinator, redis_url: str) -> None:
    b = _begun(coord, redis_url)
    assert not coord.progress.succeeded(b.d, b.run_id, b.step, {}, "stale", b.req, None)
    assert b.r.llen(QUEUE) == 0
    assert b.req.chain == b.chain  # left to the caller, which drops it
    assert coord.store.step_runs(b.run_id)[b.step].status is StepStatus.RUNNING
    # and a bad command writes nothing, not even the success
    with pytest.raises(ValueError, match="only LPUSH, PUBLISH and PEXPIRE"):
        coord.store.step_transition(b.run_id, b.step, StepStatus.SUCCEEDED, token="t1",
                                    canvas=[("del", (QUEUE, ""))])
    assert coord.store.step_runs(b.run_id)[b.step].status is StepStatus.RUNNING


def test_celery_carries_a_chain_on_when_the_script_cannot(coord: Coordinator,
                                                         redis_url: str) -> None:
    nxt: dict[str, Any] = {"task": "step.x", "args": [], "kwargs": {}, "options": {"queue": QUEUE},
           "subtask_type": None, "immutable": True}
    plain = Context(id="t-1", root_id="t-0", chain=[nxt], chord=None, callbacks=None,
                    delivery_info={})
    assert held_chain(coord.app, plain, None)
    for req in (Context(id="t-1", chain=[], delivery_info={}),
                Context(id="t-1", chain=[nxt], chord={"task": "join"}, delivery_info={}),
                Context(id="t-1", chain=[nxt], callbacks=[nxt], delivery_info={}),
                Context(id="t-1", chain=[{**nxt, "subtask_type": "chord"}],
                        delivery_info={})):
        assert held_chain(coord.app, req, None) is None
    assert redis.Redis.from_url(redis_url).llen(QUEUE) == 0


def test_a_skipped_step_carries_its_chain_on_in_the_same_script(
        coord: Coordinator, redis_url: str) -> None:
    b = _begun(coord, redis_url)
    done = {"run_id": b.run_id, "step_id": b.step, "status": "skipped"}
    assert coord.progress.ended(b.d, b.run_id, b.step, StepStatus.SKIPPED, "not needed",
                                "t1", None, b.req, done)
    assert b.req.chain is None and b.r.llen(QUEUE) == 1
    follower = b.d.followers[b.step][0]
    assert coord.store.step_runs(b.run_id)[follower].status is StepStatus.QUEUED
    b.ended_as(coord, StepStatus.SKIPPED)


def test_a_failed_step_carries_its_chain_on_in_the_same_script(
        coord: Coordinator, redis_url: str) -> None:
    b = _begun(coord, redis_url)
    assert coord.progress.failed(b.d, b.run_id, b.step, {"type": "X", "message": "x"},
                                 b.req, "t1")
    assert b.req.chain is None and b.r.llen(QUEUE) == 1
    ours = b.r.rpop(QUEUE)
    assert ours is not None
    # what continue_canvas sent before: the chain's next task, no arguments
    from_dict(b.chain[-1], app=coord.app).apply_async(
        chain=b.chain[:-1], parent_id=b.req.id, root_id=b.req.root_id)
    theirs = b.r.rpop(QUEUE)
    assert theirs is not None
    assert _shape(ours) == _shape(theirs)
    b.ended_as(coord, StepStatus.FAILED)


def _wide(width: int) -> Any:
    """A fan-out of ``width`` lone sources (wider than a chord: one unit each) calling two
    functions, one of them also with a time limit and on a queue of its own."""
    from orchestrator.core.dsl import Workflow
    from tests.integration.flows import fail, sleep_step

    wf = Workflow("wide_lone")
    for i in range(width):
        if i % 3 == 0:
            wf.step(f"w{i}", sleep_step, seconds=0.0)
        elif i % 3 == 1:
            wf.step(f"w{i}", fail)
        else:
            wf.step(f"w{i}", sleep_step, seconds=0.0, timeout_s=30.0, queue="elsewhere")
    return wf.build()


@pytest.mark.parametrize("priority", [Priority.NORMAL, Priority.HIGH])
def test_the_lone_steps_of_a_wide_fan_out_share_a_template_per_kind(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch, priority: Priority) -> None:
    """A fan-out wider than a chord is one unit per branch, each one step's task alone.
    Such units share a template per version, function, queue, time limits and band: the
    version's first publish builds two messages per kind with Celery (3 kinds here), not
    two per branch; each message rendered is what Celery builds for its step (ids
    aside), and no generated id is shared by two branches or two runs."""
    from orchestrator.runtime import progress as progress_module

    built: list[str] = []
    real = progress_module.step_signature

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(str(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(progress_module, "step_signature", counting)
    d = coord.compile(_wide(60))
    units = list(d.plan.sources)
    assert len(units) == 60
    p = coord.progress
    assert not p.warm(d, units, priority)
    first = p.held(d, "run-1", units, priority)
    assert len(built) == 6 and all(x.startswith("tpl0step0") for x in built)
    assert p.warm(d, units, priority)
    again = p.held(d, "run-2", units, priority)
    assert len(built) == 6  # the second run renders only
    ids: list[str] = []
    for (uid, steps, got), (_, _, later) in zip(first, again, strict=True):
        canvas = d.plan.unit_map[uid].canvas
        want = _builder(coord, d, canvas, priority, [])("run-1")
        assert [_normal(c) for c in got] == [_normal(c) for c in want], uid
        assert steps == [canvas.id] and f'"step_id": "{canvas.id}"' in \
            base64.b64decode(json.loads(got[0][1][1])["body"]).decode()
        assert "run-2" in str(later) and "run-1" not in str(later)
        ids += set(UUID.findall(str(got))) | set(UUID.findall(str(later)))
    shared = {x for x in ids if ids.count(x) > 1}
    assert shared <= {coord.app.thread_oid}, shared
