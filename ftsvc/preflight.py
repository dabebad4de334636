"""Checks a command makes before it uses the database, so that a database that is missing,
unreachable or never migrated is reported as that, in one line. For SQLite they come
before any connection: connecting would create an empty file (and the engine its data
directory) wherever the command happened to run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from core.migrate import known_revisions
from core.settings import get_settings
from ftsvc.errors import CliError, first_line, shown_url

# Seconds to wait for a Postgres server that does not answer (libpq would wait for the
# operating system to give up on the connection, minutes).
CONNECT_TIMEOUT = 10


def require_database() -> None:
    """The configured database exists, answers and has this ftsvc's schema."""
    url = _database_url()
    if url.get_backend_name() == "sqlite":
        _require_sqlite_file(url)
    _require_migrated(url, _current_revisions(url))


def require_key_pepper(*, may_create_data_dir: bool) -> None:
    """Commands that hash API keys need the server's secret: FTSVC_KEY_PEPPER, required on
    a shared database; the embedded mode (SQLite) keeps a generated one in the data
    directory, so there that directory must be the service's."""
    settings = get_settings()
    if settings.key_pepper:
        return
    if not settings.is_sqlite:
        raise CliError(
            "FTSVC_KEY_PEPPER is not set; API keys on a shared database are hashed with it: "
            "set it to the secret the API runs with"
        )
    if not may_create_data_dir and not settings.data_dir.is_dir():
        raise CliError(
            f"no data directory at {settings.data_dir} ({_data_dir_origin()}): the embedded mode keeps the "
            "API keys' secret there; set FTSVC_DATA_DIR to the service's data directory, or set FTSVC_KEY_PEPPER"
        )


def _database_url() -> URL:
    try:
        return make_url(get_settings().database_url)
    except ArgumentError as exc:
        # Not repeated: an unparsable URL cannot have its password masked.
        raise CliError(
            "FTSVC_DATABASE_URL is not a database URL; "
            "use e.g. postgresql+psycopg://user@host/db or sqlite:////path/ftsvc.db"
        ) from exc


def _require_sqlite_file(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return  # in memory, or a URI filename whose meaning SQLite decides
    path = Path(database).absolute()
    if path.is_file():
        return
    if os.environ.get("FTSVC_DATABASE_URL"):
        why = f"FTSVC_DATABASE_URL is {shown_url(url)!r}"
        fix = "run 'ftsvc migrate' first, or set FTSVC_DATABASE_URL to the service's database"
    else:
        why, fix = _data_dir_origin(), "run 'ftsvc migrate' there first, or set FTSVC_DATA_DIR"
    raise CliError(f"no database at {path} ({why}); {fix}")


def _data_dir_origin() -> str:
    """Where the data directory came from, the part of the path a user is likely to miss."""
    configured = os.environ.get("FTSVC_DATA_DIR")
    if not configured:
        return "FTSVC_DATA_DIR is not set: the default 'var', relative to the current directory"
    if Path(configured).is_absolute():
        return f"FTSVC_DATA_DIR is {configured!r}"
    return f"FTSVC_DATA_DIR is {configured!r}, relative to the current directory"


def _engine(url: URL) -> Engine:
    postgres = url.get_backend_name() == "postgresql"
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT} if postgres else {}
    try:
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise CliError(
            f"FTSVC_DATABASE_URL {shown_url(url)!r} names a database this ftsvc cannot use ({exc}); "
            "use postgresql+psycopg://... or sqlite:///..."
        ) from exc


def _current_revisions(url: URL) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    engine = _engine(url)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:
            problem = f"cannot connect to the database at {shown_url(url)}: {first_line(exc)}"
            raise CliError(f"{problem}; {_fix(url)}") from exc
        with connection:
            try:
                return MigrationContext.configure(connection).get_current_heads()
            except DBAPIError as exc:
                raise CliError(f"cannot read the database at {shown_url(url)}: {first_line(exc)}") from exc
    finally:
        engine.dispose()


def _fix(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return "check the file and its permissions"
    return "check FTSVC_DATABASE_URL and that the database server is running"


def _require_migrated(url: URL, current: tuple[str, ...]) -> None:
    if not current:
        raise CliError(
            f"the database at {shown_url(url)} has no ftsvc tables (it was never migrated); "
            "run 'ftsvc migrate' with the same settings first"
        )
    heads, known = known_revisions()
    # A revision this code does not know is newer than it (a rolling upgrade whose
    # migration ran first): that schema is left for the newer code to judge.
    if set(current) <= known and set(current) != heads:
        raise CliError(
            f"the database at {shown_url(url)} is at schema revision {', '.join(sorted(current))}, "
            f"this ftsvc needs {', '.join(sorted(heads))}; run 'ftsvc migrate'"
        )
