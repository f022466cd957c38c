"""Every test of :mod:`tests.integration.test_store_scripts`, on a Redis Cluster (see the
package's conftest)."""

import pytest

from tests.integration.test_store_scripts import *  # noqa: F403

pytestmark = pytest.mark.redis

# Not here: they restore a message into a queue of the store's own Redis, which a store
# on a cluster never does (ORCH_REDIS_CLUSTER needs the broker apart; the put-back in two
# steps, Leases.restore_lease, is test_runs.py's killed worker).
del test_reaper_restores_the_message_of_an_expired_lease  # noqa: F821
del test_the_live_lease_of_a_hung_task_is_restored_only_as_hung  # noqa: F821
