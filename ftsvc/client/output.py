"""What the client commands print: results on stdout, progress bars and the errors'
single line on stderr. Progress bars show on a terminal only, so that a script's
output and logs hold results and no redrawn bars."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table


def _console(stderr: bool) -> Console:
    """Rich sizes its output to the terminal; to a pipe (a script, a log) it would wrap
    tables at 80 columns: there lines are as long as they need (COLUMNS still rules)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    # Messages, file names and events are printed as they are: no rich markup or emoji codes.
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, width=PIPE_WIDTH if wide else None)


PIPE_WIDTH = 250
out = _console(stderr=False)
err = _console(stderr=True)


def when(unix_seconds: int | float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_seconds)) if unix_seconds else "-"


def clock(unix_seconds: int | float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix_seconds))


def figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(*columns: str) -> Table:
    """A table with these column titles; ids never wrap (they are copied from it)."""
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for title in columns:
        grid.add_column(title, no_wrap=title == "id", overflow="fold")
    return grid


def rows(grid: Table, values: Iterable[Iterable[Any]]) -> Table:
    for row in values:
        grid.add_row(*("-" if v is None else str(v) for v in row))
    return grid


def transfer() -> Progress:
    """A progress bar of bytes sent or received (on stderr, on a terminal only)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=False,
    )
