"""The run store in Redis: runs, step runs, outputs, unit counters and event streams.

State changes go through Lua scripts, so each is atomic and checked against the one
transition table in :mod:`orchestrator.core.states`; an illegal transition is refused, not
applied.  Every key comes from :class:`orchestrator.store.keys.Keys`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import Plan
from orchestrator.core.states import RunStatus, StepStatus, run_sources, step_sources
from orchestrator.errors import RunExists, RunNotFound
from orchestrator.store.keys import Keys

EVENTS_MAXLEN = 10_000

# The one step transition, shared by the scripts below: checks the transition table
# (sources: ","-joined, "pending" meaning no record), merges the patch, stores the output
# (if not ""), appends the event, and with a workflow name counts a final status in the
# metrics (and its duration in the histogram's bucket).  Returns {moved 0/1, old status}.
_STEP_TX_FN = """
local function step_tx(k_steps, k_events, k_outputs, k_metrics, step, new, sources, patch,
                       output, now, maxlen, wf, buckets)
  local cur = redis.call('HGET', k_steps, step)
  local rec = {}
  local status = 'pending'
  if cur then rec = cjson.decode(cur); status = rec['status'] end
  local ok = false
  for s in string.gmatch(sources, '[^,]+') do if s == status then ok = true end end
  if not ok then return {0, status} end
  for k, v in pairs(cjson.decode(patch)) do rec[k] = v end
  rec['status'] = new
  redis.call('HSET', k_steps, step, cjson.encode(rec))
  if output ~= '' then redis.call('HSET', k_outputs, step, output) end
  redis.call('XADD', k_events, 'MAXLEN', '~', maxlen, '*', 'kind', 'step', 'step', step,
    'status', new, 'attempt', tostring(rec['attempt'] or 0), 'ts', now)
  local final = new == 'succeeded' or new == 'failed' or new == 'skipped'
    or new == 'cancelled'
  if wf ~= '' and final then
    local base = wf .. '|' .. step
    redis.call('HINCRBY', k_metrics, 'steps|' .. base .. '|' .. new, 1)
    local s, e = tonumber(rec['started_at']), tonumber(rec['ended_at'])
    if (new == 'succeeded' or new == 'failed') and s and e then
      local d = e - s
      redis.call('HINCRBYFLOAT', k_metrics, 'dsum|' .. base, d)
      local bucket = '+Inf'
      for b in string.gmatch(buckets, '[^,]+') do
        if d <= tonumber(b) then bucket = b; break end
      end
      redis.call('HINCRBY', k_metrics, 'dbucket|' .. base .. '|' .. bucket, 1)
    end
  end
  return {1, status}
end
"""

# KEYS: steps, events, outputs, metrics.  ARGV: step, new status, sources, patch JSON,
# output JSON or "", now, maxlen, workflow ("" for no metrics), bucket bounds.
_STEP_TRANSITION = _STEP_TX_FN + """
return step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
               ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
"""

# What a step needs, in one round trip: the run hash, step records (parents first, the
# step's own last), outputs; and on the fast path (the caller saw that only "all parents
# succeeded" matters), the move to running when the run is running and every parent
# succeeded.  KEYS: run, steps, outputs, events, metrics.  ARGV: step, fast "1"/"0",
# running sources, running patch JSON, now, maxlen, parents n, ids n, reads n, ids…,
# reads….  Returns {run HGETALL, records, outputs, began 0/1}.
_BEGIN_STEP = _STEP_TX_FN + """
local np, ni, nr = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local run = redis.call('HGETALL', KEYS[1])
local ids = {}
for i = 1, ni do ids[i] = ARGV[9 + i] end
local recs = redis.call('HMGET', KEYS[2], unpack(ids))
local outs = {}
if nr > 0 then
  local rids = {}
  for i = 1, nr do rids[i] = ARGV[9 + ni + i] end
  outs = redis.call('HMGET', KEYS[3], unpack(rids))
