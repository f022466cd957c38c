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

from typing import Any, Self

import redis

from orchestrator.dev.lifecycle import Started
from orchestrator.dev.localredis import LOOPBACK, RedisServer, free_loopback_port
from orchestrator.dev.waiting import wait_until

SLOTS = 16384


class RedisCluster(Started):
    """``masters`` cluster-enabled ``redis-server``s sharing the slots, formed and ready
    (``cluster_state:ok`` on every node) when :meth:`start` returns."""

    def __init__(self, binary: str | None = None, masters: int = 3,
                 ready_timeout_s: float = 30.0, durable: bool = False,
                 replicas: int = 0) -> None:
        """``durable``: each node writes every command to its AOF before it answers
        (``appendfsync always``), so a node SIGKILLed and restarted has lost nothing
        acknowledged (its slots, in ``nodes.conf``, are kept either way).  ``replicas``:
        that many replicas of each master (the cluster promotes one when its master
        fails: a node is taken for failed after 2 s)."""
        self.durable = durable
        self.nodes: list[RedisServer] = []
        self._binary = binary
        self._masters = masters
        self._replicas = replicas
        self._ready_timeout_s = ready_timeout_s
        self._bus_ports: list[int] = []

    @property
    def urls(self) -> list[str]:
        """Each node's URL (database 0, the only one a cluster has), masters first."""
        return [n.url for n in self.nodes]

    def _node(self) -> RedisServer:
        bus = free_loopback_port()
        durable = ("--appendfsync", "always") if self.durable else ()
        node = RedisServer(binary=self._binary, port=free_loopback_port(),
                           appendonly=self.durable, extra_args=(
            "--cluster-enabled", "yes", "--cluster-port", str(bus),
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            *durable))
        self.nodes.append(node.start())
        self._bus_ports.append(bus)
        return node

    def start(self) -> Self:
        """Start the nodes, give each master its share of the slots, introduce them, make
        the replicas replicate their masters, and wait until every node sees the cluster
        ``ok``."""
        masters = [self._node() for _ in range(self._masters)]
        share = SLOTS // self._masters
        for i, node in enumerate(masters):
            last = SLOTS - 1 if i == self._masters - 1 else (i + 1) * share - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        replicas = [self._node() for _ in range(self._masters * self._replicas)]
        with masters[0].client() as c:
            for node, bus in zip(self.nodes[1:], self._bus_ports[1:], strict=True):
                c.execute_command("CLUSTER", "MEET", LOOPBACK, node.port, bus)
        ids = []
        for node in masters:
            with node.client(decode_responses=True) as c:
                ids.append(str(c.execute_command("CLUSTER", "MYID")))
        for i, node in enumerate(replicas):
            master = ids[i % self._masters]
            with node.client() as c:  # once it knows the master (the MEET spreads)
                def took(c: Any = c, master: str = master) -> bool:
                    return self._replicate(c, master)

                wait_until(took, self._ready_timeout_s, interval_s=0.1,
                           message=f"replica {node.port} did not take its master")
        wait_until(self._ready, self._ready_timeout_s, interval_s=0.1,
                   message=lambda: f"the cluster did not form: {self._states()}")
        # a replica that never synced with its master does not stand for it when it fails
        wait_until(lambda: all(self._synced(n) for n in replicas), self._ready_timeout_s,
                   interval_s=0.1, message="a replica did not sync with its master")
        return self

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        with node.client(decode_responses=True) as c:
            return bool(c.info("replication").get("master_link_status") == "up")

    @staticmethod
    def _replicate(c: Any, master_id: str) -> bool:
        try:
            c.execute_command("CLUSTER", "REPLICATE", master_id)
            return True
        except redis.ResponseError:  # "Unknown node": the gossip has not reached it yet
            return False

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
            size = self._masters * (1 + self._replicas)
            return self._states() == [f"ok/{size}"] * size
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Stop every node and remove its data directory."""
        for node in self.nodes:
            node.close()
