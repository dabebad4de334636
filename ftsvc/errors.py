"""What `ftsvc` says when a command fails: one line that says what is wrong and what to
do. `describe` turns an exception into that line; `ftsvc.cli.main` prints it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from pydantic import ValidationError

from core.errors import ServiceError
from core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import URL
    from sqlalchemy.exc import DBAPIError

DEBUG_HINT = "set FTSVC_DEBUG=1 for the traceback"
# Postgres SQLSTATEs of a schema that is not there: undefined table, undefined column.
MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}
# What to do about a domain error, by the argument it names.
HINTS = {
    "organization": "give an organization id ('org-...') as create-org printed it",
    "key_id": "give a key id ('key-...') as create-org or create-key printed it",
}


class CliError(Exception):
    """A failure a command diagnosed itself: its message is the whole line to print."""

    exit_code = 1


def describe(exc: Exception) -> str:
    """One line for a failed command; secrets of the configured URLs are masked."""
    # Imported here: the client commands, which fail through this too, never load SQLAlchemy.
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, CliError):
        message = str(exc)
    elif isinstance(exc, ServiceError):
        message = _service_error(exc)
    elif isinstance(exc, ValidationError) and exc.title == "Settings":
        message = _invalid_settings(exc)
    elif isinstance(exc, DBAPIError):
        message = _database_error(exc)
    else:
        message = f"{type(exc).__name__}: {exc} ({DEBUG_HINT})"
    return scrub(" ".join(message.split()))


def is_expected(exc: BaseException) -> bool:
    """Failures whose line says everything: FTSVC_DEBUG=1 shows no traceback for them."""
    return isinstance(exc, CliError | ServiceError)


def shown_url(url: str | URL) -> str:
    """A database URL fit to print: the password as ***."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unparsable URL)"


def configured_database() -> str:
    """The database the settings name, fit to print (the settings may be what failed)."""
    try:
        return shown_url(get_settings().database_url)
    except Exception:
        return "FTSVC_DATABASE_URL"


def first_line(exc: BaseException) -> str:
    """The driver's own first line: SQLAlchemy appends the SQL and a link, psycopg a hint."""
    source = getattr(exc, "orig", None) or exc
    lines = str(source).strip().splitlines()
    return lines[0].strip() if lines else type(source).__name__


def scrub(message: str) -> str:
    """Mask the passwords of the configured URLs wherever a message repeats a URL."""
    for variable in ("FTSVC_DATABASE_URL", "FTSVC_BROKER_URL"):
        password = _password(os.environ.get(variable, ""))
        if password:
            for spelling in {password, quote(password, safe="")}:
                message = message.replace(f":{spelling}@", ":***@")
    return message


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _service_error(exc: ServiceError) -> str:
    hint = HINTS.get(exc.param or "")
    message = f"{exc.message} (database {configured_database()})"
    return f"{message}; {hint}" if hint else message


def _invalid_settings(exc: ValidationError) -> str:
    # The values themselves are left out: a setting may be a secret.
    problems = [
        f"FTSVC_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        if error["loc"]
        else error["msg"]
        for error in exc.errors()
    ]
    return f"invalid setting {'; '.join(problems)}; fix the environment variable"


def _database_error(exc: DBAPIError) -> str:
    from sqlalchemy.exc import OperationalError

    database = configured_database()
    if _missing_schema(exc):
        return f"the database at {database} lacks this ftsvc's tables ({first_line(exc)}); run 'ftsvc migrate'"
    if isinstance(exc, OperationalError):
        return (
            f"cannot use the database at {database}: {first_line(exc)}; "
            "check FTSVC_DATABASE_URL and that the database server is running"
        )
    return f"the database at {database} refused the command: {first_line(exc)}"


def _missing_schema(exc: DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in MISSING_SCHEMA_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return text.startswith(("no such table", "no such column")) or "has no column named" in text
