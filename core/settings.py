"""Service settings. The defaults are the embedded single-machine mode: a SQLite file,
a broker that needs no server (kombu's SQLAlchemy transport on another SQLite file) and
local directories for artifacts and models, all under one data directory."""

from __future__ import annotations

import re
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class WorkerDevice(BaseModel):
    """A GPU as FTSVC_WORKER_DEVICES describes it, in place of the ones nvidia-smi finds."""

    name: str
    memory_gib: float = Field(gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTSVC_", extra="ignore")

    # Unset (or empty) values below data_dir are derived from it (`_derive_from_data_dir`);
    # set the URLs to run on Postgres and Redis.
    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    models_root: Path = Path("var/models")
    storage_root: Path = Path("var/storage")
    # `s3://bucket/prefix`: artifacts and uploads on an S3-compatible store instead of
    # storage_root (core.s3_storage), the one thing hosts share besides the database and
    # the broker. Credentials, endpoint and region: boto3's own environment (AWS_*).
    storage_url: str = ""
    # Where a host keeps the organizations' registered models (merged models, stored as
    # archives in artifact storage), extracted on their first use on the host.
    model_cache_root: Path = Path("var/model-cache")
    # Where a training worker keeps pre-quantized 4-bit copies of the bases it trained on
    # (worker.training.base_cache), and how many (the least recently used go); 0: none.
    base_cache_dir: Path = Path("var/base-cache")
    base_cache_entries: int = Field(default=2, ge=0)

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

    # GPU-aware routing (core.routing, core.worker_registry). A training worker advertises
    # its devices and renews its row every worker_heartbeat_seconds; one not heard from
    # for worker_liveness_seconds is not live.
    worker_heartbeat_seconds: float = 10.0
    worker_liveness_seconds: float = 30.0
    # The GPUs this worker advertises and hands out, instead of those it finds: a JSON
    # list of {"name", "memory_gib"}; [] for a CPU worker on a GPU host. For operators
    # (a share of a host) and tests (GPU inventories on a CPU machine).
    worker_devices: list[WorkerDevice] | None = None
    # Memory classes of the routed queues, in GiB per GPU: a job goes to the smallest
    # class that holds its estimate, a worker serves every class its GPUs hold. Just
    # under what common cards report (T4 14.7, L4/A10 22.0, 4090 23.6, A100-40 39.4,
    # L40S 44.4, A6000 47.5, A100-80/H100 79.1, H100 NVL 93.0, H200 139.8, B200 178.4).
    gpu_memory_classes_gib: list[int] = [14, 22, 23, 39, 44, 47, 79, 93, 139, 178]
    # A job whose estimate, besides the fixed CUDA overhead, is at most this on one GPU is
    # tiny: it goes to the training queue itself, which every training worker serves,
    # CPU workers (the embedded mode, the tests) included.
    tiny_job_gib: float = 1.0

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
    # Standby job processes (worker.standbys): with each job, the worker starts the next
    # job's process ahead on the same GPU, torch and the training stack imported, so the
    # next job skips those seconds. "auto": on a worker with GPUs; off on a CPU-only one,
    # where an idle standby's half a gigabyte of memory counts more than the seconds.
    standby_process: Literal["auto", "on", "off"] = "auto"
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

    # Webhooks (core.webhooks): the Celery queue of their deliveries (empty: the pre-flight
    # queue, whose light worker sends them); how long a receiver may take to answer; how
    # many attempts a delivery gets, the first retry's delay (each next one 4 times longer,
    # at most 6 hours, +-25% jitter).
    webhook_queue: str = ""
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_retry_base_seconds: float = 30.0
    # Endpoints must be https and must not resolve to loopback, private, link-local,
    # unique-local, multicast or reserved addresses (the service's own networks). For
    # development and tests: allow http, and networks (comma-separated CIDRs such as
    # "127.0.0.1/32") that endpoints may resolve to after all.
    webhook_allow_http: bool = False
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, url: str) -> str:
        # Refused at start-up, not at the first upload. Bucket names: S3's rules.
        if url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/].*)?/?", url):
            raise ValueError(f"FTSVC_STORAGE_URL must be s3://bucket or s3://bucket/prefix (got {url!r})")
        return url.rstrip("/")

    # Log lines as plain text or as one JSON object each (for a log collector); either
    # way a job's (or merge's) lines carry its id (core.logs).
    log_format: Literal["text", "json"] = "text"
    # GET /metrics (Prometheus) asks for `Authorization: Bearer <metrics_token>` when
    # this is set, and is open when it is empty (the embedded mode listens on localhost).
    metrics_token: str = ""
    # GET /readyz: how long each dependency (database, broker, store) may take to answer.
    readiness_timeout_seconds: float = 2.0
    # Inference servers (`ftsvc inference`, one per device): each records itself in the
    # database every inference_heartbeat_seconds; the API ignores one silent for
    # inference_dead_seconds. A server keeps base models loaded within its memory budget
    # (bytes; 0: 80% of the GPU, half of the host's memory on CPU), evicting the least
    # recently used; at most inference_max_adapters adapters stay loaded per base.
    inference_heartbeat_seconds: float = 5.0
    inference_dead_seconds: float = 30.0
    inference_memory_budget_bytes: int = 0
    inference_max_adapters: int = 16
    # Requests generated together (one batch of a base model), requests waiting beyond
    # them (more: 429), and how long one may wait for its turn (longer: 503).
    inference_max_batch: int = 8
    inference_max_queue: int = 64
    inference_queue_timeout_seconds: float = 60.0
    # How long the API waits for an inference server's next bytes (a base model's first
    # load counts: an 8B model takes a minute or two from disk).
    inference_read_timeout_seconds: float = 600.0
    # Threads of an inference server on the CPU: a decoding step of a small model is too
    # short to split, and a thread per core spin-waits against the API and the workers
    # of the same host (measured: 20x slower for the tiny model on a busy 2-core host).
    inference_cpu_threads: int = 1

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
            "base_cache_dir": Path(values.get("base_cache_dir") or data_dir / "base-cache").resolve(),
            "webhook_queue": values.get("webhook_queue") or values.get("preflight_queue") or "preflight",
        }

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [ip_network(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
