"""The web UI's pure parts: graph layout, critical path, percentiles, session cookies."""

from __future__ import annotations

import random

from orchestrator.dev import shapes
from orchestrator.settings import ApiToken
from orchestrator.web.layout import NODE_H, NODE_W, layered
from orchestrator.web.session import Sessions, csrf_ok
from orchestrator.web.timeline import Span, critical_path, percentile


def test_layout_puts_every_step_after_its_parents_without_overlap() -> None:
    deps = shapes.layered(random.Random(3), 200, 10, 3)
    lay = layered(deps)
    assert set(lay.nodes) == set(deps)
    for s, ps in deps.items():
        for p in ps:
            assert lay.nodes[p][0] + NODE_W <= lay.nodes[s][0]
    boxes = sorted(lay.nodes.values())
    assert len(set(boxes)) == len(boxes)
    for x, y in boxes:
        assert x >= 0 and y >= 0
        assert x + NODE_W <= lay.width and y + NODE_H <= lay.height
    assert layered(deps) == lay  # the same graph, the same drawing


def test_layout_orders_a_layer_to_avoid_crossings() -> None:
    # b2 hangs under a1, b1 under a2: sweeping swaps them so no edges cross
    lay = layered({"a1": [], "a2": [], "b2": ["a1"], "b1": ["a2"]})
    assert lay.nodes["b2"][1] < lay.nodes["b1"][1]


def test_critical_path_follows_the_parent_that_ended_last() -> None:
    parents = {"a": [], "b": [], "c": ["a", "b"], "d": ["b"]}
    spans = {"a": Span(0, 1, 5), "b": Span(0, 1, 2), "c": Span(5, 6, 7), "d": Span(2, 3, 4)}
    assert critical_path(parents, spans, now=10) == ["a", "c"]
    # a step still running ends "now"
    running = {**spans, "d": Span(2, 3, None)}
    assert critical_path(parents, running, now=10) == ["b", "d"]
    assert critical_path(parents, {}, now=10) == []


def test_percentile_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def _sessions(secret: bytes = b"k" * 32) -> Sessions:
    tokens = [ApiToken(token="r" * 20, scopes=frozenset({"runs:read"}), name="ro")]
    return Sessions(secret, tokens, lifetime_s=60)


def test_a_session_names_its_token_without_holding_it() -> None:
    sessions = _sessions()
    cookie = sessions.sign_in("r" * 20)
    assert cookie is not None and "r" * 20 not in cookie
    viewer = sessions.read(cookie)
    assert viewer is not None and viewer.name == "ro"
    assert viewer.can("runs:read") and not viewer.can("runs:write")
    assert csrf_ok(viewer, viewer.csrf) and not csrf_ok(viewer, "x") and not csrf_ok(viewer, None)
    assert sessions.sign_in("x" * 20) is None


def test_forged_or_foreign_cookies_are_refused() -> None:
    cookie = _sessions().sign_in("r" * 20)
    assert cookie is not None
    body, _, sig = cookie.partition(".")
    assert _sessions().read(f"{body}x.{sig}") is None
    assert _sessions().read("garbage") is None
    assert _sessions(b"o" * 32).read(cookie) is None  # another secret
    empty = Sessions(b"k" * 32, [], lifetime_s=60)  # the token was removed
    assert empty.read(cookie) is None
    expired = Sessions(b"k" * 32, [ApiToken(token="r" * 20, scopes=frozenset())], -1)
    assert expired.read(expired.sign_in("r" * 20)) is None


def test_the_sign_in_form_nonce() -> None:
    sessions = _sessions()
    cookie, field = sessions.login_nonce()
    assert sessions.login_ok(cookie, field)
    assert not sessions.login_ok(cookie, field + "x")
    assert not sessions.login_ok(None, field)
    other, _ = sessions.login_nonce()
    assert not sessions.login_ok(other, field)
