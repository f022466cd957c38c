"""The API's per-token slots of streams and waits, and the fair-sharing settings
(``orchestrator/api/quotas.py``; with Redis and a server: ``test_api_fairness.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api.quotas import Quotas, bearer_secret, token_key
from orchestrator.errors import SettingsInvalid, Throttled
from orchestrator.settings import Settings, load


def _quotas(**over: Any) -> Quotas:
    values: dict[str, Any] = {"api_max_streams_per_token": 2,
                                 "api_max_waits_per_token": 1,
                                 "api_stream_connections": 4}
    values.update(over)
    return Quotas(Settings(**values))


def test_a_token_holds_at_most_its_limit_and_others_are_not_affected() -> None:
    q = _quotas()
    a1, a2 = q.hold("stream", "a"), q.hold("stream", "a")
    with pytest.raises(Throttled) as exc:
        q.hold("stream", "a")
    assert (exc.value.status_code, exc.value.code) == (429, "too_many_streams")
    assert exc.value.retry_after_s >= 1
    assert "ORCH_API_MAX_STREAMS_PER_TOKEN" in exc.value.fix
    b = q.hold("stream", "b")  # another token is not refused
    w = q.hold("wait", "a")  # waits are counted apart
    with pytest.raises(Throttled) as exc:
        q.hold("wait", "a")
    assert exc.value.code == "too_many_waits"
    assert (q.held("stream", "a"), q.held("wait", "a"), q.total) == (2, 1, 4)
    for slot in (a1, a2, b, w):
        slot.release()
    assert q.total == 0 and q.held("stream", "a") == 0


def test_release_is_idempotent() -> None:
    q = _quotas()
    slot = q.hold("stream", "a")
    slot.release()
    slot.release()
    assert q.total == 0
    q.hold("stream", "a")
    q.hold("stream", "a")  # the limit is whole again
    assert q.held("stream", "a") == 2


def test_the_process_capacity_is_a_503_server_busy() -> None:
    q = _quotas(api_max_streams_per_token=10, api_stream_connections=3)
    for key in ("a", "b", "c"):
        q.hold("stream", key)
    with pytest.raises(Throttled) as exc:
        q.hold("wait", "d")
    assert (exc.value.status_code, exc.value.code) == (503, "server_busy")
    assert "ORCH_API_STREAM_CONNECTIONS" in exc.value.fix


def test_token_key_is_a_digest_and_bearer_is_parsed() -> None:
    secret = "s3cret-token-of-24-chars"
    key = token_key(secret)
    assert len(key) == 32 and secret not in key and key == token_key(secret)
    assert bearer_secret([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_secret([(b"authorization", b"Basic abc")]) is None
    assert bearer_secret([(b"authorization", b"Bearer ")]) is None
    assert bearer_secret([]) is None


def test_rate_setting_is_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _quotas(api_rate_per_token="5/minute").rate is not None
    assert _quotas(api_rate_per_token="").rate is None
    for bad in ("fast", "0/second", "5/fortnight"):
        monkeypatch.setenv("ORCH_API_RATE_PER_TOKEN", bad)
        with pytest.raises(SettingsInvalid, match="N/second"):
            load()


def test_check_free_takes_nothing() -> None:
    q = _quotas()
    q.check_free("stream", "a")
    q.hold("stream", "a")
    q.hold("stream", "a")
    with pytest.raises(Throttled):
        q.check_free("stream", "a")
    assert q.held("stream", "a") == 2 and q.total == 2


def test_only_a_runs_event_stream_is_refused_early() -> None:
    from orchestrator.api.quotas import _asks_stream

    def asks(method: str, path: str) -> bool:
        return _asks_stream({"method": method, "path": path})

    assert asks("GET", "/v1/runs/r1/events")
    assert not asks("POST", "/v1/runs/r1/events")
    assert not asks("GET", "/v1/runs/r1")
    assert not asks("GET", "/ui/data/runs/r1/events")
    assert not asks("GET", "/v1/runs/r1/steps/events")
