"""Published job outputs (the adapter archive): immutable, with size and sha256."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.ids import new_id
from core.jobs import get_job
from core.models import Artifact
from core.storage import StoredObject

ADAPTER = "adapter"
KINDS = (ADAPTER,)


def record_artifact(session: Session, job_id: str, kind: str, filename: str, stored: StoredObject) -> Artifact:
    artifact = Artifact(
        id=new_id("ftart"),
        job_id=job_id,
        kind=kind,
        filename=filename,
        storage_key=stored.key,
        sha256=stored.sha256,
        bytes=stored.bytes,
    )
    session.add(artifact)
    return artifact


def get_artifact(session: Session, org_id: str, job_id: str, kind: str) -> Artifact:
    job = get_job(session, org_id, job_id)
    if kind not in KINDS:
        raise NotFound(f"Unknown artifact kind {kind!r}; available kinds: {', '.join(KINDS)}", param="kind")
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == kind))
    if artifact is None:
        raise NotFound(
            f"Job {job_id} has no {kind} artifact (status: {job.status}); it is published when training succeeds",
            param="kind",
            code="artifact_not_ready",
        )
    return artifact
