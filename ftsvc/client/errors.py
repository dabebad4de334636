"""How a client command fails: one line on stderr (`ftsvc: error: ...`) and an exit code
that tells scripts what happened (the README's table).

0    success (`jobs watch`: the job succeeded)
1    the server refused the request (its message), or the command could not do its work
     (a file it cannot read, a download whose sha256 does not match, no API key)
2    usage: an unknown command or option, a missing or malformed argument
3    the server cannot be reached (refused connection, timeout, a connection cut off)
4    `jobs watch`: the job failed
5    `jobs watch`: the job was cancelled
130  interrupted (Ctrl-C)
"""

from __future__ import annotations

from typing import Any

from ftsvc.errors import CliError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_JOB_FAILED = 4
EXIT_JOB_CANCELLED = 5


class ClientError(CliError):
    """A failure whose message is the whole line to print, with its exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class Unreachable(ClientError):
    exit_code = EXIT_UNREACHABLE


class ApiError(ClientError):
    """An error answer of the API, with what its body says ({"error": {message, type,
    param, code, ...}}); `error` keeps the whole object (an invalid upload's problems)."""

    def __init__(self, status: int, error: dict[str, Any], hint: str | None = None) -> None:
        self.status = status
        self.error = error
        self.code: str | None = error.get("code")
        self.param: str | None = error.get("param")
        where = f"{status} {self.code}" if self.code else str(status)
        if self.param:
            where += f", param {self.param}"
        message = f"{error.get('message') or 'the server gave no reason'} ({where})"
        super().__init__(f"{message}; {hint}" if hint else message)


class JobEnded(ClientError):
    """`jobs watch` of a job that ended without succeeding."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
