"""Service settings. The defaults are the embedded single-machine mode: a SQLite file,
a broker that needs no server (kombu's SQLAlchemy transport on another SQLite file) and
local directories for artifacts and models, all under one data directory."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTSVC_", extra="ignore")

    # Unset (or empty) values below data_dir are derived from it (`_derive_from_data_dir`);
    # set the URLs to run on Postgres and Redis.
    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    models_root: Path = Path("var/models")
    storage_root: Path = Path("var/storage")
    # Where a host keeps the organizations' registered models (merged models, stored as
    # archives in artifact storage), extracted on their first use on the host.
    model_cache_root: Path = Path("var/model-cache")

    max_upload_bytes: int = 1 << 30
    # Per organization: jobs queued or running at once, and bytes stored (uploads, result
    # files, checkpoints, adapters: core.usage).
    max_active_jobs_per_org: int = 8
    max_stored_bytes_per_org: int = 100 << 30
    # The secret API keys are hashed with (HMAC-SHA256). Required outside the embedded
    # mode; the embedded mode keeps a generated one in the data directory.
    key_pepper: str = ""
    # Hub ids ("org/name") are accepted and downloaded by the worker; machines without
    # network can switch them off so a typo fails at submission, not in the worker.
    allow_hub_models: bool = True
    training_queue: str = "training"
    # Job pre-flight and previews (the base model's tokenizer over the data): CPU work,
    # on its own queue so that it never waits behind a training job.
    preflight_queue: str = "preflight"
    # How long a preview request waits for a pre-flight worker's answer before 503.
    preview_timeout_seconds: float = 60.0
    # How often an API process polls the database for new events of the jobs its event
    # streams follow (one poll for all of them: api.streams).
    event_poll_seconds: float = 0.5
    # An API process remembers which organization an API key belongs to for this long,
    # so most requests authenticate without a query; it is also how long a revoked key
    # may still be accepted by a process that saw it just before. 0: no cache.
    auth_cache_seconds: float = 5.0

    # A worker holds a lease on its job and renews it every lease_seconds / 4; a lease
    # not renewed in time means the worker is gone, and the job resumes elsewhere from
    # its last checkpoint, at most max_attempts runs in all.
    lease_seconds: float = 60.0
    # Jobs with checkpoint_steps "auto" save a checkpoint after this much training time:
    # what a lost worker can cost, against about 3 s per save of an 8B adapter's state.
    checkpoint_interval_seconds: float = 600.0
    max_attempts: int = 3
    # A job with qlora.resources.gpus above 1 on a worker without CUDA: refused (failed
    # with a clear error) unless this allows its ranks to train on the CPU, each a
    # process of its own over gloo (tests and development).
    cpu_ranks: bool = False
    # The largest safetensors file of a merged model (transformers' max_shard_size).
    merge_max_shard_size: str = "5GB"
    # A worker asked to stop (SIGTERM, SIGINT) lets its job finish the current step, save
    # a checkpoint and go back to the queue; a job process still busy after this long is
    # killed (its job then waits for the reaper). Cover a step, a checkpoint save, and
    # model loading if a stop may come then. docker-compose.yml's stop_grace_period
    # must be a little longer.
    worker_stop_grace_seconds: float = 120.0
    # Redis redelivers a message not acknowledged within this time; a long job's second
    # delivery is harmless (the lease refuses it), so it only bounds redelivery delay.
    broker_visibility_timeout: float = 3600.0
    # The API's maintenance loop (reaper, queue reconciler, clean-ups): seconds between
    # rounds; 0 turns it off (then run `ftsvc maintain` somewhere).
    maintenance_interval_seconds: float = 5.0
    # Temporary objects (uploads in progress) untouched this long belong to a process
    # that died: they are removed.
    orphan_grace_seconds: float = 3600.0
    # Uploads that failed validation are kept this long (their problems stay readable at
    # GET /v1/files/{id}; they cannot train), then the maintenance loop removes them.
    # They do not count against the storage quota meanwhile.
    rejected_file_retention_seconds: float = 7 * 86400.0
    # How long an Idempotency-Key is remembered, and after how long a request still in
    # progress under a key is presumed dead.
    idempotency_ttl_seconds: int = 86400
    idempotency_pending_seconds: int = 3600

    @model_validator(mode="before")
    @classmethod
    def _derive_from_data_dir(cls, values: dict[str, Any]) -> dict[str, Any]:
        # Empty counts as unset: FTSVC_MODELS_ROOT= means the default, not the current directory.
        data_dir = Path(values.get("data_dir") or "var").resolve()
        return values | {
            "data_dir": data_dir,
            "database_url": values.get("database_url") or f"sqlite:///{data_dir / 'ftsvc.db'}",
            "broker_url": values.get("broker_url") or f"sqla+sqlite:///{data_dir / 'broker.db'}",
            "models_root": Path(values.get("models_root") or data_dir / "models").resolve(),
            "storage_root": Path(values.get("storage_root") or data_dir / "storage").resolve(),
            "model_cache_root": Path(values.get("model_cache_root") or data_dir / "model-cache").resolve(),
        }

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
