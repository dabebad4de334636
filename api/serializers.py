"""Database rows to the OpenAI wire shapes (plus this service's extension fields)."""

from __future__ import annotations

from typing import Any

from core.jobs import fine_tuned_model_name
from core.models import Artifact, Checkpoint, File, Job, JobEvent, JobMetric


def as_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data and "id" in data[0] else None,
        "last_id": data[-1]["id"] if data and "id" in data[-1] else None,
    }


def file_wire(f: File) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "expires_at": None,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": f.status_details,
        "sha256": f.sha256,
        "format": f.format,
        "file_type": f.file_type,
        "examples": f.n_examples,
        "problems": f.problems,
    }


def job_wire(j: Job) -> dict[str, Any]:
    spec = j.spec
    hyperparameters = spec["method"]["supervised"]["hyperparameters"]
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": j.created_at,
        "finished_at": j.finished_at,
        "model": j.model,
        "fine_tuned_model": j.fine_tuned_model,
        "organization_id": j.organization_id,
        "status": j.status,
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "hyperparameters": hyperparameters,
        "method": spec["method"],
        "seed": j.seed,
        "user_provided_suffix": j.suffix,
        "metadata": j.metadata_,
        "result_files": j.result_files,
        "trained_tokens": j.trained_tokens,
        "error": j.error,
        "estimated_finish": None,
        "integrations": [],
        "qlora": spec["qlora"],
        "statistics": j.statistics,
        "runtime": j.runtime,
        "attempts": j.attempt,
        "pause_requested": j.pause_requested,
        "from_checkpoint": spec.get("from_checkpoint"),
    }


def event_wire(e: JobEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "fine_tuning.job.event",
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "type": e.type,
        "data": e.data,
    }


def metric_wire(m: JobMetric) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.metric",
        "step": m.step,
        "split": m.split,
        "epoch": m.epoch,
        "loss": m.loss,
        "learning_rate": m.learning_rate,
        "grad_norm": m.grad_norm,
        "tokens_per_second": m.tokens_per_second,
        "mean_token_accuracy": m.mean_token_accuracy,
        "tokens_seen": m.tokens_seen,
        "created_at": m.created_at,
    }


def download_headers(filename: str, size: int, sha256: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(size),
        "X-Artifact-SHA256": sha256,
    }


def artifact_headers(a: Artifact) -> dict[str, str]:
    return download_headers(a.filename, a.bytes, a.sha256)


def checkpoint_headers(c: Checkpoint) -> dict[str, str]:
    return download_headers(f"{c.job_id}-step-{c.step}-adapter.tar.gz", c.adapter_bytes, c.adapter_sha256)


def checkpoint_wire(job: Job, c: Checkpoint) -> dict[str, Any]:
    """OpenAI's fine_tuning.job.checkpoint, and the adapter's size and digest."""
    return {
        "id": c.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.created_at,
        "fine_tuning_job_id": job.id,
        "fine_tuned_model_checkpoint": f"{fine_tuned_model_name(job)}:ckpt-step-{c.step}",
        "step_number": c.step,
        "metrics": c.metrics,
        "adapter_bytes": c.adapter_bytes,
        "adapter_sha256": c.adapter_sha256,
    }
