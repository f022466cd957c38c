"""Every Lua script of the store, against a real redis-server; and the scripts' text
checked against the one transition table (no status name of their own)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from importlib import resources

import pytest
import redis

from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import RunNotFound
from orchestrator.store import AsyncRunReader, RunStore, connection, fields, scripts
from orchestrator.store.leases import Expired, Held, Leases
from orchestrator.store.records import LeaseMode, RunRecord
from orchestrator.store.run_cache import RunCache
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

LUA_FILES = sorted(p.name for p in (resources.files("orchestrator.store") / "lua").iterdir()
                   if p.name.endswith(".lua"))
# names the scripts must take from states.py / fields.py, never spell themselves
HANDED = ({s.value for s in StepStatus} | {s.value for s in RunStatus}
          | {fields.METRIC_RUNS, fields.METRIC_STEPS, fields.METRIC_DURATION_US,
             fields.METRIC_DURATION_BUCKET, fields.EVENT_KIND, str(fields.EVENTS_MAXLEN)})


@pytest.mark.parametrize("name", LUA_FILES)
def test_scripts_spell_no_status_or_field_name(name: str) -> None:
    text = scripts.read(name.removesuffix(".lua"))
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())  # no comments
    literals = set(re.findall(r"'([^']*)'", code)) | set(re.findall(r'"([^"]*)"', code))
    numbers = set(re.findall(r"\b\d{4,}\b", code))
    assert not (literals | numbers) & HANDED, f"{name} spells {(literals | numbers) & HANDED}"


def test_every_script_file_is_loaded() -> None:
    assert {s.name for s in scripts.ALL} | {"lib"} == {n.removesuffix(".lua")
                                                       for n in LUA_FILES}


def test_prelude_hands_the_transition_table(redis_url: str) -> None:
    store = RunStore.from_url(redis_url, "t", retention_s=60)
    src = scripts.prelude() + (
        "local out = {} for _, v in pairs(STEP) do table.insert(out, v) end "
        "for _, v in pairs(RUN) do table.insert(out, 'run:' .. v) end "
        "for k, _ in pairs(STEP_FINAL) do table.insert(out, 'final:' .. k) end return out")
    got = set(store.client.eval(src, 0))
    assert got == ({s.value for s in StepStatus} | {f"run:{s.value}" for s in RunStatus}
                   | {f"final:{s.value}" for s in StepStatus if s.terminal})


def _wf() -> WorkflowDef:
    return WorkflowDef(name="w", steps=[
        {"id": "a", "function": "f"}, {"id": "b", "function": "f"},
        {"id": "c", "function": "f", "inputs": {"x": {"from": "steps.a.output"}},
         "after": ["b"]}])


@pytest.fixture
def store(redis_url: str) -> RunStore:
    s = RunStore.from_url(redis_url, "t", retention_s=60)
    wf = _wf()
    s.create_run("r", wf, compile_workflow(wf), {"k": 1})
    return s


def _succeed(store: RunStore, step: str, output: object = None) -> None:
    assert store.transition_step("r", step, StepStatus.RUNNING)
    assert store.transition_step("r", step, StepStatus.SUCCEEDED, output=output,
                                 has_output=True)


def _statuses(store: RunStore) -> list[str]:
    return [f["status"] for _, f in store.events("r")]


def test_begin_step_fast_path_starts_when_every_parent_succeeded(store: RunStore) -> None:
    for p in ("a", "b"):
        _succeed(store, p, {"v": p})
    run, recs, outs, began = store.begin_step("r", "c", ["a", "b"], [], ["a"], True,
                                              {"attempt": 1, "worker": "w1"})
    assert began and run.status is RunStatus.RUNNING and run.input == {"k": 1}
    assert set(recs) == {"a", "b", "c"} and recs["c"].status is StepStatus.PENDING
    assert outs == {"a": {"v": "a"}}
    rec = store.step_runs("r", ["c"])["c"]
    assert rec.status is StepStatus.RUNNING and rec.worker == "w1" and rec.attempt == 1
    assert _statuses(store)[-1] == "running"


def test_begin_step_fast_path_waits_for_a_parent_that_did_not_succeed(store: RunStore
                                                                      ) -> None:
    _succeed(store, "a")
    store.transition_step("r", "b", StepStatus.FAILED)
    *_, began = store.begin_step("r", "c", ["a", "b"], [], [], True, {"attempt": 1})
    assert not began
    assert store.step_runs("r", ["c"])["c"].status is StepStatus.PENDING


def test_begin_step_does_not_start_in_a_run_that_is_not_running(store: RunStore) -> None:
    for p in ("a", "b"):
        _succeed(store, p)
    store.transition_run("r", RunStatus.CANCELLED)
    run, _, _, began = store.begin_step("r", "c", ["a", "b"], [], [], True, {})
    assert not began and run.status is RunStatus.CANCELLED


def test_begin_step_slow_path_only_reads(store: RunStore) -> None:
    _succeed(store, "a", 3)
    _, recs, outs, began = store.begin_step("r", "c", ["a", "b"], [], ["a"], False, {})
    assert not began and outs == {"a": 3} and recs["b"].status is StepStatus.PENDING
    with pytest.raises(RunNotFound):
        store.begin_step("nope", "c", ["a"], [], [], True, {})


def _hgetalls(store: RunStore) -> int:
    return int(store.client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def test_begin_step_reads_a_known_run_s_fixed_fields_once(store: RunStore) -> None:
    _succeed(store, "a", 1)
    first, *_ = store.begin_step("r", "b", [], [], [], False, {})
    before = _hgetalls(store)
    first.input["k"] = "changed by a step function"  # an object handed out is its own
    store.transition_run("r", RunStatus.CANCELLED)
    store.client.hset(store.keys.run("r"), "priority", "high")
    again, *_ = store.begin_step("r", "c", ["a", "b"], [], ["a"], False, {})
    assert _hgetalls(store) == before  # the run hash was not read whole again
    assert again.status is RunStatus.CANCELLED and again.priority.value == "high"
    assert again.input == {"k": 1} and again.workflow == "w" and again.version == first.version
    other = RunStore(store.client, store.keys, 60)  # a process that never saw the run
    fresh, *_ = other.begin_step("r", "c", ["a", "b"], [], [], False, {})
    assert _hgetalls(store) == before + 1 and fresh.status is RunStatus.CANCELLED
    store.client.delete(store.keys.run("r"))
    with pytest.raises(RunNotFound):
        store.begin_step("r", "c", ["a", "b"], [], [], False, {})


def test_the_run_cache_keeps_to_its_bounds() -> None:
    cache = RunCache(max_runs=3, max_bytes=100)
    run = RunRecord.from_hash("x", {"workflow": "w", "version": "v", "status": "running",
                                    "input": "{}", "created_at": "1", "units_remaining": "1"})
    for i in range(5):
        cache.remember(replace(run, run_id=f"r{i}"), "{}")
    assert len(cache) == 3 and "r1" not in cache and "r4" in cache
    cache.remember(replace(run, run_id="big"), '"' + "x" * 58 + '"')
    cache.remember(replace(run, run_id="big2"), '"' + "x" * 58 + '"')  # 120: "big" goes
    assert "big" not in cache and "big2" in cache
    cache.remember(replace(run, run_id="huge"), '"' + "x" * 99 + '"')  # larger than the whole cache
    assert "huge" not in cache and "big2" in cache
    got = cache.fresh("big2", {"status": "failed"})
    assert got is not None and got.status is RunStatus.FAILED and got.input == "x" * 58
    assert cache.fresh("r0", {"status": "failed"}) is None


def test_step_transition_counts_final_statuses_and_durations(store: RunStore) -> None:
    store.transition_step("r", "a", StepStatus.RUNNING, started_at=10.0)
    assert store.transition_step("r", "a", StepStatus.SUCCEEDED, ended_at=10.03,
                                 workflow="w")
    assert not store.transition_step("r", "a", StepStatus.RUNNING)  # final is final
    m = store.metrics()
    assert m.steps[("w", "a", "succeeded")] == 1
    assert m.duration_buckets[("w", "a")] == {"0.05": 1}
    assert m.duration_sums[("w", "a")] == pytest.approx(0.03)
    assert m.runs[("w", "started")] == 1


def test_metrics_an_older_release_wrote_are_added_in(store: RunStore) -> None:
    """Older releases counted every final status in ``steps|...``, summed durations as
    float seconds in ``dsum|...`` and bucketed without the status; this one counts a run
    with a duration by its bucket's field alone and sums integer µs: both add up."""
    store.client.hset(store.keys.metrics(), mapping={
        "steps|w|a|succeeded": 2, "steps|w|a|failed": 1, "dsum|w|a": "1.5",
        "dbucket|w|a|0.05": 2, "dbucket|w|a|+Inf": 1})
    store.transition_step("r", "a", StepStatus.RUNNING, started_at=10.0)
    store.transition_step("r", "a", StepStatus.FAILED, ended_at=10.0000014, workflow="w")
    store.transition_step("r", "b", StepStatus.CANCELLED, workflow="w")
    m = store.metrics()
    assert m.steps[("w", "a", "succeeded")] == 2
    assert m.steps[("w", "a", "failed")] == 2
    assert m.steps[("w", "b", "cancelled")] == 1
    assert m.duration_buckets[("w", "a")] == {"0.05": 2, "+Inf": 1, "0.005": 1}
    assert m.duration_sums[("w", "a")] == pytest.approx(1.5 + 1.4e-6)
    assert sorted(store.client.hkeys(store.keys.metrics())) == sorted([
        "steps|w|a|succeeded", "steps|w|a|failed", "dsum|w|a", "dbucket|w|a|0.05",
        "dbucket|w|a|+Inf", "dus|w|a", "dbucket|w|a|failed|0.005", "steps|w|b|cancelled",
        "runs|w|started"])


