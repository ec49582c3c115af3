"""Progress bars (rich) on stderr for long commands, shown only when stderr is a
terminal: a pipe or a log file gets the command's output and nothing else."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, unit: str = "items", show: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yields advance(n). unit "bytes" shows sizes and a transfer rate, anything
    else a count; total None: a bar without an end. Without a terminal on stderr
    (or with show false), advance does nothing."""
    if not show or not sys.stderr.isatty():
        yield lambda n: None
        return
    columns: list[str | ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
    ]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn(), TextColumn(unit)]
    columns.append(TimeRemainingColumn())
    # what the command prints meanwhile goes above the bar (redirected by rich)
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
