"""Uploaded files: registered after their bytes are stored, validated once, and
deleted only when no active job uses them."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.datasets import DataFile, as_file_type, detect_file_type, validate
from core.db import session_scope
from core.errors import Conflict, InvalidRequest, NotFound
from core.formats import FORMATS, as_format_name
from core.ids import now
from core.models import File, Job
from core.paging import page
from core.settings import get_settings
from core.states import ACTIVE
from core.storage import ObjectStore, StoredObject, get_storage

UPLOAD_PURPOSE, RESULTS_PURPOSE = "fine-tune", "fine-tune-results"
PURPOSES = (UPLOAD_PURPOSE,)
PROCESSED, ERROR = "processed", "error"


def check_purpose(purpose: str | None) -> str:
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}", param="purpose", code="invalid_purpose"
        )
    return purpose


def check_format(format_name: str | None) -> str:
    if format_name in (None, ""):
        return "auto"
    if format_name not in ("auto", *FORMATS):
        raise InvalidRequest(
            f"format must be auto or one of {', '.join(FORMATS)}; got {format_name!r}",
            param="format",
            code="invalid_format",
        )
    return format_name


def register_upload(
    session: Session,
    storage: ObjectStore,
    org_id: str,
    file_id: str,
    filename: str,
    purpose: str,
    stored: StoredObject,
    format_name: str = "auto",
) -> File:
    """Validate stored bytes and record the file, as `processed` or as `error` with
    the first problems and their line (or row) numbers."""
    with storage.open(stored.key) as stream:
        file_type = detect_file_type(filename, stream.read(512))
        stream.seek(0)
        report = validate(stream, file_type, format_name)
    file = File(
        id=file_id,
        organization_id=org_id,
        filename=filename,
        purpose=purpose,
        bytes=stored.bytes,
        sha256=stored.sha256,
        storage_key=stored.key,
        status=PROCESSED if report.ok else ERROR,
        status_details=None if report.ok else report.summary(),
        problems=report.problems_json(),
        n_examples=report.n_examples,
        format=report.format,
        file_type=file_type,
        tasks=report.tasks.as_dict(),
    )
    session.add(file)
    session.flush()
    return file


def get_file(session: Session, org_id: str, file_id: str, param: str = "file_id") -> File:
    file = session.scalar(select(File).where(File.id == file_id, File.organization_id == org_id))
    if file is None:
        raise NotFound(f"No file with id {file_id!r}", param=param)
    return file


def usable_for_training(session: Session, org_id: str, file_id: str, param: str) -> File:
    """A file that can train (or be previewed): uploaded for fine-tuning and valid."""
    file = get_file(session, org_id, file_id, param=param)
    if file.purpose not in PURPOSES:  # a job's results file holds metrics, not examples
        raise InvalidRequest(
            f"File {file_id} has purpose {file.purpose!r}; only files uploaded with purpose 'fine-tune' hold "
            "training data",
            param=param,
            code="invalid_file",
        )
    if file.status != PROCESSED:
        raise InvalidRequest(
            f"File {file_id} failed validation and cannot be used: {file.status_details}",
            param=param,
            code="invalid_file",
            details=file.problems,
        )
    return file


def data_file(file: File) -> DataFile:
    """Where a validated file's examples are and how to read them."""
    file_type, data_format = as_file_type(file.file_type), as_format_name(file.format)
    if file.status != PROCESSED or file_type is None or data_format is None:
        raise InvalidRequest(f"File {file.id} holds no validated examples", param="file_id", code="invalid_file")
    return DataFile(get_storage(), file.storage_key, file_type, data_format)


def list_files(
    session: Session, org_id: str, after: str | None, limit: int, purpose: str | None = None
) -> tuple[list[File], bool]:
    stmt = select(File).where(File.organization_id == org_id)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    return page(session, stmt, File, after, limit)


def expires_at(file: File) -> int | None:
    """When a rejected upload is removed (Unix seconds); None: kept until deleted."""
    if file.status != ERROR:
        return None
    return file.created_at + int(get_settings().rejected_file_retention_seconds)


def remove_expired_rejected(storage: ObjectStore, batch: int = 100) -> int:
    """Delete rejected uploads older than the retention, rows first (committed), then
    their bytes; returns how many. A rejected file cannot train, so no job needs it.
    Batches keep each transaction short; all that expired goes in one call, so a backlog
    never outlives a sweep."""
    cutoff = now() - int(get_settings().rejected_file_retention_seconds)
    removed = 0
    while True:
        with session_scope() as session:
            expired = session.scalars(
                select(File).where(File.status == ERROR, File.created_at <= cutoff).order_by(File.pk).limit(batch)
            ).all()
            for file in expired:
                session.delete(file)
        for file in expired:
            storage.delete(file.storage_key)
        removed += len(expired)
        if len(expired) < batch:
            return removed


def delete_file(storage: ObjectStore, org_id: str, file_id: str) -> None:
    """Delete the row and commit, then the bytes: a crash in between leaves at worst
    unreferenced bytes, never a row whose bytes are gone."""
    with session_scope() as session:
        file = get_file(session, org_id, file_id)
        job_id = active_job_using(session, file_id)
        if job_id is not None:
            raise Conflict(f"File {file_id} is used by active job {job_id}; cancel it or wait", code="file_in_use")
        session.delete(file)
    storage.delete(file.storage_key)


def active_job_using(session: Session, file_id: str) -> str | None:
    stmt = select(Job.id).where(
        or_(Job.training_file == file_id, Job.validation_file == file_id),
        Job.status.in_([s.value for s in ACTIVE]),
    )
    return session.scalar(stmt.limit(1))


def ingest_upload(
    storage: ObjectStore,
    org_id: str,
    file_id: str,
    filename: str,
    purpose: str | None,
    stored: StoredObject,
    format_name: str | None = None,
) -> File:
    """Register stored bytes as a file and commit; on any failure the bytes are removed
    again, so an upload leaves either a file row with its bytes or nothing."""
    try:
        with session_scope() as session:
            file = register_upload(
                session, storage, org_id, file_id, filename, check_purpose(purpose), stored, check_format(format_name)
            )
    except BaseException:
        storage.delete(stored.key)
        raise
    return file


def register_result(session: Session, org_id: str, file_id: str, filename: str, stored: StoredObject) -> File:
    """A file the service produced (a job's metrics CSV)."""
    file = File(
        id=file_id,
        organization_id=org_id,
        filename=filename,
        purpose=RESULTS_PURPOSE,
        bytes=stored.bytes,
        sha256=stored.sha256,
        storage_key=stored.key,
        status=PROCESSED,
        problems=[],
    )
    session.add(file)
    return file
