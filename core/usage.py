"""What an organization stores, by kind, and its storage quota.

Every kind of stored object is one entry of `STORED`: a query for the bytes of that
kind the organization holds. The quota counts their sum, so a new kind of stored object
(merged models, say) is counted once it has its entry here. Rejected uploads are not
counted: they are kept only for FTSVC_REJECTED_FILE_RETENTION_SECONDS, so that their
problems can be read, and then removed (core.files.remove_expired_rejected)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.orm import Session

from core.errors import PayloadTooLarge, ServiceError, StorageQuotaExceeded
from core.files import ERROR, RESULTS_PURPOSE, UPLOAD_PURPOSE
from core.models import Artifact, Checkpoint, File, Job, Merge
from core.settings import get_settings


def _file_bytes(org_id: str, purpose: str, rejected: bool = False) -> ScalarSelect[int]:
    status = File.status == ERROR if rejected else File.status != ERROR
    query = select(func.coalesce(func.sum(File.bytes), 0)).where(
        File.organization_id == org_id, File.purpose == purpose, status
    )
    return query.scalar_subquery()


def _uploads(org_id: str) -> ScalarSelect[int]:
    return _file_bytes(org_id, UPLOAD_PURPOSE)


def _result_files(org_id: str) -> ScalarSelect[int]:
    return _file_bytes(org_id, RESULTS_PURPOSE)


def _checkpoints(org_id: str) -> ScalarSelect[int]:
    total = func.coalesce(func.sum(Checkpoint.adapter_bytes + Checkpoint.state_bytes), 0)
    # A final checkpoint (no state) is the published adapter's object, counted there.
    resumable = Checkpoint.state_key.is_not(None)
    query = select(total).join(Job, Job.id == Checkpoint.job_id).where(Job.organization_id == org_id, resumable)
    return query.scalar_subquery()


def _adapters(org_id: str) -> ScalarSelect[int]:
    query = (
        select(func.coalesce(func.sum(Artifact.bytes), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.organization_id == org_id)
    )
    return query.scalar_subquery()


def _merged_models(org_id: str) -> ScalarSelect[int]:
    query = select(func.coalesce(func.sum(Merge.bytes), 0)).where(
        Merge.organization_id == org_id, Merge.storage_key.is_not(None)
    )
    return query.scalar_subquery()


def _rejected_uploads(org_id: str) -> ScalarSelect[int]:
    return _file_bytes(org_id, UPLOAD_PURPOSE, rejected=True)


@dataclass(frozen=True)
class StoredKind:
    description: str
    # The organization's bytes of this kind, as a scalar subquery (all kinds: one query).
    bytes_of: Callable[[str], ScalarSelect[int]]


# Each kind of stored object the quota counts.
STORED: dict[str, StoredKind] = {
    "uploads": StoredKind("uploaded files that passed validation", _uploads),
    "result_files": StoredKind("the jobs' result files (metrics CSVs, TensorBoard events)", _result_files),
    "checkpoints": StoredKind("checkpoints: each one's adapter and trainer state", _checkpoints),
    "adapters": StoredKind("the adapters published by succeeded jobs", _adapters),
    "merged_models": StoredKind("the merged models published by succeeded merges", _merged_models),
}


@dataclass(frozen=True)
class StorageUsage:
    by_kind: dict[str, int]
    rejected_uploads: int  # stored until they expire, not counted
    limit: int

    @property
    def used(self) -> int:
        return sum(self.by_kind.values())

    @property
    def available(self) -> int:
        return max(self.limit - self.used, 0)


def storage_usage(session: Session, org_id: str) -> StorageUsage:
    """The organization's stored bytes by kind (one query) and its quota."""
    kinds = list(STORED)
    *counted, rejected = session.execute(
        select(*(STORED[k].bytes_of(org_id) for k in kinds), _rejected_uploads(org_id))
    ).one()
    by_kind = {kind: int(size) for kind, size in zip(kinds, counted, strict=True)}
    return StorageUsage(by_kind, int(rejected), get_settings().max_stored_bytes_per_org)


def _quota_exceeded(usage: StorageUsage, what: str, param: str | None) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"{what} would exceed the organization's storage quota of {usage.limit} bytes ({usage.used} used: "
        + ", ".join(f"{kind} {size}" for kind, size in usage.by_kind.items())
        + "); delete files, checkpoints or finished jobs to make room (GET /v1/organization/usage shows the usage)",
        param=param,
    )


def upload_allowance(session: Session, org_id: str) -> tuple[int, ServiceError]:
    """How many bytes the next upload may have, and the error that says which limit
    stops it: the per-file limit, or what is left of the organization's storage quota."""
    usage, per_file = storage_usage(session, org_id), get_settings().max_upload_bytes
    if usage.available < per_file:
        return usage.available, _quota_exceeded(usage, "The file", "file")
    return per_file, PayloadTooLarge(f"The file is larger than the limit of {per_file} bytes", param="file")


def check_room_for_outputs(session: Session, org_id: str, outputs: str = "A new job's outputs") -> None:
    """A new job stores checkpoints, an adapter and result files (a merge, a merged
    model): refused once the organization is at its quota (jobs and merges already
    running are not stopped by it)."""
    usage = storage_usage(session, org_id)
    if usage.available == 0:
        raise _quota_exceeded(usage, outputs, None)