def test_run_transition_moves_indexes_and_refuses_a_missing_run(store: RunStore) -> None:
    assert store.transition_run("r", RunStatus.FAILED)
    assert store.list_runs(status=RunStatus.FAILED) == ["r"]
    assert store.list_runs(status=RunStatus.RUNNING) == []
    assert store.metrics().runs[("w", "failed")] == 1
    assert _statuses(store)[-1] == "failed"
    with pytest.raises(RunNotFound):
        store.transition_run("gone", RunStatus.FAILED)


def test_complete_unit_claims_each_successor_once(redis_url: str) -> None:
    # the "N": c needs a and b, d needs b: four units joined by counters
    wf = WorkflowDef(name="n", steps=[
        {"id": "a", "function": "f"}, {"id": "b", "function": "f"},
        {"id": "c", "function": "f", "after": ["a", "b"]},
        {"id": "d", "function": "f", "after": ["b"]}])
    plan = compile_workflow(wf)
    store = RunStore.from_url(redis_url, "t", retention_s=60)
    store.create_run("r", wf, plan, {})
    ua, ub = plan.unit_of_step["a"], plan.unit_of_step["b"]
    succ = plan.successors
    total = len(plan.units)
    first = store.complete_unit("r", ua, succ[ua])
    second = store.complete_unit("r", ub, succ[ub])
    assert first[0] == total - 1 and second[0] == total - 2
    assert sorted(first[1] + second[1]) == sorted(set(succ[ua]) | set(succ[ub]))
    assert store.complete_unit("r", ub, succ[ub]) == (total - 2, [])  # idempotent