end
local began = 0
if ARGV[2] == '1' then
  local status = nil
  for i = 1, #run, 2 do if run[i] == 'status' then status = run[i + 1] end end
  local ok = status == 'running'
  for i = 1, np do
    if not ok then break end
    ok = recs[i] and cjson.decode(recs[i])['status'] == 'succeeded'
  end
  if ok then
    local res = step_tx(KEYS[2], KEYS[4], KEYS[3], KEYS[5], ARGV[1], 'running', ARGV[3],
                        ARGV[4], '', ARGV[5], ARGV[6], '', '')
    began = res[1]
  end
end
return {run, recs, outs, began}
"""

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0)
_BUCKETS_ARG = ",".join(repr(b) for b in DURATION_BUCKETS_S)

# KEYS: run, events, metrics, status-index of each RunStatus (in enum order).
# ARGV: new status, allowed sources, now, extra fields JSON, status names (enum order).
_RUN_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
local ok = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == status then ok = true end end
if not ok then return {0, status} end
local created = redis.call('HGET', KEYS[1], 'created_at')
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
local i = 0
local id = redis.call('HGET', KEYS[1], 'run_id')
for name in string.gmatch(ARGV[5], '[^,]+') do
  i = i + 1
  if name == status then redis.call('ZREM', KEYS[3 + i], id) end
  if name == ARGV[1] then redis.call('ZADD', KEYS[3 + i], created, id) end
end
local wf = redis.call('HGET', KEYS[1], 'workflow')
redis.call('HINCRBY', KEYS[3], 'runs|' .. wf .. '|' .. ARGV[1], 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'kind', 'run', 'status', ARGV[1],
  'ts', ARGV[3])
return {1, status}
"""

# KEYS: counters, done, claimed, run.  ARGV: unit, successors...
# Returns {units remaining after this one, successors claimed for dispatch by this call}.
_COMPLETE_UNIT = """
local ready = {}
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  local remaining = redis.call('HINCRBY', KEYS[4], 'units_remaining', -1)
  for i = 2, #ARGV do
    if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then
      if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then table.insert(ready, ARGV[i]) end
    end
  end
  return {remaining, ready}
end
return {tonumber(redis.call('HGET', KEYS[4], 'units_remaining')), ready}
"""


@dataclass(frozen=True)
class StepRun:
    """One step's record in a run."""

    step_id: str
    status: StepStatus
    attempt: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    worker: str | None = None
    task_id: str | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @classmethod
    def from_json(cls, step_id: str, raw: str | None) -> StepRun:
        if raw is None:
            return cls(step_id, StepStatus.PENDING)
        d = json.loads(raw)
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["status"] = StepStatus(d.get("status", "pending"))
        return cls(step_id=step_id, **{k: v for k, v in fields.items() if k != "step_id"})


