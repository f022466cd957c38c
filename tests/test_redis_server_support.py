"""The private-Redis test harness really starts, kills and restarts a server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer, RedisServerError, free_loopback_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _aof_contains(data_dir: Path, needle: bytes) -> bool:
    """True once ``needle`` was written to any append-only file under ``data_dir``."""
    return any(needle in path.read_bytes() for path in data_dir.rglob("*.aof*") if path.is_file())


# ---------------------------------------------------------------- wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(calls), timeout_s=5) == "ready"


def test_wait_until_raises_assertion_error_with_the_message() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"never true \(waited 0\.\d\ds\)"):
        wait_until(lambda: False, timeout_s=0.1, interval_s=0.01, message="never true")
    assert time.monotonic() - started < 2


def test_wait_until_evaluates_a_callable_message_only_on_timeout() -> None:
    evaluated: list[bool] = []

    def message() -> str:
        evaluated.append(True)
        return "lazy"

    assert wait_until(lambda: True, timeout_s=1, message=message)
    assert evaluated == []
    with pytest.raises(AssertionError, match="lazy"):
        wait_until(lambda: False, timeout_s=0.05, message=message)
    assert evaluated == [True]


# ---------------------------------------------------------------- fixtures


def test_redis_url_points_at_an_empty_private_server(
    redis_url: str, redis_server: RedisServer
) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port != 6379
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        assert client.dbsize() == 0
        client.set("left-behind", "1")  # the next test must not see it
    finally:
        client.close()


def test_redis_url_is_flushed_between_tests(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_session_server_runs_without_persistence(redis_server: RedisServer) -> None:
    client = redis_server.client(decode_responses=True)
    try:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


# ---------------------------------------------------------------- lifecycle


def test_start_ping_stop(redis_binary: str) -> None:
    server = RedisServer(binary=redis_binary)
    try:
        server.start()
        running, pid = server.is_running, server.pid
        assert running and pid is not None
        assert server.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(RedisServerError, match="already running"):
            server.start()

        server.stop()
        running, pid = server.is_running, server.pid
        assert not running and pid is None
        assert not server.ping()
        assert not _port_accepts(server.port)
    finally:
        server.close()


def test_kill_then_restart_keeps_port_and_loses_data_without_aof(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        port, data_dir = server.port, server.data_dir
        client = server.client()
        client.set("k", "v")
        client.close()

        server.kill()
        assert not server.is_running
        assert not server.ping()

        server.restart()
        assert (server.port, server.data_dir) == (port, data_dir)
        assert server.ping()
        client = server.client()
        try:
            assert client.get("k") is None
        finally:
            client.close()


def test_restart_of_a_running_server_stops_it_first(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        old_pid = server.pid
        server.restart()
        assert server.pid not in (None, old_pid)
        assert server.ping()


def test_appendonly_data_survives_kill_and_restart(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary, appendonly=True) as server:
        client = server.client(decode_responses=True)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            client.set("durable-key", "durable-value")
        finally:
            client.close()
        wait_until(
            lambda: _aof_contains(server.data_dir, b"durable-key"),
            timeout_s=5,
            message="the write never reached the append-only file",
        )

        server.kill()
        server.restart()
        client = server.client(decode_responses=True)
        try:
            assert client.get("durable-key") == "durable-value"
        finally:
            client.close()


def test_context_manager_stops_the_server_and_removes_its_dir(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        port, data_dir = server.port, server.data_dir
        assert data_dir.is_dir()
    assert not server.is_running
    assert not _port_accepts(port)
    assert not data_dir.exists()


def test_two_servers_get_different_ports(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as first, RedisServer(binary=redis_binary) as second:
        assert first.port != second.port
        assert first.ping() and second.ping()


def test_a_taken_fixed_port_fails_with_the_log(redis_binary: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", free_loopback_port()))
        blocker.listen()
        server = RedisServer(binary=redis_binary, port=blocker.getsockname()[1])
        try:
            with pytest.raises(RedisServerError, match="exited with status"):
                server.start()
            assert not server.is_running
        finally:
            server.close()


# ---------------------------------------------------------------- free_loopback_port


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    # an outgoing connection's local port comes from the ephemeral range: a port picked
    # there may be taken by any client before the caller binds it
    from orchestrator.dev import localredis

    low, high = localredis.ephemeral_ports()
    assert 0 < low <= high
    ports = [free_loopback_port() for _ in range(200)]
    if low - 1 > 11_000:  # room below it (Linux's default range has 22,767 ports)
        assert all(10_000 <= p < low for p in ports), sorted(ports)[:5]
        assert len(set(ports)) > 150  # picked at random, not in a row
    for p in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", p))  # free when returned (nobody else binds here)


def test_a_taken_port_is_not_given_and_no_room_falls_back_to_the_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.dev import localredis

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy, busy])
        monkeypatch.setattr(localredis.random, "randint", lambda a, b: next(picks, free))
        monkeypatch.setattr(localredis, "ephemeral_ports", lambda: (32768, 60999))
        assert localredis.free_loopback_port() == free  # the taken one skipped
        monkeypatch.setattr(localredis, "ephemeral_ports", lambda: (1024, 65535))
        port = localredis.free_loopback_port()  # no room below: the kernel's pick
        assert port != busy and 1024 <= port <= 65535
