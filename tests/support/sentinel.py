"""A replicated Redis on loopback for tests: a master, a replica and three Sentinels.

Every server requires a password (the data servers one, the Sentinels another), as a
deployment should; the Sentinels fail over quickly (``down_after_ms``), so that a test
can SIGKILL the master and see the replica promoted within a few seconds.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import redis

from orchestrator.dev import procs
from orchestrator.dev.localredis import LOOPBACK, free_loopback_port
from orchestrator.dev.waiting import wait_until
from orchestrator.settings import Settings
from tests.support.lifecycle import Started
from tests.support.relay import Relay

MASTER_NAME = "orchmaster"
DATA_PASSWORD = "data-secret-0123456789"
SENTINEL_PASSWORD = "sentinel-secret-0123456789"


class Node:
    """One ``redis-server`` process (a data server or a Sentinel) on a loopback port."""

    def __init__(self, binary: str, name: str, root: Path, password: str,
                 sentinel_conf: list[str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.port = free_loopback_port()
        self.password = password
        self.dir = root / name
        self.dir.mkdir()
        self.log = self.dir / "server.log"
        if sentinel_conf is None:
            cmd = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.dir),
                   "--daemonize", "no", "--logfile", "", "--save", "", "--appendonly", "no",
                   "--requirepass", password, "--masterauth", password, *args]
        else:
            conf = self.dir / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
            conf.write_text("\n".join([f"port {self.port}", f"bind {LOOPBACK}",
                                       f"dir {self.dir}", "daemonize no", 'logfile ""',
                                       f"requirepass {password}", *sentinel_conf]) + "\n")
            cmd = [binary, str(conf), "--sentinel"]
        self.proc: subprocess.Popen[bytes] | None = procs.spawn(
            cmd, log=self.log, cwd=self.dir, death_signal=signal.SIGKILL)

    def client(self, timeout_s: float = 1.0) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, password=self.password,
                           decode_responses=True, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s)

    def answers(self) -> bool:
        c = self.client(0.5)
        try:
            return bool(c.ping())
        except redis.RedisError:
            return False
        finally:
            c.close()

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        assert self.proc is not None
        procs.wait_ready(self.proc, self.answers, timeout_s, name=self.name, log=self.log,
                         interval_s=0.05)

    def kill(self) -> None:
        """SIGKILL (a crashed host: nothing flushed, no goodbye to the replica)."""
        if self.proc is not None:
            procs.kill_group(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, 5)
            self.proc = None

    def tail(self, lines: int = 20) -> str:
        return procs.log_tail(self.log, lines)


class SentinelGroup(Started):
    """Master, replica and three Sentinels (quorum 2), all on loopback with passwords."""

    def __init__(self, binary: str, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 4000, relay: bool = False) -> None:
        """``relay``: every client reaches the master through a :class:`Relay` (the
        Sentinels monitor its port), so that a test can starve the replica."""
        self.binary = binary
        self.use_relay = relay
        self.relay: Relay | None = None
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="orch-sentinel-"))
        self.master: Node | None = None
        self.replica: Node | None = None
        self.sentinels: list[Node] = []

    @property
    def url(self) -> str:
        """``sentinel://:PASSWORD@127.0.0.1:P1/0;sentinel://...``: the data servers'
        password on each address, the database on the first."""
        return ";".join(f"sentinel://:{DATA_PASSWORD}@{LOOPBACK}:{s.port}"
                        + ("/0" if i == 0 else "")
                        for i, s in enumerate(self.sentinels))

    def settings(self) -> dict[str, str]:
        """The ``ORCH_*`` settings (without the prefix) that point at this group."""
        return {"redis_url": self.url, "redis_sentinel_master": MASTER_NAME,
                "redis_sentinel_password": SENTINEL_PASSWORD}

    def orch_settings(self, **over: object) -> Settings:
        return Settings(**self.settings(), **over)  # type: ignore[arg-type]

    def start(self) -> Self:
        self.master = Node(self.binary, "master", self.root, DATA_PASSWORD)
        self.master.wait_ready()
        if self.use_relay:
            self.relay = Relay(self.master.port).start()
        self.replica = Node(self.binary, "replica", self.root, DATA_PASSWORD,
                            args=("--replicaof", LOOPBACK, str(self.first_master_port)))
        self.replica.wait_ready()
        conf = [f"sentinel monitor {MASTER_NAME} {LOOPBACK} {self.first_master_port} 2",
                f"sentinel auth-pass {MASTER_NAME} {DATA_PASSWORD}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}"]
        self.sentinels = [Node(self.binary, f"sentinel{i}", self.root, SENTINEL_PASSWORD,
                               sentinel_conf=conf) for i in range(3)]
        for s in self.sentinels:
            s.wait_ready()
        wait_until(self._converged, 30, interval_s=0.2,
                   message=lambda: "the Sentinels did not find each other and the replica: "
                   + self.describe())
        return self

    def _converged(self) -> bool:
        """Every Sentinel knows the two others and the replica, and the replica is in
        sync: only then can a failover be agreed and the replica be promoted."""
        assert self.replica is not None
        try:
            info = self.replica.client().info("replication")
            if info.get("master_link_status") != "up":
                return False
            for s in self.sentinels:
                m = s.client().sentinel_master(MASTER_NAME)
                if int(m["num-other-sentinels"]) != 2 or int(m["num-slaves"]) != 1:
                    return False
        except redis.RedisError:
            return False
        return True

    @property
    def first_master_port(self) -> int:
        """The port at which every client reaches the first master: its own, or the
        relay's."""
        assert self.master is not None
        return self.relay.port if self.relay is not None else self.master.port

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers sees it now."""
        for s in self.sentinels:
            try:
                _host, port = s.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
            except (redis.RedisError, TypeError):
                continue
        return None

    def promoted(self) -> bool:
        """True once the replica is a master and every Sentinel names it."""
        assert self.replica is not None
        try:
            role = self.replica.client().info("replication").get("role")
            ports = [int(s.client().sentinel_get_master_addr_by_name(MASTER_NAME)[1])
                     for s in self.sentinels]
        except (redis.RedisError, TypeError):
            return False
        return role == "master" and all(p == self.replica.port for p in ports)

    def describe(self) -> str:
        lines = []
        for n in [self.master, self.replica, *self.sentinels]:
            if n is not None:
                lines.append(f"--- {n.name} (port {n.port}):\n{n.tail(8)}")
        return "\n".join(lines)

    def close(self) -> None:
        for n in [*self.sentinels, self.replica, self.master]:
            if n is not None:
                n.kill()
        if self.relay is not None:
            self.relay.close()
        shutil.rmtree(self.root, ignore_errors=True)
