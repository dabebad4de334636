"""Which exceptions mean that a dependency is unreachable (an outage, answered 503 with
Retry-After) rather than a bug (500): the database's connection failures and the
broker's. Everything else is left to the caller."""

from __future__ import annotations

import sqlite3

import kombu.exceptions
import psycopg
import redis.exceptions
from sqlalchemy import exc as sa_exc

from core.errors import ServiceUnavailable

# SQLSTATE class 08 is "connection exception"; 57P01-57P03: the server is shutting down,
# crashing or still starting up.
_SERVER_GOING_OR_COMING = ("57P01", "57P02", "57P03")
_SQLITE_UNAVAILABLE = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN)
BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError)
# Every exception class that may be an outage: api.error_responses registers these.
MAYBE_OUTAGES = (sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError, *BROKER_ERRORS)


def _connection_lost(error: BaseException | None) -> bool:
    """A driver's error that says the database could not be reached or went away."""
    if isinstance(error, psycopg.OperationalError):
        # Errors the server reports carry a SQLSTATE; a failed connect or a dropped
        # connection has none.
        state = error.sqlstate
        return state is None or state.startswith("08") or state in _SERVER_GOING_OR_COMING
    if isinstance(error, sqlite3.OperationalError):  # the embedded database: locked past its timeout
        return getattr(error, "sqlite_errorcode", None) in _SQLITE_UNAVAILABLE
    return isinstance(error, psycopg.InterfaceError)


def outage(error: BaseException) -> ServiceUnavailable | None:
    """The 503 that `error` stands for, or None when it is no outage."""
    if isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError) or (
        isinstance(error, sa_exc.DBAPIError) and (error.connection_invalidated or _connection_lost(error.orig))
    ):
        return ServiceUnavailable(
            "The database cannot be reached (or has no free connection); nothing was changed. Retry later.",
            code="database_unavailable",
        )
    if isinstance(error, BROKER_ERRORS):
        return ServiceUnavailable(
            "The job queue's broker cannot be reached; nothing was changed. Retry later.",
            code="broker_unavailable",
        )
    return None
