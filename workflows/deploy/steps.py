"""Step functions of the deploy workflow."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel

from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current
from workflows.deploy import systems


class SuiteReport(BaseModel):
    """A passed test suite of one service version."""

    service: str
    version: str
    passed: int


class Artifact(BaseModel):
    """The image built for one service version."""

    service: str
    version: str
    image: str


class Release(BaseModel):
    """A version made live, and the version it replaced."""

    service: str
    version: str
    image: str
    previous_version: str | None


class Health(BaseModel):
    """A passed health check of the live version."""

    service: str
    version: str
    checks: int
    """Health checks it took (the step run's attempt)."""


class Rollback(BaseModel):
    """The release undone, and the version live afterwards."""

    service: str
    rolled_back: str
    restored_version: str | None


class Outcome(BaseModel):
    """What the deploy came to, as announced."""

    outcome: Literal["deployed", "rolling_back", "not_deployed"]
    text: str


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:12]


@step_function("deploy.test")
def run_tests(service: str, version: str) -> SuiteReport:
    """Run the service's test suite at ``version`` (the stand-in always passes)."""
    return SuiteReport(service=service, version=version,
                       passed=100 + int(_digest(service, version), 16) % 400)


@step_function("deploy.build")
def build(service: str, version: str) -> Artifact:
    """Build the image and push it to the artifact store."""
    image = f"registry.example/{service}:{version}@sha256:{_digest(service, version)}"
    systems.store_artifact(current().redis, service, version, image)
    return Artifact(service=service, version=version, image=image)


@step_function("deploy.release")
def release(artifact: Artifact) -> Release:
    """Make the artifact's version live in the service registry (safe to repeat)."""
    previous = systems.release(current().redis, artifact.service, artifact.version)
    return Release(service=artifact.service, version=artifact.version, image=artifact.image,
                   previous_version=previous)


@step_function("deploy.verify")
def verify(service: str, version: str) -> Health:
    """Check that ``version`` is live and healthy.

    Raises:
        RuntimeError: another version is live (the release was undone or superseded).
        systems.Unhealthy: the health endpoint reports a failure.
    """
    ctx = current()
    live = systems.live_version(ctx.redis, service)
    if live != version:
        raise RuntimeError(f"{service}: {live or 'nothing'} is live, expected {version}")
    systems.check_health(ctx.redis, service)
    return Health(service=service, version=version, checks=ctx.attempt)


@step_function("deploy.rollback")
def rollback(input: dict[str, Any], output: Release) -> Rollback:
    """Undo ``release`` (its compensation): put back the version ``output`` replaced
    (safe to repeat)."""
    restored = systems.roll_back(current().redis, output.service, output.version)
    return Rollback(service=output.service, rolled_back=output.version,
                    restored_version=restored)


@step_function("deploy.notify")
def notify(service: str, version: str, release: Release | None = None,
           health: Health | None = None) -> Outcome:
    """Announce the outcome; ``release`` and ``health`` are ``None`` when those steps did
    not succeed.  It runs before a failed run unwinds: a release that failed verification
    is being rolled back (by release's compensation)."""
    if health is not None:
        out = Outcome(outcome="deployed", text=f"{service} {version} is live and healthy")
    elif release is not None:
        out = Outcome(outcome="rolling_back",
                      text=f"{service} {version} failed verification; rolling back to "
                      f"{release.previous_version or 'nothing'}")
    else:
        out = Outcome(outcome="not_deployed", text=f"{service} {version} was not deployed")
    systems.notify(current().redis, out.text)
    return out
