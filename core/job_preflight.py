"""A job's pre-flight, run by a pre-flight worker (never the API process): load the base
model's tokenizer, check its chat template and EOS, count the training data's tokens,
resolve the hyperparameters that depend on the number of trainable examples, estimate
its GPU memory and choose its queue (core.routing), and move the job from
`validating_files` to `queued`, or to `failed` with an error that says what to
fix. Preference pairs (DPO) are counted as their trainer tokenizes them
(core.preferences). transformers is imported (lazily, by core.tokenization) only on
this path."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core import files, registered_models, registry, routing, worker_registry
from core.datasets import DataFile, examples_of
from core.db import session_scope
from core.errors import InvalidRequest, ServiceError
from core.events import add_event
from core.jobs import publish, transition, waiting_job
from core.model_cache import materialize
from core.preferences import check_tools_render, pairs_of, preference_statistics
from core.specs import JobSpec, ResolvedSpec, resolve_method, training_examples
from core.states import JobStatus
from core.tokenization import prepare_tokenizer, statistics


@lru_cache(maxsize=256)
def _token_statistics(
    model_ref: registry.ModelRef,
    model_version: float,
    sha256: str,
    data: DataFile,
    max_seq_length: int,
    train_on_inputs: bool,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The tokenizer's checks and the data's token statistics: the same for the same
    file (by content), model (as it is on disk) and settings, so a sweep of jobs over
    one file pays for them once per pre-flight worker."""
    prepared = prepare_tokenizer(model_ref)
    if data.format == "preference":
        check_tools_render(prepared, pairs_of(data))
        stats = preference_statistics(prepared, pairs_of(data), max_seq_length)
    else:
        stats = statistics(prepared, examples_of(data), max_seq_length, train_on_inputs)
    stats |= {"chat_template": prepared.template_source, "eos_appended": prepared.append_eos}
    return stats, tuple(prepared.notes())


@dataclass(frozen=True)
class _Pending:
    """What a pre-flight reads from the job before the slow part, outside any transaction."""

    job_id: str
    request: JobSpec
    spec: ResolvedSpec
    training_id: str
    training: DataFile
    sha256: str
    tasks: dict[str, int] | None  # the training file's examples per task
    model_ref: registry.ModelRef


def _pending(job_id: str) -> _Pending | None:
    """The job if it still waits for its pre-flight; a duplicate message, or one for a
    job cancelled meanwhile, gets None and is dropped."""
    with session_scope() as session:
        job = waiting_job(session, job_id, JobStatus.VALIDATING_FILES)
        if job is None:
            return None
        request = JobSpec.model_validate(job.request)
        training = files.get_file(session, job.organization_id, job.training_file, param="training_file")
        add_event(
            session,
            job.id,
            f"Pre-flight started on {socket.gethostname()}: reading {training.id} with the tokenizer of "
            f"{job.base_model}",
        )
        return _Pending(
            job.id,
            request,
            ResolvedSpec.model_validate(job.spec),
            training.id,
            files.data_file(training),
            training.sha256,
            training.tasks,
            # The base model (the job's `model` may be a fine-tuned model of it).
            registered_models.resolve_for(session, job.organization_id, job.base_model),
        )


def _measure(p: _Pending) -> tuple[dict[str, Any], list[str]]:
    """The statistics of the training data under the model's tokenizer; refuses data
    with nothing left to train on."""
    model_ref = p.model_ref
    max_seq_length = p.request.qlora.training.max_seq_length
    cached, notes = _token_statistics(
        model_ref,
        registry.modified_at(model_ref),
        p.sha256,
        p.training,
        max_seq_length,
        p.request.qlora.data.train_on_inputs,
    )
    stats = dict(cached)  # the cached value is shared: never changed in place
    if p.tasks:
        stats["tasks"] = p.tasks
    if stats["trainable_tokens"] == 0:
        raise InvalidRequest(
            f"None of the {stats['examples']} examples of {p.training_id} has a trained token left after "
            f"truncation to max_seq_length={max_seq_length} (longest example: {stats['tokens_max']} tokens); "
            "raise qlora.training.max_seq_length or shorten the prompts",
            param="qlora.training.max_seq_length",
            code="no_trainable_tokens",
        )
    return stats, list(notes)


