"""docker-compose.yml and the Dockerfile, checked without a container engine.

The compose file must be valid against the Compose Specification's JSON schema (vendored
in tests/data), keep its secrets out of the file, and every command in it (service
commands and health checks) must be a real entry point of ours: each is run here, from
this virtualenv, with ``--help`` or for real against a private Redis.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.runtime.catalog import discover
from orchestrator.settings import Settings
from tests.support.workers import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
VENV_BIN = Path(sys.executable).parent
APP_SERVICES = ("api", "worker", "flower", "triggers", "scheduler")
# What an operator puts in .env; the file must give none of them a value.
SECRETS = {"REDIS_PASSWORD": "test-redis-pw", "API_TOKEN": "test-api-token-0123456789",
           "FLOWER_USER": "ops", "FLOWER_PASSWORD": "test-flower-pw"}


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${V}``, ``${V:-d}``, ``${V:?err}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        missing = have is None or (op is not None and op.startswith(":") and have == "")
        if op in (":?", "?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and missing:
            return arg or ""
        return have or ""

    return _VAR.sub(sub, value)


def raw() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def compose() -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with .env set."""
    doc: dict[str, Any] = interpolate(raw(), SECRETS)
    return doc


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def argv_of(name: str) -> list[str]:
    """The service's process: its entrypoint (or the image's) followed by its command."""
    svc = service(name)
    entrypoint = svc.get("entrypoint") or (
        dockerfile_entrypoint() if svc.get("build") else [])
    command = svc.get("command") or []
    return [*entrypoint, *(shlex.split(command) if isinstance(command, str) else command)]


def dockerfile_entrypoint() -> list[str]:
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert m, "the Dockerfile has no exec-form ENTRYPOINT"
    entry: list[str] = json.loads(m.group(1))
    return entry


