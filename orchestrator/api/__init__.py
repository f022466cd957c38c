"""The HTTP API: FastAPI app factory :func:`create_api`, served by uvicorn.

Start it with ``python -m orchestrator.api``.  Its wire models live in
:mod:`orchestrator.api.models`, shared with the client (:mod:`orchestrator.client`).
"""

from orchestrator.api.app import create_api

__all__ = ["create_api"]