def test_end_step_ends_the_step_and_completes_its_unit_in_one_call(redis_url: str) -> None:
    wf = _wf()  # a and b, then c: with no chord allowed, three units and a counter of 2
    plan = compile_workflow(wf, max_chord_width=1)
    store = RunStore.from_url(redis_url, "t", retention_s=60)
    store.create_run("e", wf, plan, {})
    ua, ub, uc = (plan.unit_of_step[s] for s in "abc")
    for step in "ab":
        *_, mode = store.begin_step("e", step, [], [], [], True, {}, token=f"t-{step}")
        assert mode is LeaseMode.BEGAN
    fenced, none = store.end_step("e", "a", StepStatus.SUCCEEDED, ua, plan.successors[ua],
                                  token="not-the-holder")
    assert (fenced, none) == (-2, None)
    assert store.step_runs("e", ["a"])["a"].status is StepStatus.RUNNING
    assert not store.unit_done("e", ua)  # a fenced end completes nothing
    code, first = store.end_step("e", "a", StepStatus.SUCCEEDED, ua, plan.successors[ua],
                                 output=1, has_output=True, token="t-a")
    assert code == 1 and first is not None and first.remaining == 2 and first.ready == []
    code, last = store.end_step("e", "b", StepStatus.FAILED, ub, plan.successors[ub],
                                token="t-b")
    assert code == 1 and last is not None and (last.remaining, last.ready) == (1, [uc])
    assert store.step_runs("e", ["a", "b"])["b"].status is StepStatus.FAILED
    assert store.outputs("e")["a"] == 1 and store.unit_done("e", ua)
    assert store.client.zscore(store.keys.claims(), f"e|{uc}") is not None  # until published


def _library_loaded(store: RunStore) -> bool:
    return bool(store.client.function_list(library=f"orch_{scripts.tag()}"))


