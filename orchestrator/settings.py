"""The one typed settings object, read from ``ORCH_*`` environment variables.

Built once at each entry point (CLI, worker, API) and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable.  Every field maps to ``ORCH_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", frozen=True, extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="Broker, result backend and run store.")
    key_prefix: str = Field("orch", description="Prefix of every run-store key.")
    workflow_packages: tuple[str, ...] = Field(
        ("workflows",), description="Packages imported to find workflows and step functions.")
    default_queue: str = Field("default", description="Queue of steps that name none.")
    visibility_timeout_s: int = Field(
        3600, description="Broker redelivery delay after a worker dies; keep it above the "
        "longest step and the longest retry backoff.")
    result_expires_s: int = Field(7 * 24 * 3600, description="Celery result/chord key TTL.")
    run_retention_s: int = Field(7 * 24 * 3600,
                                 description="How long a finished run stays in the store.")
    max_unit_tasks: int = Field(100, description="Most signatures in one canvas message.")
    worker_concurrency: int | None = Field(None, description="Default worker concurrency.")
    flower_user: str = Field("admin", description="Flower basic-auth user.")
    flower_password: SecretStr = Field(SecretStr(""), description="Flower basic-auth "
                                       "password; the stack generates one when empty.")
    api_tokens: tuple[SecretStr, ...] = Field((), description="Bearer tokens of the API.")
