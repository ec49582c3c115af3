"""The `shmbroker` command line: `serve` (the supervisor), Kafka's tools with their
flag names and output layouts (`topics`, `configs`, `produce`, `consume`,
`consumer-groups`, `get-offsets`, `perf`), on a data directory or over the Kafka
protocol (target.py), host checks (`gc`, `doctor`), the live view `top` and the
gateway's `users`; one module per command group. Commands parse, call the clients,
and print; a user's mistake is one line on stderr (exit 1, or 2 for a bad flag),
never a traceback.
"""

from __future__ import annotations

from typing import Any

import click

from shmbroker import ShmbrokerError, __version__
from shmbroker.cli import (
    configs,
    consume,
    groups,
    host,
    inspect,
    offsets,
    perf,
    produce,
    top,
    topics,
    users,
)


class _Commands(click.Group):
    """Turns every ShmbrokerError into a one-line error with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShmbrokerError as exc:
            raise click.ClickException(str(exc) or type(exc).__name__) from exc


@click.group(cls=_Commands)
@click.version_option(__version__, "--version", prog_name="shmbroker")
def main() -> None:
    """shmbroker: Kafka's model on one host, at shared-memory speed."""


for command in (
    host.serve,
    host.gateway,
    host.gc,
    host.doctor,
    topics.topics,
    configs.configs,
    produce.produce,
    consume.consume,
    groups.consumer_groups,
    offsets.get_offsets,
    perf.perf,
    inspect.verify,
    inspect.demo,
    inspect.consume_demo,
    inspect.dump_log,
    inspect.ring_stat,
    top.top,
    users.users_group,
):
    main.add_command(command)
