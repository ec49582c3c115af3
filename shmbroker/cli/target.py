"""Where a command's clients go: the broker of a data directory, over shared memory
(`--data-dir`). Every client command takes its target through `target_options` and
gets a `Target`, which makes the Admin, Producer or Consumer to use."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import click

from shmbroker import Admin, Consumer, Producer
from shmbroker.cli.options import F, resolve_data_dir


@dataclass(frozen=True)
class Target:
    """The broker a command talks to."""

    data_dir: str

    def admin(self) -> Admin:
        return Admin(self.data_dir)

    def producer(self, **options: Any) -> Producer:
        return Producer(self.data_dir, **options)

    def consumer(self, **options: Any) -> Consumer:
        return Consumer(self.data_dir, **options)


def target_options(f: F) -> F:
    """--data-dir, given to the command as `target`."""

    @functools.wraps(f)
    def with_target(*args: Any, data_dir: str | None, **kwargs: Any) -> Any:
        return f(*args, target=Target(resolve_data_dir(data_dir)), **kwargs)

    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        help="the broker's data directory [$SHMBROKER_DATA_DIR or ./shmbroker-data]",
    )(with_target)  # type: ignore[return-value]