def test_scripts_run_as_functions_and_reload_after_redis_forgets_them(
        store: RunStore, redis_url: str) -> None:
    assert _library_loaded(store)  # the store's first call loaded it
    assert store.client.script_exists(scripts.BEGIN_STEP.sha) == [False]  # no EVALSHA
    store.client.function_flush()
    store.published("r", [], ["a", "b"])  # a pipeline of script calls
    assert {s.status for s in store.step_runs("r", ["a", "b"]).values()} == {
        StepStatus.QUEUED}
    store.client.function_flush()
    assert store.transition_step("r", "a", StepStatus.RUNNING)
    assert _library_loaded(store)

    async def from_asyncio() -> list[str]:
        reader = AsyncRunReader(redis_url, store.keys)
        reader.open()
        try:
            assert await reader.idempotency_set("k", "fp", "run1", 30) is None
            store.client.function_flush()
            await reader.idempotency_release("k", "run1")  # a script's call
            if not _library_loaded(store):
                return ["not loaded by a call"]
            wf = _wf()
            store.client.function_flush()
            await store.acreate_run(reader.client, "ar", wf, compile_workflow(wf), {"k": 1})
            store.client.function_flush()
            _, snap = await store.apublish_units(reader.client, "ar", [], claim=False,
                                                 step_ids=["a"])  # a pipeline
            assert snap is not None and snap[0].run_id == "ar"
            return [] if _library_loaded(store) else ["not loaded by a pipeline"]
        finally:
            await reader.close()

    assert asyncio.run(from_asyncio()) == []


def test_a_server_without_functions_runs_the_scripts_with_evalsha(
        redis_binary: str) -> None:
    """As on Redis 6: FCALL and FUNCTION are unknown commands (renamed away here)."""
    with RedisServer(binary=redis_binary, extra_args=(
            "--rename-command", "FCALL", "", "--rename-command", "FUNCTION", "")) as server:
        store = RunStore.from_url(server.url, "t", retention_s=60)
        wf = _wf()
        store.create_run("r", wf, compile_workflow(wf), {"k": 1})
        store.published("r", [], ["a", "b"])
        assert store.client.script_exists(scripts.CREATE_RUN.sha) == [True]
        store.client.script_flush()
        store.published("r", [], ["c"])
        store.client.script_flush()
        assert store.transition_step("r", "a", StepStatus.RUNNING)
        assert {s.status for s in store.step_runs("r", ["a", "b", "c"]).values()} == {
            StepStatus.RUNNING, StepStatus.QUEUED}
        # a begin within the restart grace reads the server's start (LIVING_VM false)
        assert store.begin_step("r", "b", [], [], [], True, {"attempt": 1}, token="t",
                                tag="g", lease_s=3600.0)[3] is LeaseMode.BEGAN

        async def from_asyncio() -> str:  # the API's submit: a call, then a pipeline
            aclient = connection.async_client(server.url, decode_responses=True)
            try:
                await store.acreate_run(aclient, "ar", wf, compile_workflow(wf), {"k": 1})
                store.client.script_flush()
                _, snap = await store.apublish_units(aclient, "ar", [], claim=False,
                                                     step_ids=["a"])
                assert snap is not None
                return snap[0].run_id
            finally:
                await aclient.aclose()

        assert asyncio.run(from_asyncio()) == "ar"
        store.client.close()


def test_idempotency_keys_claim_keep_and_release(redis_url: str) -> None:
    async def scenario() -> None:
        reader = AsyncRunReader(redis_url, RunStore.from_url(redis_url, "t", 60).keys)
        reader.open()
        try:
            assert await reader.idempotency_set("k", "fp", "run1", 30) is None
            assert await reader.idempotency_set("k", "fp2", "run2", 30) == {
                "fingerprint": "fp", "run_id": "run1"}
            await reader.idempotency_release("k", "run2")  # not its run: kept
            assert await reader.idempotency_set("k", "fp", "run3", 30)
            await reader.idempotency_release("k", "run1")
            assert await reader.idempotency_set("k", "fp", "run3", 30) is None
            await reader.idempotency_keep("k", 1000)
        finally:
            await reader.close()

    asyncio.run(scenario())


# --- leases -----------------------------------------------------------------------------


def _begin(store: RunStore, token: str, lease_s: float = 30.0, tag: str = "tag-1",
           step: str = "a") -> LeaseMode:
    return store.begin_step("r", step, [], [], [], True, {"attempt": 1}, token=token,
                            tag=tag, lease_s=lease_s)[3]


def test_one_delivery_holds_a_step_run_at_a_time(store: RunStore) -> None:
    assert _begin(store, "t1") is LeaseMode.BEGAN
    assert _begin(store, "t2") is LeaseMode.BUSY  # a copy while t1's lease is live
    # fencing: only the holder records an outcome
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t2") == -2
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t1") == 1
    assert _begin(store, "t3") is LeaseMode.BUSY  # ended, but t1 is still settling
    leases = Leases(store.client, store.keys)
    leases.release([Held("r", "a", "t1")], ["done"])
    assert _begin(store, "t3") is LeaseMode.DROP  # settled: nothing to do


