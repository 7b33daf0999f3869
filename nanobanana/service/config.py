"""The service's configuration (`configs/service.yaml`), validated once; every limit the policy page states.

`NANOBANANA_DATA_DIR` and `NANOBANANA_DATABASE_URL` are aliases for `data_dir` and `database_url`; any
other value is overridden as `NANOBANANA_SERVICE__<KEY>[__<SUBKEY>]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from nanobanana.config import load_section

ALIASES = {"NANOBANANA_DATA_DIR": "data_dir", "NANOBANANA_DATABASE_URL": "database_url"}


class CreditsConfig(BaseModel):
    signup_grant: int = Field(50, ge=0)
    per_image: float = Field(1, gt=0)
    reference_pixels: int = Field(1024 * 1024, ge=1)
    reference_steps: int = Field(8, ge=1)
    scale_with_pixels: bool = True
    scale_with_steps: bool = True
    minimum_per_image: int = Field(1, ge=0)


class AllowanceConfig(BaseModel):
    anonymous_images_per_day: int = Field(5, ge=0)


class StorageConfig(BaseModel):
    # Where images, exports and queued jobs' inputs go: "local" (the data folder) or s3://BUCKET[/PREFIX]
    # on any S3-compatible store; credentials from the environment (AWS_ACCESS_KEY_ID, ...).
    location: str = Field("local", pattern=r"^(local|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_./-]*)?)$")
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO); None: AWS
    s3_region: str | None = None
    anonymous_expiry_hours: float = Field(1, gt=0)
    account_expiry_hours: float = Field(168, gt=0)
    anonymous_max_images: int = Field(20, ge=1)
    anonymous_max_bytes: int = Field(50_000_000, ge=1)
    account_max_images: int = Field(200, ge=1)
    account_max_bytes: int = Field(500_000_000, ge=1)
    sweep_interval_seconds: float = Field(300, ge=0)
    export_expiry_minutes: float = Field(60, gt=0)


class RayDeploymentConfig(BaseModel):
    """The Serve deployment's options, passed to `serve.deployment` as they are (see Ray Serve's docs)."""

    num_replicas: int | None = Field(1, ge=0)  # ignored when autoscaling_config is set
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1})  # e.g. {num_gpus: 1}
    # e.g. {min_replicas: 0, max_replicas: 4, target_ongoing_requests: 1}: zero replicas when idle
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int = Field(1, ge=1)  # batches one replica holds (runs one, queues the rest)
    graceful_shutdown_timeout_s: float = Field(120, ge=0)  # a replica scaled down finishes its batch first

    def options(self) -> dict[str, Any]:
        options = self.model_dump(exclude_none=True)
        if self.autoscaling_config is not None:
            options.pop("num_replicas", None)
        return options


class RayConfig(BaseModel):
    """Where generation runs when `jobs.worker` is `ray` (see `nanobanana/service/ray_worker.py`)."""

    address: str = "auto"  # the cluster: host:6379 or ray://host:10001; auto: the one started on this machine
    namespace: str = "nanobanana"
    app_name: str = "nanobanana-worker"
    dispatchers: int = Field(2, ge=1)  # batches one web process has out on the cluster at once
    call_timeout_seconds: float = Field(900, gt=0)  # a batch call that takes longer is given up (leases recover it)
    deployment: RayDeploymentConfig = Field(default_factory=RayDeploymentConfig)


class JobsConfig(BaseModel):
    """The job queue and its worker (see `nanobanana/service/worker.py`); defaults measured with
    `python -m eval throughput` on the bundled model."""

    # local: a worker thread here; none: this process only submits; ray: batches go to a Ray Serve deployment
    worker: Literal["local", "none", "ray"] = "local"
    max_batch_images: int = Field(8, ge=1)  # images per pipeline call
    batch_wait_ms: float = Field(30, ge=0)  # how long a free worker waits for a batch to fill
    max_open_per_person: int = Field(8, ge=1)  # queued + running jobs one person may have
    lease_seconds: float = Field(30, gt=0)  # a running job whose worker stops renewing it this long is recovered
    poll_seconds: float = Field(0.5, gt=0)  # how often an idle worker looks for jobs other processes queued
    keep_finished_minutes: float = Field(60, gt=0)  # ended jobs are then forgotten (accounts keep history)
    ray: RayConfig = Field(default_factory=RayConfig)


class RateLimitConfig(BaseModel):
    """A token bucket per API key (and per client address for calls without a key)."""

    requests_per_minute: float = Field(60, gt=0)
    burst: int = Field(20, ge=1)  # calls that may come at once after a quiet spell


class WebhooksConfig(BaseModel):
    allow_private_targets: bool = False  # true: also call private, loopback and link-local addresses
    retry_seconds: list[float] = Field(default_factory=lambda: [5, 30, 120, 600, 1800])  # waits between tries
    timeout_seconds: float = Field(10, gt=0)
    poll_seconds: float = Field(0.5, gt=0)  # how often the sender looks for ended jobs and due retries
    keep_days: float = Field(7, gt=0)  # delivered or failed deliveries are then forgotten


class ApiConfig(BaseModel):
    """The REST API under /v1 and the MCP tools at /mcp (see `nanobanana/api/`)."""

    enabled: bool = True
    mcp: bool = True
    anonymous: Literal["allowance", "none"] = "allowance"  # calls without a key: the free allowance, or refused
    max_wait_seconds: float = Field(60, ge=0)  # the longest `?wait=` a call may hold a connection
    max_keys_per_account: int = Field(20, ge=1)
    idempotency_hours: float = Field(24, gt=0)  # an Idempotency-Key is remembered this long
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)


DEFAULT_OPERATOR = "the operator of this Nanobanana instance"
DEFAULT_CONTACT = "privacy@example.org"


class PrivacyConfig(BaseModel):
    operator_name: str = DEFAULT_OPERATOR
    contact: str = DEFAULT_CONTACT
    history_retention_days: float = Field(90, gt=0)
    sign_in_hours: float = Field(8, gt=0)  # a sign-in lasts this long, then the person signs in again
    closed_account_days: float = Field(30, ge=0)  # how long a deleted account's keyed hash is kept
    third_parties: list[str] = Field(default_factory=list)

    @property
    def operator_unset(self) -> bool:
        """True while the operator's name or contact is still the placeholder: the policy names nobody."""
        return self.operator_name == DEFAULT_OPERATOR or self.contact == DEFAULT_CONTACT


