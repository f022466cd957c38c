"""The task ids a templated message is stamped with (``messages.uuid4_strings``): what
``str(uuid.uuid4())`` gives Celery, many at a time."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.runtime.messages import uuid4_strings


@pytest.mark.parametrize("n", [0, 1, 2, 32, 500])
def test_ids_are_distinct_version_4_uuids_in_celery_s_form(n: int) -> None:
    ids = uuid4_strings(n)
    assert len(ids) == n
    assert len(set(ids)) == n
    for text in ids:
        u = uuid.UUID(text)
        assert u.version == 4
        assert u.variant == uuid.RFC_4122
        assert str(u) == text  # lower-case hex, 8-4-4-4-12, as Celery's own ids


def test_every_random_bit_varies() -> None:
    # the 122 random bits are random: over many ids each takes both values, while the
    # version and variant bits never do
    seen_one, seen_zero = 0, 0
    for text in uuid4_strings(400):
        v = uuid.UUID(text).int
        seen_one |= v
        seen_zero |= ~v & ((1 << 128) - 1)
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant's two bits
    assert seen_one & seen_zero == ((1 << 128) - 1) & ~fixed