def _with_counted_examples(p: _Pending, stats: dict[str, Any]) -> ResolvedSpec:
    """The job's spec with the hyperparameters resolved from the examples that really
    train (the provisional ones counted every example of the file)."""
    trainable = stats["examples"] - stats["examples_without_trainable_tokens"]
    n = training_examples(trainable, p.request.qlora.data.validation_split or 0.0)
    method = resolve_method(p.request.method, p.request.hparams, n, p.request.qlora.training)
    return p.spec.model_copy(update={"method": method})


@lru_cache(maxsize=64)
def _model_config(model_ref: registry.ModelRef, model_version: float) -> dict[str, Any] | None:
    """The base model's config.json: on this host (a local model, a registered one's
    extracted files), else through transformers (a hub model); None when unreadable."""
    path = Path(materialize(model_ref, weights=False).source) / "config.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    from transformers import AutoConfig

    try:
        return dict(AutoConfig.from_pretrained(model_ref.source, trust_remote_code=False).to_dict())
    except Exception:  # the tokenizer loaded, so the model exists: route it as an unknown shape
        return None


def _place(p: _Pending, spec: ResolvedSpec) -> tuple[routing.Placement, bool]:
    """The job's placement (a refusal when no live worker can run it), and whether no
    training worker is live at all."""
    estimate = routing.estimate_job(_model_config(p.model_ref, registry.modified_at(p.model_ref)), spec)
    with session_scope() as session:
        live = worker_registry.live_workers(session)
    return routing.check_servable(estimate, spec.qlora.resources.gpus, live), not live


def _queue(
    p: _Pending, stats: dict[str, Any], notes: list[str], spec: ResolvedSpec, placement: routing.Placement, alone: bool
) -> bool:
    with session_scope() as session:
        add_event(
            session,
            p.job_id,
            f"Training data: {stats['examples']} examples, {stats['tokens_total']} tokens "
            f"({stats['trainable_tokens']} trained), {stats['truncated_examples']} truncated at "
            f"max_seq_length={stats['max_seq_length']}",
            data=stats,
        )
        for note in notes:
            add_event(session, p.job_id, note, level="warn")
        add_event(
            session, p.job_id, f"Routed to queue {placement.queue}: {placement.describe()}", data=placement.as_json()
        )
        if alone:
            message = routing.NO_LIVE_WORKER.format(queue=placement.queue, need=placement.describe())
            add_event(session, p.job_id, message, level="warn")
        return transition(
            session,
            p.job_id,
            JobStatus.QUEUED,
            message="Validated training files; job queued",
            statistics=stats,
            spec=spec.model_dump(mode="json"),
            placement=placement.as_json(),
            enqueued_at=None,
        )


def fail(job_id: str, code: str, message: str, param: str | None, data: dict[str, Any] | None = None) -> None:
    """End a job whose pre-flight failed, with the error a user reads on the job (and
    the refusal's figures, if any, on its event)."""
    with session_scope() as session:
        transition(
            session,
            job_id,
            JobStatus.FAILED,
            level="error",
            message=f"Pre-flight failed ({code}): {message}",
            data=data or None,
            error={"code": code, "message": message, "param": param},
        )


def run_preflight(job_id: str) -> None:
    """The pre-flight of one job, then its training message (after the commit). A
    refusal of the data or the model fails the job with the refusal's code, message
    and param, as job creation's own 400s say them; anything else propagates to the
    caller, which fails the job with `preflight_failed`."""
    try:
        pending = _pending(job_id)
        if pending is None:
            return
        stats, notes = _measure(pending)
        spec = _with_counted_examples(pending, stats)
        placement, alone = _place(pending, spec)
    except ServiceError as refusal:
        fail(job_id, refusal.code, refusal.message, refusal.param, refusal.extra)
        return
    if _queue(pending, stats, notes, spec, placement, alone):
        publish(job_id)
