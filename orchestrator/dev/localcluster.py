"""A Redis Cluster on loopback for tests and benchmarks: three masters, the 16,384 slots
split among them.

Each master is a :class:`~orchestrator.dev.localredis.RedisServer` started with
``--cluster-enabled yes`` and a cluster bus port of its own (a free port, not port +
10,000, which may be taken or out of range); the cluster is formed with ``CLUSTER
ADDSLOTSRANGE`` and ``CLUSTER MEET`` from redis-py, so no ``redis-cli`` is needed::

    with RedisCluster(binary) as cluster:
        cluster.urls[0]  # redis://127.0.0.1:<port>/0, a node of the cluster
"""

from __future__ import annotations

from typing import Self

import redis

from orchestrator.dev.lifecycle import Started
from orchestrator.dev.localredis import LOOPBACK, RedisServer, free_loopback_port
from orchestrator.dev.waiting import wait_until

SLOTS = 16384


class RedisCluster(Started):
    """``masters`` cluster-enabled ``redis-server``s sharing the slots, formed and ready
    (``cluster_state:ok`` on every node) when :meth:`start` returns."""

    def __init__(self, binary: str | None = None, masters: int = 3, ready_timeout_s: float = 30.0,
                 durable: bool = False) -> None:
        """``durable``: each node writes every command to its AOF before it answers
        (``appendfsync always``), so a node SIGKILLed and restarted has lost nothing
        acknowledged (its slots, in ``nodes.conf``, are kept either way)."""
        self.durable = durable
        self.nodes: list[RedisServer] = []
        self._binary = binary
        self._masters = masters
        self._ready_timeout_s = ready_timeout_s
        self._bus_ports: list[int] = []

    @property
    def urls(self) -> list[str]:
        """Each node's URL (database 0, the only one a cluster has)."""
        return [n.url for n in self.nodes]

    def start(self) -> Self:
        """Start the nodes, give each its share of the slots, introduce them, and wait
        until every node sees the cluster ``ok``."""
        for _ in range(self._masters):
            bus = free_loopback_port()
            durable = ("--appendfsync", "always") if self.durable else ()
            node = RedisServer(binary=self._binary, port=free_loopback_port(),
                               appendonly=self.durable, extra_args=(
                "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                *durable))
            self.nodes.append(node.start())
            self._bus_ports.append(bus)
        share = SLOTS // self._masters
        for i, node in enumerate(self.nodes):
            last = SLOTS - 1 if i == self._masters - 1 else (i + 1) * share - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with self.nodes[0].client() as c:
            for node, bus in zip(self.nodes[1:], self._bus_ports[1:], strict=True):
                c.execute_command("CLUSTER", "MEET", LOOPBACK, node.port, bus)
        wait_until(self._ready, self._ready_timeout_s, interval_s=0.1,
                   message=lambda: f"the cluster did not form: {self._states()}")
        return self

    def _states(self) -> list[str]:
        out = []
        for node in self.nodes:
            with node.client(decode_responses=True) as c:
                info = c.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            out.append(f"{fields.get('cluster_state')}/{fields.get('cluster_known_nodes')}")
        return out

    def wait_ok(self) -> None:
        """Wait until every node sees the cluster ``ok`` again (after a node's restart)."""
        wait_until(self._ready, self._ready_timeout_s, interval_s=0.1,
                   message=lambda: f"the cluster did not recover: {self._states()}")

    def _ready(self) -> bool:
        try:
            return self._states() == [f"ok/{self._masters}"] * self._masters
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Stop every node and remove its data directory."""
        for node in self.nodes:
            node.close()
