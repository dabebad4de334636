"""The client commands as one typer application. They end with a result on stdout and
exit 0, or with one of the errors of ftsvc.client.errors, which ftsvc.cli.main prints as
one line with its exit code (like every command of `ftsvc`)."""

from __future__ import annotations

import typer

from ftsvc.client import files, jobs
from ftsvc.client.chat import chat_command
from ftsvc.client.download import download_command
from ftsvc.client.errors import UsageError

# typer's answer to Ctrl-C (128 + SIGINT) when it does not exit by itself.
INTERRUPTED = 130

app = typer.Typer(help="Client commands: talk HTTP to a running service.", add_completion=False)
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.command("download")(download_command)
app.command("chat")(chat_command)


def run(argv: list[str]) -> int:
    """Run a client command (argv starts with its name). A usage error becomes a
    UsageError (one line, exit 2, instead of click's usage block) and Ctrl-C stays a
    KeyboardInterrupt, for ftsvc.cli.main to report like any other command's."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="ftsvc", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors: unknown option, missing argument...
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        raise UsageError(f"{exc.format_message().rstrip('.')}{hint}") from exc
    if result == INTERRUPTED:  # typer turned Ctrl-C into this exit code
        raise KeyboardInterrupt
    return int(result or 0)  # --help: 0; a command: None
