"""Tenants: whose a run, a schedule, a trigger or an event is.

An API token belongs to one tenant (``ApiToken.tenant``); everything the token creates
belongs to it, and the token sees nothing of another tenant's: such a thing answers as
if it did not exist (404, never 403, which would confirm it).  A token with the
``admin`` scope sees every tenant's.  What nobody's token started (the CLI, a broker
submission, a schedule or a trigger declared beside its workflow) belongs to
:data:`DEFAULT_TENANT`, and so does every record written before tenants existed.
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
TENANT_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
"""A tenant's name: it appears in Redis key names, so no ``:`` and no spaces."""

_NAME = re.compile(TENANT_NAME)


def check_name(name: str) -> str:
    """Return ``name`` if it can name a tenant.

    Raises:
        ValueError: it does not match :data:`TENANT_NAME`.
    """
    if not _NAME.match(name):
        raise ValueError(f"tenant {name!r} is not a usable name: give 1 to 64 of "
                         "A-Z a-z 0-9 _ . - (not starting with . or -)")
    return name


def tenant_of(stored: str | None) -> str:
    """The tenant of a stored record: its recorded tenant, or :data:`DEFAULT_TENANT` for
    a record written without one."""
    return stored or DEFAULT_TENANT


def sees(viewer: str | None, owner: str | None) -> bool:
    """Whether a viewer of tenant ``viewer`` may see a thing of tenant ``owner``.

    ``viewer`` None stands for every tenant (an ``admin`` token, the CLI, a worker).
    """
    return viewer is None or tenant_of(viewer) == tenant_of(owner)
