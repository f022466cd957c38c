"""Every test of :mod:`tests.integration.test_store`, on a Redis Cluster (see the
package's conftest)."""

import pytest

from tests.integration.test_store import *  # noqa: F403

pytestmark = pytest.mark.redis
