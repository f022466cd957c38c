"""The one typed settings object, read from ``ORCH_*`` environment variables.

Built once at each entry point (CLI, worker, API) and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ApiScope = Literal["runs:read", "runs:write", "workflows:read", "metrics:read"]
"""What an API token may do: read runs, start and cancel runs, read workflows, scrape
the Prometheus metrics."""

API_SCOPES: tuple[ApiScope, ...] = ("runs:read", "runs:write", "workflows:read",
                                    "metrics:read")
MIN_API_TOKEN_CHARS = 16


class ApiToken(BaseModel):
    """One bearer token of the HTTP API and the scopes it grants."""

    # hide_input_in_errors: a validation error must not print the token it rejects
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    token: SecretStr = Field(description=f"The secret (at least {MIN_API_TOKEN_CHARS} "
                             "characters), sent as `Authorization: Bearer <token>`.")
    scopes: frozenset[ApiScope] = Field(description="Scopes granted to the token.")
    name: str = Field("", description="Who holds the token (for logs; not a secret).")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"an API token needs at least {MIN_API_TOKEN_CHARS} characters; "
                             "generate one with: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'")
        return v


class Settings(BaseSettings):
    """Everything configurable.  Every field maps to ``ORCH_<FIELD>``."""

    # hide_input_in_errors: a rejected value may be a secret (an API token, a password)
    model_config = SettingsConfigDict(env_prefix="ORCH_", frozen=True, extra="ignore",
                                      hide_input_in_errors=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="Broker, result backend and run store.")
    key_prefix: str = Field("orch", description="Prefix of every run-store key.")
    workflow_packages: tuple[str, ...] = Field(
        ("workflows",), description="Packages imported to find workflows and step functions.")
    default_queue: str = Field("default", description="Queue of steps that name none.")
    visibility_timeout_s: int = Field(
        3600, description="The broker's own redelivery delay after a worker dies: a last "
        "resort (leases recover a step within seconds); keep it above the longest step.")
    lease_s: float = Field(8.0, ge=2.0, description="How long a step run's lease lasts "
                           "unless its worker renews it (every lease_s / 4); a killed "
                           "worker's step runs again about this long after the kill.")
    reaper_interval_s: float = Field(1.0, gt=0, description="How often a worker looks for "
                                     "expired leases, stale claims and due retry timers.")
    claim_grace_s: float = Field(10.0, gt=0, description="A unit claimed for dispatch and "
                                 "not published within this long is published by the "
                                 "reaper (its claimer died in between).")
    orphan_recheck_s: float = Field(60.0, gt=0, description="How often a running step run "
                                    "with neither an owner nor a message is reported again.")
    result_expires_s: int = Field(7 * 24 * 3600, description="Celery result/chord key TTL.")
    run_retention_s: int = Field(7 * 24 * 3600,
                                 description="How long a finished run stays in the store.")
    max_unit_tasks: int = Field(100, description="Most signatures in one canvas message.")
    worker_concurrency: int | None = Field(None, description="Default worker concurrency.")
    flower_user: str = Field("admin", description="Flower basic-auth user.")
    flower_password: SecretStr = Field(SecretStr(""), description="Flower basic-auth "
                                       "password; the stack generates one when empty.")

    # --- HTTP API (orchestrator.api) ------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API.")
    api_tokens: tuple[ApiToken, ...] = Field(
        (), description="Bearer tokens of the API with their scopes, as a JSON list: "
        '[{"token": "...", "scopes": ["runs:read", "runs:write", "workflows:read"]}]. '
        "With none, every authenticated endpoint answers 401.")
    api_max_body_bytes: int = Field(1024 * 1024, ge=1,
                                    description="Largest request body; larger ones get 413.")
    api_max_wait_s: float = Field(60.0, gt=0, le=60, description="Upper bound of the "
                                  "submit endpoint's ?wait= (at most the API's own cap of "
                                  "60 s); a larger value gets 422.")
    idempotency_window_s: int = Field(24 * 3600, ge=1, description="How long an "
                                      "Idempotency-Key keeps returning the same run.")
    callback_secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key of "
                                       "run-end callbacks: the API refuses callback URLs "
                                       "without it, and workers sign with it (workers need "
                                       "it too).")
    callback_timeout_s: float = Field(10.0, gt=0, description="Timeout of one callback POST.")
    callback_max_age_s: float = Field(24 * 3600, gt=0, description="How long after its "
                                      "run ended a failing callback is still retried.")