def test_an_expired_lease_is_taken_over(store: RunStore) -> None:
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    leases = Leases(store.client, store.keys)
    wait_until(lambda: [e.token for e in leases.expired()] == ["t1"], 5)
    assert _begin(store, "t2") is LeaseMode.BEGAN  # running -> running, new holder
    assert leases.renew([Held("r", "a", "t1"), Held("r", "a", "t2")], 30) == [0, 1]
    assert store.step_transition("r", "a", StepStatus.FAILED, token="t1") == -2


def test_a_renewal_takes_a_lease_nobody_holds_for_its_delivery(store: RunStore) -> None:
    """The keeper may renew before its task's begin (a slow begin after a failover):
    the lease is taken for that delivery, whose begin then finds its own token."""
    leases = Leases(store.client, store.keys)
    assert leases.renew([Held("r", "a", "t1", "tag-1")], 30) == [3]  # not begun yet
    assert _begin(store, "t2") is LeaseMode.BUSY  # another copy finds it held
    assert _begin(store, "t1") is LeaseMode.BEGAN  # its own begin goes on
    assert leases.renew([Held("r", "a", "t1")], 30, {"t1"}) == [1]
    assert leases.renew([Held("gone", "a", "t3")], 30) == [-1]  # no run: nothing made
    assert store.client.exists(store.keys.leases("gone")) == 0


def test_a_lease_redis_lost_is_taken_back_and_no_other_one(store: RunStore) -> None:
    leases = Leases(store.client, store.keys)
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    wait_until(lambda: leases.expired(), 5)
    # a delivery that held its lease takes back only a lost one, never another's
    assert leases.renew([Held("r", "a", "t2")], 30, {"t2"}) == [0]
    store.client.hdel(store.keys.leases("r"), "a")  # lost by a restart or a failover
    assert leases.renew([Held("r", "a", "t2", "tag-2")], 30, {"t2"}) == [3]
    assert _begin(store, "t1") is LeaseMode.BUSY
    # a delivery not confirmed yet takes over a lease nobody holds, as its begin would
    assert _begin(store, "t3", lease_s=0.05, step="b") is LeaseMode.BEGAN
    wait_until(lambda: [e.token for e in leases.expired()] == ["t3"], 5)
    assert leases.renew([Held("r", "b", "t4")], 30) == [3]
    assert leases.renew([Held("r", "b", "t3")], 30, {"t3"}) == [0]
    assert store.step_transition("r", "b", StepStatus.SUCCEEDED, token="t3") == -2


def test_a_holder_whose_running_record_redis_lost_records_its_outcome(
        store: RunStore) -> None:
    """A restart (or failover) lost a step run's lease and its move to running while its
    attempt ran on: the holder's keeper takes the lease back, and the attempt's success
    is recorded over the older record (and its lease settled), not refused; a copy then
    finds nothing to do.  Without the lease, the same move is still refused by the
    table."""
    k = store.keys
    assert _begin(store, "t1") is LeaseMode.BEGAN
    rec = json.loads(str(store.client.hget(k.steps("r"), "a")))
    assert rec["status"] == "running"
    # lost: the lease, and the record's move to running
    store.client.hset(k.steps("r"), "a", json.dumps({**rec, "status": "queued"}))
    store.client.hdel(k.leases("r"), "a")
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED) == 0  # the table says no
    leases = Leases(store.client, store.keys)
    assert leases.renew([Held("r", "a", "t1", "tag-1")], 30, {"t1"}) == [3]  # taken back
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t2") == -2
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, output=5,
                                 has_output=True, token="t1") == 1
    assert store.step_runs("r")["a"].status is StepStatus.SUCCEEDED
    leases.release([Held("r", "a", "t1")], ["done"])
    assert _begin(store, "t3") is LeaseMode.DROP


