"""URLs in logs lose their query strings (a query may carry a token): the API's access
log (uvicorn's, through the filter the server installs) and the callback delivery's
log lines."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI

from orchestrator.api.server import config
from orchestrator.callbacks.delivery import redact


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_access_log_drops_query_strings() -> None:
    config(FastAPI(), "127.0.0.1", 0)  # installs the filter, as the server does
    access = logging.getLogger("uvicorn.access")  # uvicorn's: it does not propagate
    kept = _Kept()
    access.addHandler(kept)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.9:5123", "POST",
                    "/v1/runs?callback_url=https://x.example/cb%3Ftoken%3Dsecret",
                    "1.1", 201)
        access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.9:5123", "GET", "/v1/runs/abc",
                    "1.1", 200)
    finally:
        access.removeHandler(kept)
        access.setLevel(level)
    lines = kept.lines
    assert lines == ['10.0.0.9:5123 - "POST /v1/runs?… HTTP/1.1" 201',
                     '10.0.0.9:5123 - "GET /v1/runs/abc HTTP/1.1" 200'], lines
    assert not any("secret" in line for line in lines)


@pytest.mark.parametrize(("url", "logged"), [
    ("https://hooks.example/cb?token=s3cret&x=1", "https://hooks.example/cb?…"),
    ("https://hooks.example/cb", "https://hooks.example/cb"),
    ("https://user:pw@hooks.example:8443/a/b?t=1", "https://…@hooks.example:8443/a/b?…"),
    ("http://[::1]:9/x", "http://[::1]:9/x"),
])
def test_callback_urls_are_logged_without_their_query(url: str, logged: str) -> None:
    assert redact(url) == logged