@dataclass(frozen=True)
class RunRecord:
    """A run's fields."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input: Any
    created_at: float
    started_at: float | None
    ended_at: float | None
    units_remaining: int
    error: str | None = None


def _f(v: Any) -> float | None:
    return None if v in (None, "") else float(v)


class RunStore:
    """Redis-backed store of runs.  Thread-safe as redis-py's client is."""

    def __init__(self, client: redis.Redis, keys: Keys, retention_s: int) -> None:
        # redis-py types replies as ``bytes | str``; with decode_responses=True they are str
        self.r: Any = client
        self.keys = keys
        self.retention_s = retention_s
        self._step_tx = client.register_script(_STEP_TRANSITION)
        self._run_tx = client.register_script(_RUN_TRANSITION)
        self._complete = client.register_script(_COMPLETE_UNIT)
        self._begin = client.register_script(_BEGIN_STEP)

    @classmethod
    def from_url(cls, url: str, prefix: str, retention_s: int) -> RunStore:
        """Connect to ``url`` (decoded responses) and build a store."""
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=25,
                                      socket_keepalive=True)
        return cls(client, Keys(prefix), retention_s)

    # --- definitions ---------------------------------------------------------------------

    def save_definition(self, wf: WorkflowDef, plan: Plan) -> None:
        """Store a workflow version and its plan (idempotent: a version never changes)."""
        p = self.r.pipeline(transaction=False)
        p.set(self.keys.definition(wf.version), wf.model_dump_json(by_alias=True), nx=True)
        p.set(self.keys.plan(wf.version), plan.model_dump_json(), nx=True)
        p.execute()

    def load_definition(self, version: str) -> tuple[WorkflowDef, Plan]:
        """Return the workflow and plan a run pinned to.

        Raises:
            RunNotFound: the version is not stored (expired or never submitted).
        """
        wf_raw, plan_raw = self.r.mget(self.keys.definition(version), self.keys.plan(version))
        if wf_raw is None or plan_raw is None:
            raise RunNotFound(f"workflow version {version} is not in the store")
        return WorkflowDef.model_validate_json(wf_raw), Plan.model_validate_json(plan_raw)

    # --- runs ----------------------------------------------------------------------------

    def create_run(self, run_id: str, wf: WorkflowDef, plan: Plan, run_input: Any) -> None:
        """Create a run in ``running`` with its unit counters, and index it.

        Raises:
            RunExists: a run with this id exists (ids are claimed atomically).
        """
        now = time.time()
        k = self.keys
        if not self.r.hsetnx(k.run(run_id), "run_id", run_id):
            raise RunExists(f"run {run_id!r} already exists; use another id, or read it")
        p = self.r.pipeline(transaction=True)
        p.hset(k.run(run_id), mapping={
            "run_id": run_id, "workflow": wf.name, "version": wf.version,
            "status": RunStatus.RUNNING.value, "input": json.dumps(run_input),
            "created_at": now, "started_at": now, "units_remaining": len(plan.units),
        })
        counts = {u: n for u, n in plan.predecessor_counts.items() if n}
        if counts:
            p.hset(k.counters(run_id), mapping=counts)
        p.zadd(k.runs_index(), {run_id: now})
        p.zadd(k.runs_by_workflow(wf.name), {run_id: now})
        p.zadd(k.runs_by_status(RunStatus.RUNNING.value), {run_id: now})
        p.hincrby(k.metrics(), f"runs|{wf.name}|started", 1)
        p.xadd(k.events(run_id), {"kind": "run", "status": "running", "ts": now},
               maxlen=EVENTS_MAXLEN, approximate=True)
        p.execute()

    def exists(self, run_id: str) -> bool:
        """True when the run is in the store."""
        return bool(self.r.exists(self.keys.run(run_id)))

    def run(self, run_id: str) -> RunRecord:
        """Return the run's record.

        Raises:
            RunNotFound: no such run (never created, or expired by retention).
        """
        d = self.r.hgetall(self.keys.run(run_id))
        if not d:
            raise RunNotFound(f"run {run_id!r} is not in the store (unknown id, or expired "
                              f"after the retention of {self.retention_s} s)")
        return RunRecord(
            run_id=run_id, workflow=d["workflow"], version=d["version"],
            status=RunStatus(d["status"]), input=json.loads(d["input"]),
            created_at=float(d["created_at"]), started_at=_f(d.get("started_at")),
            ended_at=_f(d.get("ended_at")), units_remaining=int(d["units_remaining"]),
            error=d.get("error"),
        )

    def transition_run(self, run_id: str, status: RunStatus, **fields: Any) -> bool:
        """Move the run to ``status`` if the table allows it; return whether it moved.

        Raises:
            RunNotFound: no such run.
        """
        k = self.keys
        now = time.time()
        if status.terminal:
            fields.setdefault("ended_at", now)
        order = list(RunStatus)
        res = self._run_tx(
            keys=[k.run(run_id), k.events(run_id), k.metrics(),
                  *[k.runs_by_status(s.value) for s in order]],
            args=[status.value, ",".join(s.value for s in run_sources(status)), now,
                  json.dumps(fields), ",".join(s.value for s in order)],
        )
        if int(res[0]) == -1:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        moved = int(res[0]) == 1
        if moved and status.terminal:
            self.expire_run(run_id)
        return moved

    def expire_run(self, run_id: str) -> None:
        """Apply retention to every key of the run."""
        p = self.r.pipeline(transaction=False)
        for key in self.keys.run_keys(run_id):
            p.expire(key, self.retention_s)
        p.execute()

    def list_runs(self, workflow: str | None = None, status: RunStatus | None = None,
                  offset: int = 0, limit: int = 50) -> list[str]:
        """Run ids, newest first, from the indexes (no key scans).

        Runs whose keys expired by retention are dropped from the indexes read here as
        they are met, so a page may hold fewer than ``limit`` ids.
        """
        k = self.keys
        indexes = [k.runs_index()]
        if workflow:
            indexes.append(k.runs_by_workflow(workflow))
        if status:
            indexes.append(k.runs_by_status(status.value))
        if workflow and status:
            ids = self.r.zinter(indexes[1:], aggregate="MAX", withscores=True)
            found = [i for i, _ in sorted(ids, key=lambda x: -x[1])][offset:offset + limit]
        else:
            found = self.r.zrevrange(indexes[-1], offset, offset + limit - 1)
        if not found:
            return []
        p = self.r.pipeline(transaction=False)
        for rid in found:
            p.exists(k.run(rid))
        alive = p.execute()
        gone = [rid for rid, ok in zip(found, alive, strict=True) if not ok]
        if gone:
            p = self.r.pipeline(transaction=False)
            for index in indexes:
                p.zrem(index, *gone)
            p.execute()
        return [rid for rid, ok in zip(found, alive, strict=True) if ok]

    # --- step runs -------------------------------------------------------------------------

    def transition_step(self, run_id: str, step_id: str, status: StepStatus,
                        output: Any = None, has_output: bool = False, workflow: str = "",
                        **patch: Any) -> bool:
        """Move a step run to ``status`` if allowed; store ``output`` when ``has_output``.

        With ``workflow``, a final status also counts in the step metrics (totals by
        status, and the duration histogram for succeeded and failed step runs).

        Returns:
            True if it moved; False if the transition table refused it.
        """
        k = self.keys
        res = self._step_tx(
            keys=[k.steps(run_id), k.events(run_id), k.outputs(run_id), k.metrics()],
            args=[step_id, status.value, ",".join(s.value for s in step_sources(status)),
                  json.dumps(patch), json.dumps(output) if has_output else "", time.time(),
                  EVENTS_MAXLEN, workflow, _BUCKETS_ARG],
        )
        return int(res[0]) == 1

    def mark_queued(self, run_id: str, step_ids: Iterable[str]) -> None:
        """Record that these steps' tasks were published (skips steps already past it)."""
        now = time.time()
        p = self.r.pipeline(transaction=False)
        k = self.keys
        sources = ",".join(s.value for s in step_sources(StepStatus.QUEUED))
        patch = json.dumps({"queued_at": now})
        for s in step_ids:
            self._step_tx(keys=[k.steps(run_id), k.events(run_id), k.outputs(run_id),
                                k.metrics()],
                          args=[s, "queued", sources, patch, "", now, EVENTS_MAXLEN, "", ""],
                          client=p)
        p.execute()

    def step_runs(self, run_id: str, step_ids: Sequence[str] | None = None) -> dict[str, StepRun]:
        """Step records (``pending`` for steps with none yet)."""
        key = self.keys.steps(run_id)
        if step_ids is None:
            raw = self.r.hgetall(key)
            return {s: StepRun.from_json(s, v) for s, v in raw.items()}
        if not step_ids:
            return {}
        vals = self.r.hmget(key, list(step_ids))
        return {s: StepRun.from_json(s, v) for s, v in zip(step_ids, vals, strict=True)}

    def outputs(self, run_id: str, step_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Stored outputs by step id (steps without an output are absent)."""
        key = self.keys.outputs(run_id)
        if step_ids is None:
            return {s: json.loads(v) for s, v in self.r.hgetall(key).items()}
        if not step_ids:
            return {}
        vals = self.r.hmget(key, list(step_ids))
        return {s: json.loads(v) for s, v in zip(step_ids, vals, strict=True) if v is not None}

    def begin_step(self, run_id: str, step_id: str, parents: Sequence[str],
                   ancestors: Sequence[str], reads: Sequence[str], fast: bool,
                   running_patch: dict[str, Any]
                   ) -> tuple[RunRecord, dict[str, StepRun], dict[str, Any], bool]:
        """One round trip for what a step needs, and on the fast path its start.

        Args:
            parents: the step's parents.
            ancestors: other steps whose records the step reads (its condition's).
            reads: steps whose outputs the step reads.
            fast: the step runs iff the run is running and every parent succeeded (no
                condition, no failure handling, a rule such as ``all_success``); then
                the move to ``running`` with ``running_patch`` happens here, atomically.

        Returns:
            (the run, records of parents, ancestors and the step itself, outputs,
            whether the step moved to ``running``).

        Raises:
            RunNotFound: the run is not in the store.
        """
        k = self.keys
        ids = list(dict.fromkeys([*parents, *ancestors, step_id]))
        sources = ",".join(s.value for s in step_sources(StepStatus.RUNNING))
        raw_run, vals, out_vals, began = self._begin(
            keys=[k.run(run_id), k.steps(run_id), k.outputs(run_id), k.events(run_id),
                  k.metrics()],
            args=[step_id, "1" if fast else "0", sources, json.dumps(running_patch),
                  time.time(), EVENTS_MAXLEN, len(parents), len(ids), len(reads), *ids,
                  *reads],
        )
        if not raw_run:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        d = dict(zip(raw_run[::2], raw_run[1::2], strict=True))
        run = RunRecord(
            run_id=run_id, workflow=d["workflow"], version=d["version"],
            status=RunStatus(d["status"]), input=json.loads(d["input"]),
            created_at=float(d["created_at"]), started_at=_f(d.get("started_at")),
            ended_at=_f(d.get("ended_at")), units_remaining=int(d["units_remaining"]),
        )
        recs = {s: StepRun.from_json(s, v) for s, v in zip(ids, vals, strict=True)}
        outs = {s: json.loads(v) for s, v in zip(reads, out_vals or [], strict=False)
                if v is not None}
        return run, recs, outs, bool(began)

    # --- units ---------------------------------------------------------------------------

    def claim_sources(self, run_id: str, units: Sequence[str]) -> list[str]:
        """Claim the units that start with the run; return those claimed now."""
        p = self.r.pipeline(transaction=False)
        for u in units:
            p.sadd(self.keys.units_claimed(run_id), u)
        return [u for u, added in zip(units, p.execute(), strict=True) if added]

    def complete_unit(self, run_id: str, unit: str, successors: Sequence[str]
                      ) -> tuple[int, list[str]]:
        """Mark a unit finished and advance its successors' counters, atomically.

        Idempotent: a second call for the same unit changes nothing.

        Returns:
            (units still to finish, successor units this call claimed for dispatch).
        """
        k = self.keys
        remaining, ready = self._complete(
            keys=[k.counters(run_id), k.units_done(run_id), k.units_claimed(run_id),
                  k.run(run_id)],
            args=[unit, *successors],
        )
        return int(remaining or 0), [str(u) for u in ready]

    def unpublished_ready(self, run_id: str, successors: Sequence[str]) -> list[str]:
        """Successors claimed but never published (a worker died between the two)."""
        k = self.keys
        if not successors:
            return []
        p = self.r.pipeline(transaction=False)
        for u in successors:
            p.sismember(k.units_claimed(run_id), u)
            p.sismember(k.units_published(run_id), u)
        flags = p.execute()
        return [u for i, u in enumerate(successors) if flags[2 * i] and not flags[2 * i + 1]]

    def mark_published(self, run_id: str, units: Sequence[str]) -> None:
        """Record that these units' canvases were published."""
        if units:
            self.r.sadd(self.keys.units_published(run_id), *units)

    # --- events ----------------------------------------------------------------------------

    def events(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
               count: int = 500) -> list[tuple[str, dict[str, str]]]:
        """Events after the id ``after``; with ``block_ms``, wait that long for new ones."""
        key = self.keys.events(run_id)
        res = self.r.xread({key: after}, count=count, block=block_ms)
        if not res:
            return []
        return [(eid, fields) for eid, fields in res[0][1]]
