"""The one typed settings object, read from ``ORCH_*`` environment variables.

Built once at each entry point (CLI, worker, API) with :func:`load`, and passed down;
nothing else reads the environment.  :func:`load` checks the settings at start: a bad
value is one line naming the variable and the fix (:class:`SettingsInvalid`), and an
``ORCH_*`` variable that names no setting (a typo) is warned about with the closest name.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from orchestrator.callbacks.destinations import networks
from orchestrator.callbacks.signing import key as signing_key
from orchestrator.core.compiler import MAX_UNIT_TASKS
from orchestrator.core.tenants import DEFAULT_TENANT, check_name
from orchestrator.errors import SettingsInvalid
from orchestrator.outages import mask_url

if TYPE_CHECKING:
    from orchestrator.store.connection import RedisTarget

log = logging.getLogger(__name__)

ENV_PREFIX = "ORCH_"
REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
TOOLING_VARIABLES = frozenset({
    "ORCH_VENV", "ORCH_ROOT", "ORCH_QUEUE", "ORCH_MIN_PYTHON", "ORCH_LOG_TAG",
    "ORCH_BOOTSTRAP_FORCE", "ORCH_TEST_REQUIRE_REDIS",
    "ORCH_TEST_REQUIRE_BROWSER", "ORCH_TEST_REQUIRE_HOSTS", "ORCH_TEST_SKIP_REPORT",
    "ORCH_TEST_SPANS_DIR"})
"""``ORCH_*`` variables read by the scripts and the tests, not settings: no typo warning."""

ApiScope = Literal["runs:read", "runs:write", "workflows:read", "metrics:read",
                   "triggers:read", "schedules:read", "schedules:write", "events:write",
                   "runs:tracebacks", "admin"]
"""What an API token may do: read runs, start and cancel runs, read workflows, scrape
the Prometheus metrics; read schedules, change them; see step tracebacks
(``runs:tracebacks``); see every tenant's runs, schedules and triggers (``admin``, with
the other scopes it needs)."""

API_SCOPES: tuple[ApiScope, ...] = ("runs:read", "runs:write", "workflows:read",
                                    "metrics:read", "triggers:read", "schedules:read",
                                    "schedules:write", "events:write", "runs:tracebacks",
                                    "admin")
MIN_API_TOKEN_CHARS = 16


class ApiToken(BaseModel):
    """One bearer token of the HTTP API and the scopes it grants."""

    # hide_input_in_errors: a validation error must not print the token it rejects
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    token: SecretStr = Field(description=f"The secret (at least {MIN_API_TOKEN_CHARS} "
                             "characters), sent as `Authorization: Bearer <token>`.")
    scopes: frozenset[ApiScope] = Field(description="Scopes granted to the token.")
    name: str = Field("", description="Who holds the token (for logs; not a secret).")
    tenant: str = Field(DEFAULT_TENANT, description="The tenant the token belongs to: it "
                        "sees and changes only that tenant's runs, schedules, triggers "
                        "and events (unless it has the admin scope).")

    @field_validator("tenant")
    @classmethod
    def _tenant_name(cls, v: str) -> str:
        return check_name(v)

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
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore",
                                      hide_input_in_errors=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="Broker, result backend and run store: a redis://, "
                           "rediss:// or unix:// URL, or the Sentinels of a replicated "
                           "group: sentinel://h1:26379;sentinel://h2:26379/0 (with "
                           "ORCH_REDIS_SENTINEL_MASTER; a password in it is the data "
                           "servers').")
    redis_sentinel_master: str = Field("", description="With a sentinel:// URL: the name "
                                       "of the group the Sentinels monitor (`sentinel "
                                       "monitor <name> ...`).")
    redis_sentinel_password: SecretStr = Field(SecretStr(""), description="With a "
                                               "sentinel:// URL: the Sentinels' own "
                                               "password (their requirepass), if any.")
    broker_url: str = Field("", description="The broker's Redis, when it is not the run "
                            "store's: a redis://, rediss:// or unix:// URL, or "
                            "sentinel://... (with ORCH_BROKER_SENTINEL_MASTER).  Empty: "
                            "ORCH_REDIS_URL carries the queues too (the default).  Apart, "
                            "each Redis has a core of its own; see docs/scaling.md.")
    broker_sentinel_master: str = Field("", description="With a sentinel:// "
                                        "ORCH_BROKER_URL: the name of the group its "
                                        "Sentinels monitor (empty: "
                                        "ORCH_REDIS_SENTINEL_MASTER).")
    redis_timeout_s: float = Field(1.0, gt=0, description="How long the CLI and the API "
                                   "wait for one Redis command (connecting included) "
                                   "before they report that Redis did not answer (exit 5, "
                                   "or a 503); workers keep the store's longer default.")
    key_prefix: str = Field("orch", description="Prefix of every run-store key.")
    redis_cluster: bool = Field(False, description="ORCH_REDIS_URL is a node of a Redis "
                                "Cluster: the run store speaks Cluster, every key under "
                                "one hash tag ({ORCH_KEY_PREFIX}), so each script touches "
                                "one slot.  Needs ORCH_BROKER_URL on a standalone Redis "
                                "(kombu cannot use a cluster); docs/scaling.md.")
    workflow_packages: Annotated[tuple[str, ...], NoDecode] = Field(
        ("workflows",), description="Packages imported to find workflows and step "
        "functions: comma-separated (a,b) or a JSON list.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Workers' log lines: text, or json (one JSON object a line "
        "with time, level, logger, message, run_id, step_id, attempt, task_id).")
    definition_max_bytes: int = Field(1024 * 1024, ge=1024, description="Largest workflow "
                                      "file (YAML) the catalog loads; larger ones are "
                                      "refused before they are read.")
    definition_max_steps: int = Field(10_000, ge=1, description="Most steps a workflow "
                                      "definition may have.")
    run_input_max_bytes: int = Field(1024 * 1024, ge=1024, description="Largest run input, "
                                     "as compact JSON in UTF-8: a larger one is refused at "
                                     "submit (API 413 input_too_large, RunInputTooLarge). "
                                     "Pass larger data by reference (an object-store URL).")
    step_output_max_bytes: int = Field(1024 * 1024, ge=1024, description="Largest step "
                                       "output, as compact JSON in UTF-8: a step that "
                                       "returns a larger one fails without retry "
                                       "(StepOutputTooLarge); return a reference to the "
                                       "data instead. Read by the workers.")
    default_queue: str = Field("default", description="Queue of steps that name none.")
    submit_queue: str = Field("celery", description="Queue every worker also consumes for "
                              "broker submissions (orchestrator.submit): Celery's default, "
                              "so a stock client in any language reaches it unconfigured; "
                              "empty: consume none.")
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
    timer_interval_s: float = Field(0.1, gt=0, description="How often the worker holding "
                                    "the reaper lock publishes due store timers (retries, "
                                    "waits, rate-limited starts): how late past its time a "
                                    "reserved start may begin.")
    fault_injection: bool = Field(False, description="Let runs carry faults to inject "
                                  "(fail, slow or time out named steps: `orchestrator "
                                  "simulate`'s faults on real workers). For tests only: a "
                                  "coordinator refuses faults without it, and a worker "
                                  "without it ignores them.")
    stall_s: float = Field(60.0, gt=0, description="A running run with no event for this "
                           "long, no live lease, no waiting timer and no message in any of "
                           "its queues lost a message (a worker killed between the broker's "
                           "pop and its bookkeeping): its unfinished units are published "
                           "again.")
    stall_after_restart_s: float = Field(10.0, gt=0, description="For ``stall_s`` after "
                                         "a worker saw Redis (the store's or the "
                                         "broker's) restart or fail over, a run quiet for "
                                         "this long is looked at as ``stall_s`` says: such "
                                         "an event can lose a message in flight.")
    orphan_recheck_s: float = Field(60.0, gt=0, description="How often a running step run "
                                    "with neither an owner nor a message is reported again.")
    result_expires_s: int = Field(7 * 24 * 3600, description="Celery result/chord key TTL.")
    run_retention_s: int = Field(7 * 24 * 3600,
                                 description="How long a finished run stays in the store.")
    max_unit_tasks: int = Field(MAX_UNIT_TASKS, ge=2,
                                description="Most signatures in one canvas message.")
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
    api_max_streams_per_token: int = Field(10, ge=1, description="Most server-sent event "
                                           "streams one API token holds open at once, per "
                                           "API process; one more gets 429 too_many_streams "
                                           "with Retry-After.")
    api_max_waits_per_token: int = Field(10, ge=1, description="Most submits with ?wait "
                                         "one API token has waiting at once, per API "
                                         "process; one more gets 429 too_many_waits (before "
                                         "any run is created).")
    api_rate_per_token: str = Field("100/second", description="Requests one API token may "
                                    "make, across every API process (a moving window kept "
                                    "in Redis by the `limits` package), as N/second, "
                                    "N/minute or N/hour; past it 429 rate_limited with "
                                    "Retry-After. Empty: no rate limit.")
    api_redis_connections: int = Field(20, ge=2, description="Size of the API process's "
                                       "pool of Redis connections for short commands (run "
                                       "status, idempotency keys, the rate limit); a "
                                       "request waits up to 5 s for one, then gets 503.")
    api_stream_connections: int = Field(100, ge=1, description="Size of the API process's "
                                        "pool of Redis connections for blocking reads: at "
                                        "most this many streams and ?waits at once across "
                                        "every token; one more gets 503 server_busy with "
                                        "Retry-After. /readyz has a connection of its own.")
    idempotency_window_s: int = Field(24 * 3600, ge=1, description="How long an "
                                      "Idempotency-Key keeps returning the same run.")
    callback_secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key of "
                                       "run-end callbacks: the API refuses callback URLs "
                                       "without it, and workers sign with it (workers need "
                                       "it too).")
    callback_timeout_s: float = Field(10.0, gt=0, description="Timeout of one callback POST.")
    callback_allowed_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Internal networks callbacks may reach (CIDRs, comma-separated or "
        "a JSON list): by default a callback to a loopback, link-local, private or other "
        "non-global address is refused.")
    callback_max_age_s: float = Field(24 * 3600, gt=0, description="How long after its "
                                      "run ended a failing callback is still retried.")
    event_retention_s: int = Field(7 * 24 * 3600, gt=0, description="How long the latest "
                                   "event of a key is kept for wait steps that start "
                                   "waiting for it later (durable waits).")

    # --- web UI (orchestrator.web) ---------------------------------------------------------
    ui_secret: SecretStr = Field(SecretStr(""), description="Key that signs the web UI's "
                                 "session cookies and CSRF tokens (at least 32 characters). "
                                 "Empty: a random key per API process, so sessions end when "
                                 "it restarts; set it when several API processes serve the "
                                 "UI.")
    ui_session_s: int = Field(8 * 3600, gt=0, description="How long a web UI session lasts "
                              "after sign-in.")
    flower_url: str = Field("", description="Flower's base URL (e.g. http://127.0.0.1:5555), "
                            "for the web UI's links to tasks and workers; empty: no links.")

    # --- traces (orchestrator.runtime.tracing) --------------------------------------------
    otel_endpoint: str = Field("", description="OpenTelemetry: where spans go, over OTLP "
                               "(HTTP, protobuf): a collector's base URL "
                               "(http://collector:4318; /v1/traces is added) or its traces "
                               "URL. Empty: tracing is off and costs nothing. Set it on "
                               "every process (API, CLI, scheduler, workers).")
    otel_service_name: str = Field("orchestrator", min_length=1, description="The "
                                   "service.name of every span.")
    trace_url_template: str = Field("", description="The run page's link to a run's trace: "
                                    "a URL with {trace_id}, e.g. "
                                    "https://jaeger.example/trace/{trace_id}; empty: the "
                                    "trace id is shown without a link.")

    @field_validator("api_rate_per_token")
    @classmethod
    def _api_rate(cls, v: str) -> str:
        v = v.strip()
        if v:
            from limits import parse  # the limiter's own grammar: what it will enforce
            try:
                amount = parse(v).amount
            except ValueError:
                amount = 0
            if amount < 1:
                raise ValueError(f"{v!r} is not a rate; write N/second, N/minute or N/hour "
                                 "with N >= 1 (e.g. 100/second), or leave it empty for none")
        return v

    @field_validator("otel_endpoint")
    @classmethod
    def _otel_endpoint(cls, v: str) -> str:
        if not v:
            return v
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018  # parsing the port validates it
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{mask_url(v)} is not an http(s) URL with a host; write "
                             "http://collector:4318 (OTLP over HTTP)")
        return v

    @field_validator("trace_url_template")
    @classmethod
    def _trace_url_template(cls, v: str) -> str:
        if v and (urlsplit(v).scheme not in ("http", "https") or "{trace_id}" not in v):
            raise ValueError(f"{v!r} is not an http(s) URL with {{trace_id}} in it; write "
                             "https://jaeger.example/trace/{trace_id}")
        return v

    @field_validator("ui_secret")
    @classmethod
    def _ui_secret_long(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and len(v.get_secret_value()) < 32:
            raise ValueError("the UI secret needs at least 32 characters; generate one with: "
                             "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return v

    @field_validator("callback_secret")
    @classmethod
    def _callback_key(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value():
            try:
                signing_key(v.get_secret_value())
            except ValueError as exc:  # not base64, empty, not text
                raise ValueError(f"the callback secret has no usable key ({exc}); write "
                                 "whsec_<base64 of random bytes> or any other text") from None
        return v

    @field_validator("flower_url")
    @classmethod
    def _flower_url(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"{v!r} is not an http(s) URL; write http://host:5555")
        return v.rstrip("/")

    # --- schedules (orchestrator.runtime.scheduler) ---------------------------------------
    scheduler_grace_s: float = Field(60.0, gt=0, description="A fire handled at most this "
                                     "long after its time is on time and always runs; an "
                                     "older one (no scheduler ran) follows its schedule's "
                                     "catch_up policy.")
    scheduler_claim_s: float = Field(10.0, gt=0, description="How long a scheduler holds a "
                                     "due schedule it claimed; a killed scheduler's claims "
                                     "are taken over this long after.")
    scheduler_tick_s: float = Field(1.0, gt=0, le=60, description="Longest sleep of a "
                                    "scheduler between looks at the due schedules: an "
                                    "added or edited schedule is seen within it.")
    scheduler_batch: int = Field(100, ge=1, le=10000, description="Most schedules one "
                                 "scheduler claims at once.")
    scheduler_threads: int = Field(8, ge=1, le=256, description="Schedules one scheduler "
                                   "fires concurrently.")

    # --- event triggers (orchestrator.runtime.triggers) -----------------------------------
    trigger_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description="Signing secret of each webhook trigger, as a "
        'JSON map {"<trigger>": "<secret>"}: whsec_<base64> for the standard scheme, the '
        "webhook's secret for github. A webhook trigger without one fails the API's start.")
    trigger_events_kept: int = Field(1000, ge=1, description="How many handled events "
                                     "each trigger keeps, newest first (accepted, "
                                     "duplicate, filtered, invalid, rejected).")
    hook_max_body_bytes: int = Field(256 * 1024, ge=1, description="Largest webhook body; "
                                     "larger ones get 413 (and are recorded).")
    consumer_claim_idle_s: float = Field(30.0, gt=0, description="A stream entry delivered "
                                         "to a consumer and not acknowledged for this long "
                                         "(its consumer died) is claimed by another.")
    consumer_block_s: float = Field(1.0, gt=0, le=30, description="How long the stream "
                                    "consumer blocks on one read (and so how often it "
                                    "looks for entries to claim).")
    consumer_crash_before_ack: bool = Field(False, description="Fault injection, for tests "
                                            "only: the stream consumer SIGKILLs itself after "
                                            "starting a run and before acknowledging its "
                                            "entry. Never set it in production.")

    @field_validator("trigger_secrets", mode="before")
    @classmethod
    def _json_map(cls, v: Any) -> Any:
        """A map setting read from text: a JSON object; blank text is an empty map."""
        if not isinstance(v, str):
            return v
        if not v.strip():
            return {}
        try:
            return json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object ({exc.msg} at character {exc.pos}); "
                             'write {"<trigger>": "<secret>"}') from None

    @field_validator("workflow_packages", "callback_allowed_networks", mode="before")
    @classmethod
    def _list_or_csv(cls, v: Any) -> Any:
        """A list setting read from text: a JSON list, or comma-separated names."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list ({exc.msg} at character {exc.pos}); "
                                 "write a,b or [\"a\", \"b\"]") from None
        return tuple(part.strip() for part in text.split(",") if part.strip())

    @field_validator("callback_allowed_networks")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        networks(v)  # raises with the bad one named
        return v

    @field_validator("redis_url", "broker_url")
    @classmethod
    def _redis_url(cls, v: str, info: ValidationInfo) -> str:
        if info.field_name == "broker_url" and not v.strip():
            return ""  # the store's Redis carries the queues
        if v.strip().lower().startswith("sentinel://"):
            from orchestrator.store.connection import parse_sentinel_url
            parse_sentinel_url(v)  # raises with the fix named
            return v
        try:
            parts = urlsplit(v)
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}); write redis://host:6379/0") from None
        if parts.scheme not in REDIS_SCHEMES:
            got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(f"{mask_url(v)} has {got}; write redis://host:6379/0 (or "
                             "rediss:// for TLS, unix:///path/to/redis.sock, "
                             "sentinel://h1:26379;sentinel://h2:26379/0 for Sentinels)")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket path: unix:///path/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"{mask_url(v)} names no host; write redis://host:6379/0")
        try:
            parts.port  # noqa: B018  # parsing the port validates it
        except ValueError:
            raise ValueError(f"{mask_url(v)} has a bad port; write redis://host:6379/0"
                             ) from None
        return v

    @field_validator("visibility_timeout_s", "result_expires_s", "run_retention_s")
    @classmethod
    def _positive_duration(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("a duration in seconds must be above 0")
        return v

    @model_validator(mode="after")
    def _sentinel_master(self) -> Settings:
        sentinel = self.redis_url.strip().lower().startswith("sentinel://")
        if sentinel and not self.redis_sentinel_master:
            raise ValueError(f"ORCH_REDIS_URL {mask_url(self.redis_url)} names Sentinels: "
                             "set ORCH_REDIS_SENTINEL_MASTER to the name of the group they "
                             "monitor (`sentinel monitor <name> ...` in their config)")
        if self.broker_url.strip().lower().startswith("sentinel://") and not (
                self.broker_sentinel_master or self.redis_sentinel_master):
            raise ValueError(f"ORCH_BROKER_URL {mask_url(self.broker_url)} names Sentinels: "
                             "set ORCH_BROKER_SENTINEL_MASTER to the name of the group they "
                             "monitor (`sentinel monitor <name> ...` in their config)")
        if self.redis_cluster:
            if sentinel:
                raise ValueError("ORCH_REDIS_CLUSTER is set but ORCH_REDIS_URL names "
                                 "Sentinels: a cluster fails over by itself; give one "
                                 "cluster node's redis:// URL, or unset ORCH_REDIS_CLUSTER")
            if not self.broker_apart:
                raise ValueError("ORCH_REDIS_CLUSTER is set but the broker would be on the "
                                 "cluster too (kombu's Redis transport cannot use one): set "
                                 "ORCH_BROKER_URL to a standalone Redis (or a Sentinel "
                                 "group); docs/scaling.md, Redis Cluster")
        return self

    @property
    def redis_target(self) -> RedisTarget:
        """Where Redis is (the URL, and the Sentinel group's name and password): what
        every store client is made from (:mod:`orchestrator.store.connection`)."""
        from orchestrator.store.connection import RedisTarget
        return RedisTarget(url=self.redis_url, sentinel_master=self.redis_sentinel_master,
                           sentinel_password=self.redis_sentinel_password,
                           cluster=self.redis_cluster)

    @property
    def backend_target(self) -> RedisTarget:
        """Where Celery's result backend (its chord counters) is: the run store's Redis,
        but the broker's when the store is a Redis Cluster (Celery's backend is not
        cluster-aware)."""
        return self.broker_target if self.redis_cluster else self.redis_target

    @property
    def broker_apart(self) -> bool:
        """Whether the broker is a Redis other than the run store's (``broker_url`` set
        to another URL, or the same Sentinels with another group): then no script of the
        store sends or puts back a message, and the queues are read on the broker's
        Redis."""
        if not self.broker_url.strip():
            return False
        group = self.broker_sentinel_master or self.redis_sentinel_master
        return (self.broker_url.strip() != self.redis_url.strip()
                or group != self.redis_sentinel_master)

    @property
    def broker_target(self) -> RedisTarget:
        """Where the broker's Redis is: :attr:`redis_target` unless :attr:`broker_apart`."""
        if not self.broker_apart:
            return self.redis_target
        from orchestrator.store.connection import RedisTarget
        return RedisTarget(url=self.broker_url,
                           sentinel_master=self.broker_sentinel_master
                           or self.redis_sentinel_master,
                           sentinel_password=self.redis_sentinel_password)


def env_name(field: str) -> str:
    """The environment variable of a settings field: ``ORCH_<FIELD>``."""
    return ENV_PREFIX + field.upper()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``ORCH_*`` variable that names no setting (a typo, usually), with
    the closest known name when there is one."""
    known = {env_name(f) for f in Settings.model_fields}
    out = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in TOOLING_VARIABLES:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; see orchestrator/settings.py"
        out.append(f"{name} is not a setting and is ignored{hint}")
    return out


def describe(exc: ValidationError | SettingsError) -> str:
    """One line naming each bad variable, what is wrong and the fix."""
    if isinstance(exc, SettingsError):
        m = re.search(r'field "(\w+)"', str(exc))
        var = env_name(m.group(1)) if m else "an ORCH_* variable"
        return f"{var} cannot be parsed: it must be JSON (see README, Settings)"
    problems = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else ""
        where = ".".join(str(x) for x in loc[1:])
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        name = env_name(field) if field else "settings"
        problems.append(f"{name}{'[' + where + ']' if where else ''}: {msg}")
    return "; ".join(problems)


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment, checked (the entry points' way).

    Args:
        environ: the environment to check for unknown ``ORCH_*`` names; default
            ``os.environ`` (the values themselves are always read from ``os.environ``).
        overrides: field values that win over the environment.

    Returns:
        The settings.  Each unknown ``ORCH_*`` variable is logged as a warning.

    Raises:
        SettingsInvalid: a value is invalid; the message is one line naming the variable.
    """
    for warning in unknown_variables(os.environ if environ is None else environ):
        log.warning("%s", warning)
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise SettingsInvalid(f"invalid setting: {describe(exc)}") from None
