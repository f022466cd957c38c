"""The HTTP API: the FastAPI app factory (:func:`orchestrator.api.app.create_api`), served
by uvicorn (``python -m orchestrator.api``).

Its wire models (:mod:`orchestrator.api.models`) are shared with the Python client
(:mod:`orchestrator.client`); this package's ``__init__`` imports nothing, so the client
does not load the server.
"""