def test_a_lease_given_up_or_settled_is_done_with_not_lost(store: RunStore) -> None:
    """A renewal between a give-up (or a settle) and its task's return must neither take
    the lease back nor stop the task."""
    leases = Leases(store.client, store.keys)
    assert _begin(store, "t1") is LeaseMode.BEGAN
    assert store.retry_later("r", "a", "t1", {"message": "x"}, 60, "tm", "{}") == 1
    assert leases.renew([Held("r", "a", "t1")], 30, {"t1"}) == [2]
    leases.release([Held("r", "a", "t1")], ["done"])  # nothing to release: stays given
    # given up: its delivery may write nothing more, the next copy takes over at once
    assert store.step_transition("r", "a", StepStatus.FAILED, token="t1") == -2
    assert leases.live_lease("r") is None
    assert _begin(store, "t2") is LeaseMode.BEGAN  # retrying -> running, new holder
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t2") == 1
    leases.release([Held("r", "a", "t2")], ["done"])
    assert leases.renew([Held("r", "a", "t2")], 30, {"t2"}) == [2]
    assert leases.renew([Held("r", "a", "t5")], 30) == [0]  # settled: nothing to take


def test_a_lease_the_reaper_restored_stops_its_late_holder(store: RunStore) -> None:
    """A holder whose lease expired, and whose message the reaper put back (the lease
    "restored"), must stop: the next copy may take the step run over now."""
    leases = Leases(store.client, store.keys)
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    store.client.hset(store.keys.leases("r"), "a", "t1|0|tag-1|restored")  # the reaper's mark
    assert leases.renew([Held("r", "a", "t1")], 30, {"t1"}) == [0]
    assert leases.renew([Held("r", "a", "t1")], 30) == [0]


def test_an_ended_step_whose_holder_died_is_settled_by_the_next_copy(store: RunStore
                                                                     ) -> None:
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t1") == 1
    wait_until(lambda: Leases(store.client, store.keys).expired(), 5)
    assert _begin(store, "t2") is LeaseMode.SETTLE


def test_reaper_restores_the_message_of_an_expired_lease(store: RunStore) -> None:
    r = store.client
    message = {"body": "x", "headers": {"id": "task-1"}, "properties": {}}
    r.hset(store.keys.unacked(), "tag-1", json.dumps([message, "default", "default"]))
    r.zadd(store.keys.unacked_index(), {"tag-1": 1.0})
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    leases = Leases(store.client, store.keys)
    expired = wait_until(lambda: leases.expired(), 5)
    found = leases.unacked_message(expired[0].tag)
    assert found is not None and found[2] == "default"
    assert leases.restore(expired[0], found[0], found[2])
    assert not leases.restore(expired[0], found[0], found[2])  # once
    back = json.loads(r.lpop("default"))
    assert back["headers"]["redelivered"] is True and back["headers"]["id"] == "task-1"
    assert r.hlen(store.keys.unacked()) == 0 and leases.expired() == []
    assert _begin(store, "t2") is LeaseMode.BEGAN  # the restored copy takes over


@pytest.mark.parametrize("apart", [False, True], ids=["one-script", "broker-apart"])
def test_the_live_lease_of_a_hung_task_is_restored_only_as_hung(store: RunStore,
                                                                apart: bool) -> None:
    """A step run that ended while its task has not returned: its live lease is restored
    (its message put back, the lease marked) only when the reaper says it is hung, not
    after a settle; the holder's next renewal is refused, and the copy settles the step.
    ``broker-apart``: the two-step path of a broker on another Redis (here another
    client of the same server)."""
    r = store.client
    message = {"body": "x", "headers": {"id": "task-1"}, "properties": {}}
    r.hset(store.keys.unacked(), "tag-1", json.dumps([message, "default", "default"]))
    r.zadd(store.keys.unacked_index(), {"tag-1": 1.0})
    broker = redis.Redis(connection_pool=r.connection_pool) if apart else None
    leases = Leases(r, store.keys, broker)
    assert _begin(store, "t1") is LeaseMode.BEGAN
    assert store.step_transition("r", "a", StepStatus.SUCCEEDED, token="t1") == 1
    e = Expired("r", "a", "t1", "tag-1", StepStatus.SUCCEEDED)
    assert leases.live_lease("r") == Held("r", "a", "t1", "tag-1")
    assert not leases.restore(e, message, "default")  # live: not expired
    assert leases.restore(e, message, "default", hung=True)
    assert not leases.restore(e, message, "default", hung=True)  # once
    assert json.loads(str(r.lpop("default")))["headers"]["redelivered"] is True
    assert leases.renew([Held("r", "a", "t1")], 30, {"t1"}) == [0]  # the holder stops
    assert _begin(store, "t2") is LeaseMode.SETTLE
    assert _begin(store, "u1", step="b") is LeaseMode.BEGAN  # settled, given: not hung
    assert store.step_transition("r", "b", StepStatus.SUCCEEDED, token="u1") == 1
    leases.release([Held("r", "b", "u1")], ["done"])
    assert not leases.restore(Expired("r", "b", "u1", "", StepStatus.SUCCEEDED), message,
                              "default", hung=True)


