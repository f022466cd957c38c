"""``python -m orchestrator.api``: serve the HTTP API (see :func:`server.main`)."""

from orchestrator.api.server import main

if __name__ == "__main__":
    main()
