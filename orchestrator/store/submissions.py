"""Broker submissions that started no run: kept, so that the sender's mistake is visible
where people look (``orchestrator rejected``, ``GET /v1/submissions/rejected``), not only
in one worker's log."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.store.keys import Keys

KEEP = 1000
"""How many rejected submissions are kept (the newest)."""


class RejectedSubmission(BaseModel):
    """One ``orchestrator.submit`` message that started no run, and why."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: float
    workflow: str | None = None
    run_id: str | None = None
    code: str
    """The error's kind: ``workflow_not_found``, ``input_invalid``, ``run_id_invalid``…"""
    reason: str
    task_id: str | None = None
    sender: str | None = None
    """The message's ``origin`` header (the sending host, when the client sets it)."""


class Submissions:
    """The capped list of rejected broker submissions."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._r = client
        self.keys = keys

    def reject(self, rec: RejectedSubmission) -> None:
        """Record a rejected submission (the newest :data:`KEEP` are kept)."""
        p = self._r.pipeline(transaction=True)
        p.lpush(self.keys.rejected_submissions(), rec.model_dump_json())
        p.ltrim(self.keys.rejected_submissions(), 0, KEEP - 1)
        p.execute()

    def rejected(self, limit: int = 50) -> list[RejectedSubmission]:
        """The newest rejected submissions, newest first."""
        raw = self._r.lrange(self.keys.rejected_submissions(), 0, max(limit, 1) - 1)
        return [RejectedSubmission.model_validate(json.loads(x)) for x in raw]
