"""``Idempotency-Key`` for run submission.

The key maps to ``{"fingerprint", "run_id"}`` in Redis (:meth:`Keys.idempotency`), set
with ``SET NX``.  The fingerprint is a SHA-256 of the request's effect: workflow name,
run input (parsed, so whitespace and key order do not matter) and callback URL; ``wait``
is not part of it.  A repeat with the same fingerprint gets the same run; a different
fingerprint is a conflict (409).

The first request claims the key with a short TTL (:data:`PENDING_TTL_S`) and extends it
to the idempotency window once the run exists, so a process that dies in between does
not block the key for the whole window.  A submission refused for bad input releases
the key, so the corrected request may reuse it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.errors import ApiError, IdempotencyConflict
from orchestrator.store import AsyncRunReader, Keys

PENDING_TTL_S = 30
MAX_KEY_CHARS = 255

def fingerprint(workflow: str, run_input: Any, callback_url: str | None) -> str:
    """SHA-256 hex of what a submission does (canonical JSON)."""
    text = json.dumps({"workflow": workflow, "input": run_input, "callback_url": callback_url},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def redis_key(keys: Keys, idempotency_key: str, tenant: str = DEFAULT_TENANT) -> str:
    """The Redis key of a client's idempotency key (hashed: any header value is safe)."""
    return keys.idempotency_of(idempotency_key, tenant)


@dataclass(frozen=True)
class Claim:
    """The run an idempotency key stands for; ``fresh`` when this request must create it."""

    run_id: str
    fresh: bool


async def claim(reader: AsyncRunReader, idempotency_key: str, fp: str,
                new_run_id: str, tenant: str = DEFAULT_TENANT) -> Claim:
    """Claim ``idempotency_key`` of ``tenant`` for a new run, or find the run it already
    stands for.  Keys are scoped to the tenant: another tenant's equal key is another
    key, so a conflict can only name a run of the caller's own tenant.

    Raises:
        IdempotencyConflict: the key was used for a request with another fingerprint.
        ApiError: 409 ``idempotency_in_progress`` if the key keeps changing under us.
    """
    for _ in range(3):
        stored = await reader.idempotency_set(idempotency_key, fp, new_run_id, PENDING_TTL_S,
                                              tenant)
        if stored is None:
            return Claim(new_run_id, True)
        if not stored:  # expired between SET and GET: claim again
            continue
        if stored.get("fingerprint") != fp:
            raise IdempotencyConflict(
                f"Idempotency-Key {idempotency_key!r} was used for a different request "
                f"(another workflow, input or callback_url), which started run "
                f"{stored.get('run_id')!r}")
        return Claim(str(stored["run_id"]), False)
    raise in_progress(idempotency_key)


def in_progress(idempotency_key: str) -> ApiError:
    """The 409 for a key whose first request has not created its run yet."""
    return ApiError(409, "idempotency_in_progress",
                    f"a request with Idempotency-Key {idempotency_key!r} is still in flight",
                    "Retry the same request after a moment (see Retry-After).")


async def confirm(reader: AsyncRunReader, idempotency_key: str, window_s: int,
                  tenant: str = DEFAULT_TENANT) -> None:
    """The run exists: keep the key for the whole idempotency window."""
    await reader.idempotency_keep(idempotency_key, window_s, tenant)


async def release(reader: AsyncRunReader, idempotency_key: str, run_id: str,
                  tenant: str = DEFAULT_TENANT) -> None:
    """Drop the key if it still stands for ``run_id`` (its submission was refused)."""
    await reader.idempotency_release(idempotency_key, run_id, tenant)
