"""The run store's schema version: which releases may read and write a store.

The store keeps one hash, ``Keys.schema()``: ``version`` (the schema) and ``release``
(the release that set it).  The first process of a release that checks a store with no
version sets it; every later one compares:

* the store's version equals this release's: go on;
* it is another one: refuse (:class:`~orchestrator.errors.StoreSchemaMismatch`) before
  writing anything, naming the release that set it.

Within one schema version every change is additive, so that the previous release and
this one share a store and a worker pool during a rolling upgrade (and a rollback):

* new hash fields and keys only; readers ignore what they do not know
  (:class:`~orchestrator.store.records.StepRun`, ``RunRecord``, ``Origin``);
* model fields added with defaults, stored without their defaults
  (:meth:`RunStore.save_definition`), so an older release parses a definition that uses
  no new feature;
* task messages keep their arguments; Lua scripts change by adding a script, never by
  changing what an existing one writes.

A change that cannot be additive bumps :data:`SCHEMA_VERSION` and ships a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from orchestrator.errors import StoreIsCluster, StoreSchemaMismatch
from orchestrator.store.keys import Keys

SCHEMA_VERSION = 1
"""The schema this release reads and writes.  Release 0.1.0 wrote schema 1 without
recording it: a store with no version is schema 1."""


@dataclass(frozen=True)
class Schema:
    """A store's recorded schema."""

    version: int
    release: str
    """The release that set the version (``unknown`` when a bare tree did)."""


def read(client: Any, keys: Keys) -> Schema | None:
    """The store's recorded schema, or None when none is recorded yet."""
    raw = client.hgetall(keys.schema())
    if not raw:
        return None
    return Schema(int(raw.get("version", SCHEMA_VERSION)), raw.get("release", "unknown"))


def is_cluster(client: Any) -> bool:
    """Whether the server is a Redis Cluster node (``cluster_enabled:1``), in one ``INFO
    cluster``; a server that refuses ``INFO`` (a managed Redis that renamed it) is taken
    for a standalone one."""
    try:
        info = client.info("cluster")
    except ResponseError:
        return False
    return int(info.get("cluster_enabled", 0)) == 1


def refuse_cluster(client: Any, url: str, variable: str) -> None:
    """Refuse a Redis Cluster node before anything is written to it: the run store's
    scripts touch a run's keys and the shared indexes together (keys of many slots), and
    kombu's transport does not follow ``MOVED`` replies, so on a cluster some commands
    would fail at random, mid-run.

    Raises:
        StoreIsCluster: :func:`is_cluster`; the message names ``variable``, the setting
            to change.
    """
    if is_cluster(client):
        raise StoreIsCluster(url, variable)


def ensure(client: Any, keys: Keys, url: str, release: str) -> Schema:
    """Record this release's schema if the store has none; check it otherwise.

    Raises:
        StoreSchemaMismatch: the store has another schema version (nothing was written).
    """
    p = client.pipeline(transaction=True)
    p.hsetnx(keys.schema(), "version", SCHEMA_VERSION)
    p.hsetnx(keys.schema(), "release", release)
    p.hgetall(keys.schema())
    raw = p.execute()[-1]
    have = Schema(int(raw.get("version", SCHEMA_VERSION)), raw.get("release", "unknown"))
    if have.version != SCHEMA_VERSION:
        raise StoreSchemaMismatch(url, have.version, SCHEMA_VERSION, have.release, release)
    return have
