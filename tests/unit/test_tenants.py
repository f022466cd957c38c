"""Tenants in the pure parts: who sees what, the scoped key names, and how much of a run
each scope shows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.api.access import detail_for, tenant_filter
from orchestrator.api.models import RunOut, StepError, StepRunOut
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.tenants import DEFAULT_TENANT, sees
from orchestrator.settings import ApiToken
from orchestrator.store.keys import Keys


def test_who_sees_what() -> None:
    assert sees("a", "a") and not sees("a", "b") and not sees("a", None)
    assert sees(DEFAULT_TENANT, None) and sees(None, "b")  # None: every tenant (admin)
    assert tenant_filter(frozenset({"runs:read", "admin"}), "a") is None
    assert tenant_filter(frozenset({"runs:read"}), "a") == "a"


def test_a_token_has_a_usable_tenant_default_default() -> None:
    token = ApiToken(token="x" * 16, scopes=frozenset({"runs:read"}))
    assert token.tenant == DEFAULT_TENANT
    for bad in ("", "a:b", "a b", "-x", "x" * 65):
        with pytest.raises(ValidationError):
            ApiToken(token="x" * 16, scopes=frozenset(), tenant=bad)


def test_no_key_of_one_tenant_names_a_key_of_another() -> None:
    k = Keys("orch")
    # the default tenant's names are those of before tenants existed
    assert k.idempotency_of("key-1") == k.idempotency_of("key-1", DEFAULT_TENANT)
    assert k.wait_event("pay:1") == "orch:wait:event:pay:1"
    names = {k.idempotency_of("key-1", t) for t in (DEFAULT_TENANT, "a", "b")}
    assert len(names) == 3
    # a default key cannot be spelt to land in another tenant's namespace
    assert not k.idempotency_of("tenant:x").startswith("orch:idem:tenant:")
    assert k.wait_event("pay:1", "a") != k.wait_event("tenant:a:event:pay:1")
    assert k.wait_waiters("pay:1", "a") != k.wait_waiters("pay:1", "b")


def _run() -> RunOut:
    err = StepError(type="RuntimeError", message="bad", traceback="Traceback ...")
    return RunOut(run_id="r1", workflow="w", version="v", status=RunStatus.FAILED,
                  input={"card": "4111"}, created_at=1.0, error="step 'a' failed: bad",
                  outputs={"b": {"secret": 1}},
                  steps=[StepRunOut(step_id="a", status=StepStatus.FAILED, attempt=1,
                                    error=err, reason="why"),
                         StepRunOut(step_id="b", status=StepStatus.SUCCEEDED, attempt=1)])


def test_each_scope_sees_its_share_of_a_run() -> None:
    run = _run()
    assert detail_for(frozenset({"runs:read", "runs:tracebacks"})) == "debug"
    assert detail_for(frozenset({"runs:read", "runs:write"})) == "full"
    assert detail_for(frozenset({"runs:write"})) == "status"
    assert run.shaped("debug") == run
    full = run.shaped("full")
    assert full.steps[0].error is not None and full.steps[0].error.traceback is None
    assert full.steps[0].error.message == "bad" and full.outputs == run.outputs
    bare = run.shaped("status").model_dump(mode="json")
    assert bare["input"] is None and bare["outputs"] == {} and bare["error"] is None
    assert [(s["step_id"], s["status"], s["error"], s["reason"]) for s in bare["steps"]] == [
        ("a", "failed", None, None), ("b", "succeeded", None, None)]
    assert "4111" not in str(bare) and "Traceback" not in str(bare)
