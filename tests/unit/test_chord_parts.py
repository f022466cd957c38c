"""The result backend stores a part of a chord whose body is immutable (every join the
compiler builds) without its value, and reads such a part back without decoding it; any
other part as Celery does."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.exceptions import ChordError

from orchestrator.runtime.celeryconf import celery_config, send_only_backend_url
from orchestrator.settings import Settings


@pytest.fixture
def backend() -> Any:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")  # never connected to
    app = Celery("t", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.result_backend = send_only_backend_url(settings.redis_url)
    return app.backend


def _part(backend: Any, state: str, result: Any) -> bytes:
    """A part as Celery's on_chord_part_return stores it."""
    encoded = backend.encode([1, str(uuid.uuid4()), state,
                              backend.encode_result(result, state)])
    return encoded.encode() if isinstance(encoded, str) else bytes(encoded)


def test_a_success_without_a_value_is_none_without_a_decode(backend: Any) -> None:
    def no_decode(_: Any) -> Any:
        raise AssertionError("decoded")

    assert backend._unpack_chord_result(_part(backend, states.SUCCESS, None), no_decode) is None


def test_every_other_part_is_decoded_as_celery_does(backend: Any) -> None:
    assert backend._unpack_chord_result(_part(backend, states.SUCCESS, {"a": 1}),
                                        backend.decode) == {"a": 1}
    assert backend._unpack_chord_result(_part(backend, states.SUCCESS, "null]"),
                                        backend.decode) == "null]"
    failed = _part(backend, states.FAILURE, ValueError("boom"))
    with pytest.raises(ChordError, match="boom"):
        backend._unpack_chord_result(failed, backend.decode)


@pytest.mark.parametrize(("state", "body", "stored"), [
    (states.SUCCESS, {"task": "join", "immutable": True}, None),  # the body takes no results
    (states.SUCCESS, {"task": "join", "immutable": False}, {"v": 1}),
    (states.SUCCESS, None, {"v": 1}),
    (states.FAILURE, {"task": "join", "immutable": True}, {"v": 1}),
])
def test_a_part_of_an_immutable_bodys_chord_is_stored_without_its_value(
        backend: Any, monkeypatch: pytest.MonkeyPatch, state: str, body: Any,
        stored: Any) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(RedisBackend, "on_chord_part_return",
                        lambda self, request, st, result, *a, **k: seen.append(result))
    request = SimpleNamespace(id="t", group="g", group_index=0, chord=body)
    backend.on_chord_part_return(request, state, {"v": 1})
    assert seen == [stored]