def test_an_orphan_is_parked_and_an_ended_step_settles(store: RunStore) -> None:
    leases = Leases(store.client, store.keys)
    assert _begin(store, "t1", lease_s=0.05) is LeaseMode.BEGAN
    assert _begin(store, "u1", lease_s=0.05, step="b") is LeaseMode.BEGAN
    assert store.step_transition("r", "b", StepStatus.SUCCEEDED, token="u1") == 1
    expired = wait_until(lambda: len(leases.expired()) == 2 and leases.expired(), 5)
    got = {e.step_id: leases.park(e, 60) for e in expired}
    assert got == {"a": 2, "b": 1}
    assert leases.expired() == []


def test_a_busy_copy_is_deferred_until_the_lease_would_expire(store: RunStore) -> None:
    assert _begin(store, "t1", lease_s=0.3) is LeaseMode.BEGAN
    leases = Leases(store.client, store.keys)
    leases.defer_copy("r", "a", {"task": "step.f", "options": {}}, 60, 0.3)
    assert store.due_timers(30) == []
    due = wait_until(lambda: store.due_timers(30), 5)
    assert due[0][0] == "defer:r|a" and json.loads(due[0][1] or "{}")["task"] == "step.f"
    store.timers_done([due[0][0]])
    assert store.client.zcard(store.keys.timers()) == 0


def test_a_run_from_before_a_restart_is_not_taken_by_a_new_delivery_in_the_grace(
        store: RunStore) -> None:
    """Within a lease length of the server's start (an hour's lease here), a step run of
    a run another server created (its epoch: a restart from an AOF that may have lost
    the lease of an attempt still running) is taken by no delivery that did not hold it:
    a begin is BUSY and its copy waits until the grace ends; a renewal of a delivery its
    keeper never saw hold the lease takes nothing, one that held it takes its lost lease
    back.  A run this server created is not held back, nor a run that is gone."""
    hour = 3600.0
    leases = Leases(store.client, store.keys)
    assert store.client.hget(store.keys.run("r"), "epoch") == \
        store.client.info("server")["run_id"]
    assert _begin(store, "t1", lease_s=hour) is LeaseMode.BEGAN  # created here: no grace
    store.client.hset(store.keys.run("r"), "epoch", "another-server")
    store.client.hdel(store.keys.leases("r"), "a")  # lost by the restart
    assert _begin(store, "t2", lease_s=hour) is LeaseMode.BUSY
    assert _begin(store, "t2", lease_s=hour, step="b") is LeaseMode.BUSY  # a first begin
    assert leases.renew([Held("r", "a", "t2", "tag-2")], hour) == [0]  # never held it
    assert leases.renew([Held("gone", "a", "t3")], hour) == [-1]
    leases.defer_copy("r", "a", {"task": "step.f", "options": {}}, 60, hour)
    due = store.client.zscore(store.keys.timers(), "defer:r|a")
    uptime_ms = 1000 * int(store.client.info("server")["uptime_in_seconds"])
    assert due is not None and due > time.time() * 1000 + hour * 1000 - uptime_ms - 5000
    assert leases.renew([Held("r", "a", "t1", "tag-1")], hour, {"t1"}) == [3]  # back
    assert _begin(store, "t1", lease_s=hour) is not LeaseMode.BUSY  # its own again
    assert _begin(store, "t2", lease_s=hour) is LeaseMode.BUSY


def test_a_promoted_replica_holds_back_the_runs_of_its_old_master_for_a_grace(
        redis_binary: str) -> None:
    """A failover can lose the writes the master had not yet replicated: the lease of an
    attempt still running, the pop of its message.  A replica promoted (``REPLICAOF NO
    ONE``, as Sentinel does) starts the same grace as a restart when the store's library
    first runs there, although its uptime is long: a step run of a run the old master
    created is taken by no delivery that did not hold it; a run created after the
    promotion is not held back."""
    grace = 2.0
    with RedisServer(binary=redis_binary) as master, RedisServer(
            binary=redis_binary, extra_args=("--replicaof", "127.0.0.1",
                                             str(master.port))) as replica:
        old = RunStore.from_url(master.url, "t", retention_s=60)
        wf = _wf()
        old.create_run("r", wf, compile_workflow(wf), {})
        assert old.client.wait(1, 10_000) == 1  # the run is on the replica
        time.sleep(grace + 1.0)  # the replica's start is over a grace ago
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        new = RunStore.from_url(replica.url, "t", retention_s=60)
        new.create_run("r2", wf, compile_workflow(wf), {})
        assert _begin(new, "t1", lease_s=grace) is LeaseMode.BUSY  # the grace
        assert new.begin_step("r2", "a", [], [], [], True, {"attempt": 1}, token="t2",
                              tag="tag-2", lease_s=grace)[3] is LeaseMode.BEGAN  # a new run
        time.sleep(grace + 0.1)
        assert _begin(new, "t1", lease_s=grace) is LeaseMode.BEGAN  # the grace is over


