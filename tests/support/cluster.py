"""The tests' Redis Cluster: :class:`orchestrator.dev.localcluster.RedisCluster`."""

from orchestrator.dev.localcluster import RedisCluster

__all__ = ["RedisCluster"]