def healthcheck_argv(name: str) -> list[str]:
    """The health check as an argv: CMD form as is, CMD-SHELL through sh."""
    test = service(name)["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), test
    return ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest


def ours(program: str) -> str:
    """The venv's executable for ``program``; fails unless it is one of our entry points."""
    path = VENV_BIN / program
    assert path.is_file() and os.access(path, os.X_OK), f"{program!r} is not in {VENV_BIN}"
    return str(path)


def app_env(name: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The service's environment, with the private test Redis and this venv on PATH."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (service(name).get("environment") or {}).items()})
    env["ORCH_REDIS_URL"] = redis_url
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(argv: list[str], env: Mapping[str, str], timeout_s: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=dict(env), capture_output=True, text=True,
                          timeout=timeout_s, check=False, cwd=ROOT)


def duration_s(text: str) -> float:
    """A compose duration (``1h30m``, ``90s``, ``500ms``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


def option_names(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-")]


# --------------------------------------------------------------------------- the file


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    for doc in (raw(), compose()):
        errors = sorted(validator_cls(schema).iter_errors(doc), key=lambda e: e.json_path)
        assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)
    assert set(compose()["services"]) == {"redis", *APP_SERVICES}


def test_secrets_come_from_the_environment_without_defaults() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    uses = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text)
    assert {name for name, _ in uses} >= set(SECRETS)
    for name, rest in uses:
        if name in SECRETS:
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be ${{{name}:?...}}"
    for name in SECRETS:
        with pytest.raises(KeyError, match=name):
            interpolate(raw(), {k: v for k, v in SECRETS.items() if k != name})
    for value in SECRETS.values():
        assert value not in text


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in compose()["services"].items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{name} has no healthcheck"
        assert hc.get("test") and hc["test"] != ["NONE"], name
        for key in ("interval", "timeout", "start_period"):
            duration_s(hc[key])
        assert hc["retries"] >= 1


def test_app_services_share_one_image_and_the_orch_settings() -> None:
    urls = set()
    for name in APP_SERVICES:
        svc = service(name)
        assert svc["build"] == "." and svc["image"] == service("worker")["image"], name
        env = svc["environment"]
        # Flower's own login is its only other variable (workers.flower reads it)
        assert all(k.startswith("ORCH_") or (name == "flower" and k == "FLOWER_BASIC_AUTH")
                   for k in env), (name, env)
        urls.add(env["ORCH_REDIS_URL"])
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert urls == {f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_services_orch_env_is_valid_settings(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ORCH_")]:
        monkeypatch.delenv(key)
    env = service(name)["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()  # FLOWER_BASIC_AUTH is no setting of ours
    assert settings.model_fields_set >= {k.removeprefix("ORCH_").lower() for k in env
                                         if k.startswith("ORCH_")}
    assert settings.visibility_timeout_s == int(env["ORCH_VISIBILITY_TIMEOUT_S"])
    if name == "api":
        (token,) = settings.api_tokens
        assert token.token.get_secret_value() == SECRETS["API_TOKEN"]
        assert settings.api_host == "0.0.0.0"
        published = {str(p).rsplit(":", 1)[-1] for p in service("api")["ports"]}
        assert published == {str(settings.api_port)}
        assert f":{settings.api_port}/readyz" in healthcheck_argv("api")[-1]


def test_redis_keeps_an_aof_never_evicts_and_needs_a_password() -> None:
    svc = service("redis")
    args = argv_of("redis")
    assert args[0] == "redis-server"
    opts = dict(zip(args[1::2], args[2::2], strict=True))
    assert opts["--appendonly"] == "yes"
    assert opts["--appendfsync"] == "everysec"
    assert opts["--maxmemory-policy"] == "noeviction"
    assert opts["--requirepass"] == SECRETS["REDIS_PASSWORD"]
    assert svc["environment"]["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in svc["volumes"])
    assert "ports" not in svc  # reachable only on the compose network


def test_worker_can_be_scaled_and_stops_gracefully() -> None:
    svc = service("worker")
    assert "container_name" not in svc and "ports" not in svc
    args = argv_of("worker")
    assert args[:2] == ["orchestrator", "worker"]
    queues = args[args.index("--queues") + 1].split(",")
    assert svc["environment"]["ORCH_DEFAULT_QUEUE"] in queues  # joins and submit run there
    assert int(args[args.index("--concurrency") + 1]) >= 1
    assert svc["stop_signal"] == "SIGTERM"  # Celery's warm shutdown
    catalog = discover(("workflows",))
    longest_s = max(max(s.timeout_s or 0.0, s.soft_timeout_s or 0.0)
                    for wf in catalog.workflows.values() for s in wf.steps)
    grace_s = duration_s(svc["stop_grace_period"])
    assert grace_s >= max(longest_s, 60.0)
    assert grace_s < int(svc["environment"]["ORCH_VISIBILITY_TIMEOUT_S"])


def test_flower_needs_basic_auth_and_keeps_its_state_on_a_volume() -> None:
    svc = service("flower")
    args = argv_of("flower")
    assert args[:3] == ["python", "-m", "workers.flower"]  # /metrics behind the login
    opts = dict(a.split("=", 1) for a in args[3:])
    assert not any("basic" in o for o in opts)  # never on the command line
    assert svc["environment"]["FLOWER_BASIC_AUTH"] == (
        f"{SECRETS['FLOWER_USER']}:{SECRETS['FLOWER_PASSWORD']}")
    assert opts["--persistent"] == "True"
    db_dir = str(Path(opts["--db"]).parent)
    assert any(v.endswith(f":{db_dir}") for v in svc["volumes"])
    # /healthcheck is unauthenticated: never publish on every interface
    assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"])


def test_dockerfile_builds_one_non_root_image_with_the_cli_as_entrypoint() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)\s*$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile_entrypoint() == ["orchestrator"]
    assert "pip install" in text


# --------------------------------------------------------------------------- entry points



@pytest.mark.redis
@pytest.mark.parametrize("name", [
    "api",
    "worker",
    "scheduler",
])
def test_orchestrator_commands_exist_with_their_options(name: str, redis_url: str) -> None:
    program, sub, *args = argv_of(name)
    assert program == "orchestrator"
    done = run([ours(program), sub, "--help"], app_env(name, redis_url))
    assert done.returncode == 0, done.stderr + done.stdout
    for opt in option_names(args):
        assert re.search(rf"(^|[\s,]){re.escape(opt)}\b", done.stdout, re.MULTILINE), (
            f"`orchestrator {sub}` has no option {opt}:\n{done.stdout}")


@pytest.mark.redis
def test_flower_command_exists_with_its_options(redis_url: str) -> None:
    import flower.options  # noqa: F401  (defines Flower's tornado options)
    from tornado.options import options

    program, *args = argv_of("flower")
    done = run([ours(program), *args[:3], "--help"], app_env("flower", redis_url))
    assert done.returncode == 0, done.stderr + done.stdout
    known = set(options.as_dict())
    for opt in option_names(args[3:]):
        assert opt.lstrip("-").replace("-", "_") in known, f"flower has no option {opt}"


@pytest.mark.redis
def test_worker_healthcheck_pings_only_its_own_worker(redis_url: str) -> None:
    argv = healthcheck_argv("worker")
    shell = shlex.split(argv[2])
    assert shell[0] == "celery" and shell[3:5] == ["inspect", "ping"]
    ours(shell[0])
    listed = run([ours("celery"), *shell[1:4], "--list"], app_env("worker", redis_url))
    assert re.search(r"^\s+ping\s", listed.stdout, re.MULTILINE), listed.stdout

    worker = WorkerProcess(redis_url, "celery", concurrency=1)  # node name celery@test
    try:
        from orchestrator.runtime.celeryconf import client_app
        from orchestrator.settings import Settings

        worker.wait_ready(client_app(Settings(redis_url=redis_url)))
        mine = run(argv, app_env("worker", redis_url, HOSTNAME="test"))
        assert mine.returncode == 0, mine.stderr + mine.stdout
        # no such node: the probe fails once its reply timeout ends (shortened here)
        quick = [*argv[:2], re.sub(r"-t \d+", "-t 2", argv[2])]
        other = run(quick, app_env("worker", redis_url, HOSTNAME="elsewhere"))
        assert other.returncode != 0, other.stdout
    finally:
        worker.stop()


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def readyz_server() -> Iterator[HTTPServer]:
    """A stand-in for the API's /readyz on a loopback port."""
    server = HTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.redis
def test_api_healthcheck_fails_unless_readyz_answers_200(
        redis_url: str, readyz_server: HTTPServer) -> None:
    argv = healthcheck_argv("api")
    assert argv[0] == "python" and "/readyz" in argv[-1]
    port = readyz_server.server_address[1]
    argv = [ours("python"), *[a.replace(":8000/", f":{port}/") for a in argv[1:]]]
    env = app_env("api", redis_url)
    assert run(argv, env).returncode == 0
    _Readyz.status = 503
    try:
        assert run(argv, env).returncode != 0
    finally:
        _Readyz.status = 200


@pytest.mark.redis
def test_flower_command_and_healthcheck_run_for_real(redis_url: str) -> None:
    program, *args = argv_of("flower")
    port = free_loopback_port()
    data = Path(tempfile.mkdtemp(prefix="flower-data-"))
    local = {"--address": "127.0.0.1", "--port": str(port), "--db": str(data / "flower.db")}
    args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}"
            if a.split("=", 1)[0] in local else a for a in args]
    env = app_env("flower", redis_url)
    check = [ours("python"), *[a.replace(":5555/", f":{port}/")
                               for a in healthcheck_argv("flower")[1:]]]
    log = data / "flower.log"
    proc = procs.spawn([ours(program), *args], log=log, env=env, cwd=ROOT)
    try:
        procs.wait_ready(proc, lambda: run(check, env, 30).returncode == 0, 60,
                         name="flower", log=log, interval_s=0.3,
                         message=lambda: f"flower not healthy:\n{log.read_text()}")
    finally:
        procs.stop(proc, 20)
    try:
        assert list(data.glob("flower.db*")), f"no state saved:\n{log.read_text()}"
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.redis
def test_redis_command_and_healthcheck_run_for_real(redis_binary: str) -> None:
    """The redis service's own arguments on a local redis-server, probed like compose."""
    cli_binary = shutil.which("redis-cli")
    if cli_binary is None:
        pytest.skip("no redis-cli on PATH (Debian package redis-tools)")
    args = argv_of("redis")
    port = free_loopback_port()
    data = Path(tempfile.mkdtemp(prefix="redis-compose-"))
    proc = procs.spawn([redis_binary, *args[1:], "--port", str(port), "--bind", "127.0.0.1",
                        "--dir", str(data)])
    client = redis.Redis(port=port, password=SECRETS["REDIS_PASSWORD"],
                         socket_timeout=2, decode_responses=True)
    try:
        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        procs.wait_ready(proc, pings, 10, name="redis-server", interval_s=0.05,
                         message="redis-server did not start")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()

        hc = healthcheck_argv("redis")
        hc[2] = hc[2].replace("redis-cli", f"{shlex.quote(cli_binary)} -p {port}", 1)
        auth = service("redis")["environment"]["REDISCLI_AUTH"]
        base = {"PATH": os.environ.get("PATH", "")}
        assert run(hc, {**base, "REDISCLI_AUTH": auth}).returncode == 0
        assert run(hc, {**base, "REDISCLI_AUTH": "wrong"}).returncode != 0
        assert run(hc, base).returncode != 0
    finally:
        client.close()
        procs.stop(proc, 10)
        shutil.rmtree(data, ignore_errors=True)
