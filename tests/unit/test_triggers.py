"""Event triggers without a broker: declaration (YAML, DSL), validation, the decision an
event gets, run ids, webhook signatures and stream entries."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest

from orchestrator.api import signatures
from orchestrator.core import triggers
from orchestrator.core.dsl import Workflow
from orchestrator.core.triggers import (
    Event,
    StreamSource,
    TriggerDef,
    WebhookScheme,
    WebhookSource,
    run_id,
)
from orchestrator.core.yamlio import parse_triggers, parse_yaml
from orchestrator.errors import ApiError, EventInvalid, TriggerInvalid
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.consumer import to_event
from orchestrator.runtime.triggers import TriggerTable
from orchestrator.settings import Settings
from orchestrator.store.triggers import Entry

WORKFLOW_YAML = """
name: wf_with_triggers
steps:
  - id: a
    function: test.anything
"""

TRIGGERS_YAML = """
triggers:
  - name: paid
    source: {kind: webhook, scheme: github}
    filter: event.action == "paid"
    input: '{"order_id": event.order.id}'
    event_id: event.order.id
  - name: from_stream
    source: {kind: stream, stream: "shop:events"}
"""


def test_triggers_beside_a_workflow_do_not_change_its_version() -> None:
    bare = parse_yaml(WORKFLOW_YAML)
    with_triggers = parse_yaml(WORKFLOW_YAML + TRIGGERS_YAML)
    assert bare.version == with_triggers.version
    paid, stream = parse_triggers(WORKFLOW_YAML + TRIGGERS_YAML, "x.yaml")
    assert paid.workflow == stream.workflow == "wf_with_triggers"
    assert isinstance(paid.source, WebhookSource)
    assert paid.source.scheme is WebhookScheme.GITHUB
    assert isinstance(stream.source, StreamSource) and stream.source.stream == "shop:events"
    assert parse_triggers(WORKFLOW_YAML) == ()


def test_unknown_source_and_bad_fields_are_reported_at_load() -> None:
    text = WORKFLOW_YAML + """
triggers:
  - name: t1
    source: {kind: kafka, topic: x}
