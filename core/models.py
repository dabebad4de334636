"""ORM models. Every top-level row carries its organization; the integer `pk` orders
rows for cursor paging, the string `id` is the public, prefixed id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.ids import now

# The organization the embedded default creates on first run (and scripts act for).
LOCAL_ORG = "org-local"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ApiKey(Base):
    """Only a keyed hash of the key is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # The first characters, to recognise a key in listings without revealing it.
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class File(Base):
    __tablename__ = "files"
    # The maintenance loop looks for rejected uploads past their retention.
    __table_args__ = (Index("ix_files_status_created_at", "status", "created_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    problems: Mapped[list[Any]] = mapped_column(default=list)
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    # Detected (or named at upload) dataset format and file type; None when unreadable.
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    file_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Valid examples per task name (core.tasks); None when the examples have no task.
    tasks: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class LeasedWork:
    """The columns of work a worker runs under a lease (jobs, merges, evaluations: core.leases,
    core.leased_runs): when it was created, first started and ended; who runs it now and
    until when, renewed by its heartbeat (`attempt` counts the runs that claimed it); and
    when its message last reached the broker (None: it must be (re)sent). Times of the
    lease and the message are Unix seconds as floats."""

    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    enqueued_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Job(LeasedWork, Base):
    __tablename__ = "jobs"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    # The model as the request named it: a base model, or a fine-tuned model (or a
    # checkpoint) whose adapter the job continues training.
    model: Mapped[str] = mapped_column(String(512))
    # The base model the job trains on (a local model's name or a hub id): `model`
    # itself, or the base of the fine-tuned model it names, never a fine-tuned name.
    base_model: Mapped[str] = mapped_column(String(512))
    # The job whose adapter (final or a checkpoint's) this one starts from, if any, and
    # that adapter's checkpoint (a final adapter is its job's last checkpoint): what
    # deleting that model, job or checkpoint checks for (core.fine_tuned_models.users).
    source_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    source_checkpoint_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Plain ids, not foreign keys: as with OpenAI, a file may be deleted once no active
    # job uses it, and finished jobs keep naming it.
    training_file: Mapped[str] = mapped_column(String(64), index=True)
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # The request as validated by core.specs.JobSpec, with "auto" values resolved. Until
    # the pre-flight has counted the trainable examples, the hyperparameters that depend
    # on that count are provisional (resolved from the file's example count).
    spec: Mapped[dict[str, Any]] = mapped_column()
    # The request itself (JobSpec), which the pre-flight resolves again with the exact count.
    request: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    result_files: Mapped[list[Any]] = mapped_column(default=list)
    # Token statistics of the training data under the base model's tokenizer.
    statistics: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # What the worker actually ran with (device, compute dtype, ...), set at start.
    runtime: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # Where training is, written by the worker as it runs (core.jobs.record_progress):
    # step, total_steps, epochs, seconds_per_step and when it was measured (`at`).
    progress: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Set by POST .../pause on a running job; the worker checkpoints and stops.
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Where its training message goes (core.routing): {"queue", "gpus", "estimate"}; None
    # until routed (then the training queue every training worker consumes).
    placement: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class Worker(Base):
    """A training worker (a Celery worker process on the training queues) and its devices,
    advertised when it starts and renewed by its heartbeat (core.worker_registry). A
    service's row, of no organization."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # the Celery node name
    hostname: Mapped[str] = mapped_column(String(255))
    # The service's training queue it serves (the routed queues are named after it).
    training_queue: Mapped[str] = mapped_column(String(255))
    queues: Mapped[list[Any]] = mapped_column()
    # [{"index", "name", "memory_bytes"}] per GPU; [] for a CPU worker.
    devices: Mapped[list[Any]] = mapped_column()
    gpus: Mapped[int] = mapped_column(Integer)
    # The smallest of its GPUs' memory (what each job's GPU is sure to have); 0 without GPUs.
    gpu_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    host_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class JobAttempt(Base):
    """One claim of a job by a worker: the lease history that shows no two runs overlapped."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[float] = mapped_column(Float)
    resumed_from_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the attempt ended (for a lost worker: when its lease expired) and how.
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Checkpoint(Base):
    """A training checkpoint: the adapter alone (downloadable, usable by another job)
    and the full trainer state (adapter, optimizer, scheduler, RNG, step) to resume.
    A succeeded job's final adapter is its last checkpoint too (as OpenAI lists it): its
    `adapter_key` is the adapter artifact's object, and it has no state (nothing resumes
    a finished job)."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    adapter_key: Mapped[str] = mapped_column(String(255))
    adapter_sha256: Mapped[str] = mapped_column(String(64))
    adapter_bytes: Mapped[int] = mapped_column(BigInteger)
    state_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Preview(Base):
    """A preview of a file under a model's tokenizer (core.previews), computed by a
    pre-flight worker: the API asks for one, waits for its result, and serves a finished
    one again to the same question (`key`: file content, model version and options)."""

    __tablename__ = "file_previews"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64), index=True)
    # The question: model, n, max_seq_length, train_on_inputs.
    request: Mapped[dict[str, Any]] = mapped_column()
    # pending, then done (result) or failed (error: status, code, message, param).
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now, index=True)


class IdempotencyKey(Base):
    """A client's Idempotency-Key on a create endpoint and the response it got; a row
    without a response is a request still in progress."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("organization_id", "endpoint", "key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of what the request asked for, to tell a retry from a reuse of the key.
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now, index=True)


class JobEvent(Base):
    __tablename__ = "job_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "step", "split"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16), default="train")
    epoch: Mapped[float | None] = mapped_column(nullable=True)
    loss: Mapped[float | None] = mapped_column(nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(nullable=True)
    tokens_per_second: Mapped[float | None] = mapped_column(nullable=True)
    mean_token_accuracy: Mapped[float | None] = mapped_column(nullable=True)
    tokens_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Preference training (DPO) only: TRL's rewards/chosen, rewards/rejected, ...
    rewards_chosen: Mapped[float | None] = mapped_column(nullable=True)
    rewards_rejected: Mapped[float | None] = mapped_column(nullable=True)
    rewards_margins: Mapped[float | None] = mapped_column(nullable=True)
    rewards_accuracies: Mapped[float | None] = mapped_column(nullable=True)
    # Tokens in the loss so far (tokens_seen counts every token of the batches).
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Artifact(Base):
    """An immutable published output of a job (the adapter archive, ...)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Merge(LeasedWork, Base):
    """A merge operation: a trained adapter (a fine-tuned model or a checkpoint) merged
    into its full-precision base model by a worker, published as one archive, and, when
    `registered_as` is set, a base model of the organization once it succeeded."""

    __tablename__ = "merges"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    # The name that was merged (a fine-tuned model or a checkpoint) and what it resolved
    # to at creation: the job, its checkpoint (None: the final adapter), the adapter's
    # stored archive and method, and the base model the adapter applies to.
    model: Mapped[str] = mapped_column(String(512))
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    adapter_key: Mapped[str] = mapped_column(String(255))
    adapter_type: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(255))
    # The dtype asked for ("auto": bf16 on GPUs, the base's own on CPUs), and the base
    # weights merged into: "original", or "dequantized" (the 4-bit weights a QLoRA
    # adapter was trained against).
    dtype: Mapped[str] = mapped_column(String(16))
    base_weights: Mapped[str] = mapped_column(String(16))
    # The base model name it is registered as for the organization, once it succeeded.
    registered_as: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # What the worker merged with (device, dtype), set when it starts.
    runtime: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # The published archive (a .tar of one folder), once it succeeded.
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    storage_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class MergeEvent(Base):
    __tablename__ = "merge_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    merge_id: Mapped[str] = mapped_column(ForeignKey("merges.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class Webhook(Base):
    """An endpoint of the organization that receives its jobs' terminal events
    (core.webhooks), signed with `secret` (Standard Webhooks: "whsec_" and base64 of
    the key). The secret is kept as is: signing needs it, not a hash of it."""

    __tablename__ = "webhooks"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The event types it receives (core.webhooks.EVENT_TYPES).
    events: Mapped[list[Any]] = mapped_column()
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, written in the transaction of the
    job's transition, then sent by a worker (core.webhook_delivery) until it is delivered
    or its attempts run out. `body` is the exact JSON sent (and signed) on every attempt."""

    __tablename__ = "webhook_deliveries"
    # The maintenance loop looks for pending deliveries that are due.
    __table_args__ = (Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    # pending, then delivered, or failed (attempts ran out, or a permanent refusal).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due (Unix seconds); when its task message was last sent
    # (None: not yet); until when a worker's attempt holds it.
    next_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class WebhookAttempt(Base):
    """One HTTP request of a delivery and how it ended."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # The receiver's HTTP status; None when no response came (refused, network, timeout).
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Evaluation(LeasedWork, Base):
    """A fine-tuned model judged against its base model on a set of examples (a file of
    the organization, by default its job's validation file), run by a training worker
    under a lease as a merge is: loss and perplexity on the trained tokens, exact match
    and token F1 of greedy answers against the reference answers (core.evaluations)."""

    __tablename__ = "evaluations"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # The job's fine-tuned model and its adapter's stored archive, as resolved at
    # creation, and the base model it is compared with.
    model: Mapped[str] = mapped_column(String(512))
    adapter_key: Mapped[str] = mapped_column(String(255))
    base_model: Mapped[str] = mapped_column(String(512))
    file_id: Mapped[str] = mapped_column(String(64))
    # What was asked: at most this many examples (None: all), answers of at most
    # `max_tokens` tokens, the first `sample_size` examples shown side by side.
    max_examples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_tokens: Mapped[int] = mapped_column(Integer)
    sample_size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    runtime: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    # Once it succeeded: the figures of each model, the side-by-side sample, and the
    # ids of its result files (the per-example CSV).
    results: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    sample: Mapped[list[Any] | None] = mapped_column(nullable=True)
    result_files: Mapped[list[Any]] = mapped_column(default=list)


class InferenceServer(Base):
    """A running inference server (worker.inference): where the API sends generations.
    Rewritten by its heartbeat; one silent past `inference_dead_seconds` is ignored, and
    removed when it stops (or the next one at its URL replaces it)."""

    __tablename__ = "inference_servers"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(512), unique=True)
    device: Mapped[str] = mapped_column(String(32))
    device_name: Mapped[str] = mapped_column(String(255))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    # The base models it holds now (their sources), so the API prefers it for them.
    loaded_bases: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Checkpoint",
    "Evaluation",
    "File",
    "IdempotencyKey",
    "InferenceServer",
    "Job",
    "JobAttempt",
    "JobEvent",
    "JobMetric",
    "LeasedWork",
    "LOCAL_ORG",
    "Merge",
    "MergeEvent",
    "Organization",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