class SmtpConfig(BaseModel):
    host: str | None = None
    port: int = 587
    username: str | None = None
    password: str | None = None
    from_address: str | None = None
    starttls: bool = True
    timeout_seconds: float = 10

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.from_address)


class ServiceConfig(BaseModel):
    data_dir: Path | None = None
    database_url: str | None = None
    credits: CreditsConfig = Field(default_factory=CreditsConfig)
    allowance: AllowanceConfig = Field(default_factory=AllowanceConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """`/data/nanobanana` on a Space with persistent storage, else `./data` in the working directory."""
    if environ.get("SYSTEM") == "spaces" and Path("/data").is_dir():
        return Path("/data/nanobanana")
    return Path.cwd() / "data"


def load_service_config(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> ServiceConfig:
    """Read `configs/service.yaml` with environment overrides; `data_dir` is always resolved."""
    environ = os.environ if environ is None else environ
    config = load_section("service", ServiceConfig, aliases=ALIASES, environ=environ, directory=directory)
    data_dir = (config.data_dir or default_data_dir(environ)).expanduser().resolve()
    return config.model_copy(update={"data_dir": data_dir})


def analytics_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Gradio's own analytics: off unless the operator sets GRADIO_ANALYTICS_ENABLED to a true value."""
    environ = os.environ if environ is None else environ
    return environ.get("GRADIO_ANALYTICS_ENABLED", "False").strip().lower() in {"1", "true", "yes", "on"}