"""
    with pytest.raises(TriggerInvalid) as info:
        parse_triggers(text, "x.yaml")
    assert info.value.codes() == {"unknown_source"}
    assert "webhook" in str(info.value) and "stream" in str(info.value)
    with pytest.raises(TriggerInvalid) as info:
        parse_triggers(WORKFLOW_YAML + "triggers:\n  - {name: t2, source: {kind: stream}}\n")
    assert info.value.codes() == {"bad_field"}


def test_bad_cel_is_reported_with_every_problem() -> None:
    td = TriggerDef(name="t", workflow="w", source=StreamSource(stream="s"),
                    filter="event.x ==", input="os.system(1)", event_id="steps.a")
    with pytest.raises(TriggerInvalid) as info:
        triggers.check(td)
    assert info.value.codes() == {"bad_expression"}
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "filter" in text and "syntax error" in text
    assert "unknown variable 'os'" in text and "unknown variable 'steps'" in text


def test_the_dsl_declares_the_same_trigger() -> None:
    wf = Workflow("wf_with_triggers")
    td = wf.trigger("paid", WebhookSource(scheme=WebhookScheme.GITHUB),
                    filter='event.action == "paid"', input='{"order_id": event.order.id}',
                    event_id="event.order.id")
    assert wf.triggers == [td]
    assert td == parse_triggers(WORKFLOW_YAML + TRIGGERS_YAML)[0]
    with pytest.raises(TriggerInvalid):
        wf.trigger("bad", StreamSource(stream="s"), filter="event.")


def _trigger(**over: object) -> triggers.Trigger:
    fields: dict[str, object] = {"name": "t", "workflow": "w",
                                 "source": StreamSource(stream="s"), **over}
    return triggers.check(TriggerDef.model_validate(fields))


def test_decide_filters_maps_and_names_the_run() -> None:
    trig = _trigger(filter='event.type == "created"', input='{"id": event.data.id}',
                    event_id="event.data.id")
    created = Event({"type": "created", "data": {"id": "o-1"}}, {}, "m-1")
    d = trig.decide(created)
    assert (d.event_id, d.run_input, d.filtered) == ("o-1", {"id": "o-1"}, False)
    assert d.run_id == run_id("t", "o-1") == trig.decide(created).run_id
    assert d.run_id is not None and d.run_id.startswith("evt-t-")
    assert run_id("t", "o-2") != d.run_id and run_id("u", "o-1") != d.run_id
    assert trig.decide(Event({"type": "other", "data": {"id": "x"}}, {}, "m")).filtered
    with pytest.raises(EventInvalid, match="no such member"):
        trig.decide(Event({"type": "created", "data": {}}, {}, "m"))
    with pytest.raises(EventInvalid, match="not a bool"):
        _trigger(filter="event.type").decide(created)
    with pytest.raises(EventInvalid, match="not a string"):
        _trigger(event_id="event.data").decide(created)
    # defaults: every event, its body as the input, the transport's id
    plain = _trigger().decide(created)
    assert (plain.event_id, plain.run_input) == ("m-1", created.body)


def test_a_webhook_trigger_needs_its_secret_and_workflow() -> None:
    cat = Catalog()
    cat.add(parse_yaml(WORKFLOW_YAML), "x.yaml")
    for td in parse_triggers(WORKFLOW_YAML + TRIGGERS_YAML):
        cat.add_trigger(td, "x.yaml")
    with pytest.raises(TriggerInvalid) as info:
        TriggerTable.build(cat, Settings())
    assert info.value.codes() == {"missing_secret"}
    assert "ORCH_TRIGGER_SECRETS" in str(info.value)
    table = TriggerTable.build(cat, Settings(trigger_secrets={"paid": "s3cret"}))
    assert set(table.triggers) == {"paid", "from_stream"}
    assert [t.name for t, _ in table.streams()] == ["from_stream"]
    assert set(TriggerTable.build(cat, Settings(), webhooks=False).triggers) == {
        "paid", "from_stream"}
    cat.add_trigger(TriggerDef(name="orphan", workflow="nope",
                               source=StreamSource(stream="s")), "y")
    with pytest.raises(TriggerInvalid) as info:
        TriggerTable.build(cat, Settings(), webhooks=False)
    assert info.value.codes() == {"unknown_workflow"}


STD = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _headers(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


def test_standard_webhook_signatures() -> None:
    src = WebhookSource(scheme=WebhookScheme.STANDARD, tolerance_s=60)
    body = b'{"a": 1}'
    now = time.time()
    good = _headers(signatures.sign_standard(STD, "msg-1", int(now), body))
    assert signatures.verify(src, STD, body, good, now) == "msg-1"
    refused = {
        "tampered": (b'{"a": 2}', good),
        "other secret": (body, _headers(signatures.sign_standard(
            "whsec_" + base64.b64encode(b"k" * 24).decode(), "msg-1", int(now), body))),
        "stale": (body, _headers(signatures.sign_standard(STD, "m", int(now) - 61, body))),
        "unsigned": (body, {}),
        "garbled": (body, {**good, "webhook-signature": "nonsense"}),
        "bad timestamp": (body, {**good, "webhook-timestamp": "nan"}),
    }
    for what, (b, h) in refused.items():
        with pytest.raises(ApiError) as info:
            signatures.verify(src, STD, b, h, now)
        assert info.value.status_code == 401, what
    assert signatures.check_secret(WebhookScheme.STANDARD, STD) is None
    assert signatures.check_secret(WebhookScheme.STANDARD, "whsec_***") is not None


def test_github_webhook_signatures() -> None:
    src = WebhookSource(scheme=WebhookScheme.GITHUB)
    body = b'{"after": "abc"}'
    good = _headers(signatures.sign_github("s3cret", "d-1", body))
    assert signatures.verify(src, "s3cret", body, good, time.time()) == "d-1"
    for b, h in ((body + b" ", good), (body, {**good, "x-hub-signature-256": "sha256=00"}),
                 (body, {k: v for k, v in good.items() if k != "x-github-delivery"})):
        with pytest.raises(ApiError):
            signatures.verify(src, "s3cret", b, h, time.time())


def test_stream_entries_become_events_or_poison() -> None:
    ev = to_event(Entry("1-0", {b"event": json.dumps({"x": 1}).encode(), b"id": b"e-1",
                                b"kind": b"k"}))
    assert (ev.body, ev.message_id, ev.headers) == ({"x": 1}, "e-1", {"id": "e-1",
                                                                       "kind": "k"})
    assert to_event(Entry("2-0", {b"event": b"[]"})).message_id == "2-0"
    for fields in ({b"other": b"x"}, {b"event": b"{nope"}, {b"event": b"\xff"}):
        with pytest.raises(EventInvalid):
            to_event(Entry("3-0", fields))
