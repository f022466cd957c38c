"""Redis stopped, refusing the password, or never answering: every CLI command that needs
Redis and a sample of API routes fail with one line naming the URL (password masked) and
the fix, no traceback, a distinct exit code (the API: a 503 with Retry-After), within 2 s.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.cli.main import main
from orchestrator.runtime.catalog import Catalog, discover
from tests.support.api import RW_TOKEN, api_settings, bearer
from tests.support.broken_redis import password_server, silent_server, stopped_url
from tests.support.workers import TEST_PACKAGES

pytestmark = pytest.mark.redis

BOUND_S = 4.0
"""Every command and request must fail within this long (a bounded-time behaviour): the
default ``redis_timeout_s`` (1 s) once, plus room for a slow machine's own work, and well
below what a retry loop or a second timeout would take."""

# every command that needs Redis (`worker` rides out an outage by design; `up` and `demo`
# start their own Redis)
COMMANDS = [
    ["status", "0123456789abcdef"],
    ["runs"],
    ["runs", "--workflow", "customer_order", "--status", "failed"],
    ["cancel", "0123456789abcdef"],
    ["run", "customer_order", "--input", "{}"],
    ["run", "customer_order", "--no-preflight", "--no-follow", "--input", "{}"],
    ["queues"],
    ["queues", "--json", "-q", "default"],
]

# (kind, exit code, words of the message)
UNREACHABLE = ("unreachable", 3, "is unreachable")
AUTH = ("auth", 4, "refused the password")
TIMEOUT = ("timeout", 5, "did not answer within")


@pytest.fixture(scope="module")
def broken(redis_binary: str) -> Iterator[dict[str, tuple[str, tuple[str, int, str]]]]:
    """Each broken Redis: name -> (URL, expected kind)."""
    with password_server(redis_binary) as pw_url, silent_server() as silent_url:
        yield {
            "stopped": (stopped_url(), UNREACHABLE),
            "wrong_password": (pw_url.replace("redis://", "redis://:wrong-one@"), AUTH),
            "no_password": (pw_url, AUTH),
            "never_answers": (silent_url, TIMEOUT),
        }


def _masked(url: str) -> str:
    return url.replace(":not-shown@", ":***@").replace(":wrong-one@", ":***@")


@pytest.mark.parametrize("server", ["stopped", "wrong_password", "no_password",
                                    "never_answers"])
def test_every_cli_command_explains_a_broken_redis(
        server: str, broken: dict[str, tuple[str, tuple[str, int, str]]],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url, (_kind, code, words) = broken[server]
    monkeypatch.setenv("ORCH_REDIS_URL", url)
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", "workflows")
    for argv in COMMANDS:
        start = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        took = time.monotonic() - start
        out = capsys.readouterr()
        where = f"orchestrator {' '.join(argv)} ({server})"
        assert exit_info.value.code == code, f"{where}: {out.err}"
        assert took < BOUND_S, f"{where} took {took:.2f} s"
        lines = out.err.splitlines()
        assert len(lines) == 1, f"{where}: {out.err}"
        line = lines[0]
        assert "Traceback" not in out.err and "Traceback" not in out.out, where
        assert line.startswith(f"error: Redis at {_masked(url)} {words}"), line
        assert "Fix: " in line, line
        for secret in ("not-shown", "wrong-one"):
            assert secret not in out.err, where


def test_the_exit_codes_are_documented() -> None:
    doc = importlib.import_module("orchestrator.cli.main").__doc__ or ""
    doc = " ".join(doc.split())
    for words in ("3 Redis is unreachable", "4 Redis refused the password",
                  "5 Redis did not answer in time", "1 an invalid workflow",
                  "2 any other error", "6 the run store has a schema version"):
        assert words in doc


# --- the API ---------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/runs", None),
    ("GET", "/v1/runs/0123456789abcdef", None),
    ("POST", "/v1/runs/0123456789abcdef/cancel", None),
    ("POST", "/v1/workflows/customer_order/runs",
     {"order_id": "o-1", "sku": "SKU-1", "qty": 1, "customer_email": "a@example.com"}),
    ("GET", "/metrics", None),
    ("GET", "/readyz", None),
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return discover(TEST_PACKAGES)


@pytest.mark.parametrize("server", ["stopped", "wrong_password", "never_answers"])
def test_api_routes_answer_503_with_retry_after(
        server: str, broken: dict[str, tuple[str, tuple[str, int, str]]],
        catalog: Catalog) -> None:
    url, (kind, _, words) = broken[server]
    app = create_api(api_settings(url), catalog=catalog)
    with ServerThread(app) as api, httpx.Client(base_url=api.url, headers=bearer(RW_TOKEN),
                                                timeout=10) as http:
        for method, path, body in ROUTES:
            start = time.monotonic()
            resp = http.request(method, path, json=body)
            took = time.monotonic() - start
            where = f"{method} {path} ({server})"
            assert resp.status_code == 503, f"{where}: {resp.text}"
            assert took < BOUND_S, f"{where} took {took:.2f} s"
            assert resp.headers["Retry-After"] == "1", where
            err = resp.json()["error"]
            assert err["code"] == "store_unavailable", where
            expected = {"unreachable": "redis_unreachable", "auth": "redis_auth_failed",
                        "timeout": "redis_timeout"}[kind]
            assert err["details"] == [{"type": expected}], where
            assert err["message"].startswith(f"Redis at {_masked(url)} "), err
            assert "\n" not in err["message"] and "Traceback" not in resp.text, where
            if path != "/readyz":  # the probe names its own one-second PING
                assert words.split(" within")[0] in err["message"], err
            assert err["fix"], where
            for secret in ("not-shown", "wrong-one"):
                assert secret not in resp.text, where


# --- and on a healthy stack, the fail-fast clients still do their work -------------------


def test_the_cli_works_on_a_healthy_stack(stack: dict[str, Any],
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_REDIS_URL", stack["url"])
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", ",".join(TEST_PACKAGES))

    def cli(*argv: str) -> tuple[int, str]:
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        assert "Traceback" not in out.err, out.err
        return code, out.out

    # follows the run live (blocking reads shorter than the CLI's Redis timeout)
    code, out = cli("run", "n_shape", "--timeout", "60")
    assert code == 0, out
    run_id = out.split()[1]
    assert "run succeeded" in out
    code, out = cli("status", run_id)
    assert code == 0 and "succeeded" in out
    code, out = cli("runs", "--workflow", "n_shape")
    assert code == 0 and run_id in out
    code, out = cli("queues", "--json")
    assert code == 0
    default = next(q for q in json.loads(out) if q["name"] == "default")
    assert len(default["consumers"]) == 2