def test_several_timers_are_done_in_one_pass(store: RunStore) -> None:
    """A timer pass that published several messages forgets them in one round trip (on a
    Redis Cluster too, whose pipelines take no multi-key DEL: a pass that raised there
    left every timer it had published due again, over and over)."""
    for step in ("a", "b", "c"):
        assert _begin(store, f"t-{step}", step=step) is not LeaseMode.BUSY
        assert store.step_transition("r", step, StepStatus.RUNNING, token=f"t-{step}") >= 0
        assert store.retry_later("r", step, f"t-{step}", {"message": "x"}, 0.0,
                                 f"tm-{step}", '{"m": 1}') == 1
    due = wait_until(lambda: len(store.due_timers(30)) == 3 or None, 5)
    assert due
    store.timers_done(["tm-a", "tm-b", "tm-c"])
    assert store.client.zcard(store.keys.timers()) == 0
    assert not any(store.client.exists(store.keys.timer(f"tm-{s}")) for s in "abc")


def test_retry_later_gives_the_lease_up_and_holds_a_timer(store: RunStore) -> None:
    assert _begin(store, "t1") is LeaseMode.BEGAN
    assert store.retry_later("r", "a", "t2", {"message": "x"}, 0.0, "tm", "{}") == -2
    assert store.retry_later("r", "a", "t1", {"message": "x"}, 0.05, "tm", '{"m": 1}') == 1
    assert store.step_runs("r", ["a"])["a"].status is StepStatus.RETRYING
    due = wait_until(lambda: store.due_timers(30), 5)
    assert due == [("tm", '{"m": 1}')]
    assert store.due_timers(30) == []  # re-armed, not due twice
    assert _begin(store, "t2") is LeaseMode.BEGAN  # the next attempt


def test_nothing_is_recreated_for_a_run_that_is_gone(store: RunStore) -> None:
    store.client.delete(*store.keys.run_keys("r"))
    assert store.complete_unit("r", "u0", ["u1"]) == (-1, [])
    assert store.step_transition("r", "a", StepStatus.RUNNING) == -1
    assert store.claim_sources("r", ["u0"]) == []
    with pytest.raises(RunNotFound):
        _begin(store, "t1")
    assert [k for k in store.client.scan_iter(f"{store.keys.run('r')}*")] == []


def test_a_straggler_of_an_ended_run_creates_no_key_without_ttl(store: RunStore) -> None:
    assert store.transition_run("r", RunStatus.CANCELLED)  # retention TTL on every key
    # stragglers: a late delivery, a late transition, a late unit completion
    assert _begin(store, "t1") is LeaseMode.OWNED
    store.step_transition("r", "a", StepStatus.CANCELLED, token="t1")
    store.complete_unit("r", "u0", [])
    keys = list(store.client.scan_iter(f"{store.keys.run('r')}*"))
    assert keys and all(store.client.ttl(k) > 0 for k in keys), keys


def test_a_run_that_ends_puts_its_callback_in_the_outbox(store: RunStore) -> None:
    from orchestrator.store import CallbackRegistry

    registry = CallbackRegistry(store.client, store.keys, 60)
    registry.register("r", "http://127.0.0.1:9/hook")
    assert registry.due(30) == []  # not before the run ends
    assert store.transition_run("r", RunStatus.SUCCEEDED)
    (rid, reg), = registry.due(30)
    assert rid == "r" and reg["url"] == "http://127.0.0.1:9/hook"
    assert registry.due(30) == []  # re-armed while it is tried
    registry.record("r", {"attempt": 1, "ok": False, "error": "refused"}, retry_in_s=0.0)
    (rid, reg), = wait_until(lambda: registry.due(30), 5)
    assert [a["attempt"] for a in reg["attempts"]] == [1]
    registry.record("r", {"attempt": 2, "ok": True}, retry_in_s=None)
    assert registry.get("r")["done"] and "r" not in registry.pending()  # type: ignore[index]
    assert store.client.zcard(store.keys.callbacks_outbox()) == 0
