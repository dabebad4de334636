"""Organizations and API keys. A key is high-entropy with a recognisable prefix, shown
once, and stored only as an HMAC-SHA256 under a server secret (the pepper), so a leaked
database reveals no usable key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db import read_scope
from core.errors import NotFound, Unauthorized
from core.ids import new_id, now
from core.models import LOCAL_ORG, ApiKey, Organization
from core.settings import get_settings

KEY_PREFIX = "ftsk-"
LOCAL_KEY_FILE = "local-api-key"


@lru_cache
def _pepper() -> bytes:
    settings = get_settings()
    if settings.key_pepper:
        return settings.key_pepper.encode()
    if not settings.is_sqlite:
        raise RuntimeError("FTSVC_KEY_PEPPER must be set when the service runs on a shared database")
    path = settings.data_dir / "key-pepper"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def hash_key(key: str) -> str:
    return hmac.new(_pepper(), key.encode(), hashlib.sha256).hexdigest()


def create_organization(session: Session, name: str, org_id: str | None = None) -> Organization:
    org = Organization(id=org_id or new_id("org"), name=name)
    session.add(org)
    session.flush()
    return org


def take_turn(session: Session, org_id: str) -> None:
    """Lock the organization's row until the transaction ends: the checks of concurrent
    creations for one organization (its quota, a name it is giving) take turns, so they
    cannot all pass against the same state. A write, not a SELECT ... FOR UPDATE: it locks
    the row on Postgres and, on SQLite, takes the database's write lock before the checks
    read anything."""
    session.execute(update(Organization).where(Organization.id == org_id).values(id=Organization.id))


def create_key(session: Session, org_id: str, name: str = "default") -> tuple[ApiKey, str]:
    """A new key for an organization: the row, and the key itself (shown only now)."""
    if session.scalar(select(Organization.id).where(Organization.id == org_id)) is None:
        raise NotFound(f"No organization with id {org_id!r}", param="organization")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), organization_id=org_id, name=name, prefix=key[:12], hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def revoke_key(session: Session, key_id: str) -> None:
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if row is None:
        raise NotFound(f"No API key with id {key_id!r}", param="key_id")
    row.revoked_at = row.revoked_at or now()


def bearer_key(credentials: str | None) -> str:
    """The key a request sent as `Authorization: Bearer <key>` (None: it sent none)."""
    if not credentials or not credentials.strip():
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    return credentials.strip()


class _KeyCache:
    """Key hash -> organization, for `auth_cache_seconds` after a lookup that found the
    key valid. Per process and not shared: a revoked key is refused by each process at
    the latest when its entry expires. Unknown keys are not cached: a new key works at
    once."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, key_hash: str) -> str | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, org_id: str) -> None:
        ttl = get_settings().auth_cache_seconds
        if ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            # Many keys in use at once (or a flood): start over rather than track recency.
            self._entries.clear()
        self._entries[key_hash] = (org_id, time.monotonic() + ttl)


_known_keys = _KeyCache()


def cached_organization(key: str) -> str | None:
    """The organization of a key validated less than `auth_cache_seconds` ago, without
    a query; None when it has to be looked up (`authenticate`)."""
    return _known_keys.get(hash_key(key))


def authenticate(key: str) -> str:
    """The organization a request with this key acts for: one query, whose answer is
    remembered (`cached_organization`). Commits nothing (a read_scope of its own)."""
    key_hash = hash_key(key)
    with read_scope() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.hash == key_hash))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("Invalid or revoked API key")
    _known_keys.put(key_hash, row.organization_id)
    return row.organization_id


def ensure_local_key(session: Session, data_dir: Path) -> str | None:
    """First run of the embedded mode: a local organization and a key, written to a file
    only the owner can read. Returns the key when it was created now."""
    if session.scalar(select(func.count()).select_from(ApiKey)):
        return None
    if session.scalar(select(Organization.id).where(Organization.id == LOCAL_ORG)) is None:
        create_organization(session, "local", LOCAL_ORG)
    _, key = create_key(session, LOCAL_ORG, "local")
    path = data_dir / LOCAL_KEY_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key
