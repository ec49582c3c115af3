"""`shmbroker users add|list|delete`: the gateway's SASL users, their SCRAM
credentials and allow lists, in `<data-dir>/users.json` (Kafka's `kafka-configs
--entity-type users --alter --add-config SCRAM-SHA-256=[password=...]`). The
gateway reads the file again within a second of a change: no restart."""

from __future__ import annotations

import sys

import click

from shmbroker import InvalidArgument, users
from shmbroker.cli.options import (
    data_dir_option,
    echo_json,
    format_option,
    resolve_data_dir,
)


@click.group("users")
def users_group() -> None:
    """Manage the users of the gateway's SASL listeners."""


@users_group.command()
@data_dir_option
@click.argument("name")
@click.option("--password", help="[read from stdin, or asked for on a terminal]")
@click.option("--mechanism", "mechanisms", multiple=True,
              type=click.Choice(users.SCRAM_MECHANISMS),
              help="SCRAM credentials to store; repeatable [both]")  # fmt: skip
@click.option("--iterations", type=int, default=users.DEFAULT_ITERATIONS,
              show_default=True,
              help="SCRAM iteration count (4096 to 16384)")  # fmt: skip
@click.option("--allow-topic", "allow_topics", multiple=True,
              metavar="PATTERN=OPERATIONS",
              help="topics (a name, or a prefix ending in '*') and what the user may "
              "do on them, e.g. 'orders-*=read,write'; repeatable; with "
              "--allow-group, an allow list: nothing else is allowed")  # fmt: skip
@click.option("--allow-group", "allow_groups", multiple=True, metavar="PATTERN",
              help="consumer groups the user may use; repeatable")  # fmt: skip
@click.option("--allow-all", is_flag=True,
              help="drop the user's allow list: everything is allowed")  # fmt: skip
def add(
    data_dir: str | None,
    name: str,
    password: str | None,
    mechanisms: tuple[str, ...],
    iterations: int,
    allow_topics: tuple[str, ...],
    allow_groups: tuple[str, ...],
    allow_all: bool,
) -> None:
    """Add user NAME, or set its password (and allow list, if given)."""
    if allow_all and (allow_topics or allow_groups):
        raise click.UsageError("--allow-all contradicts --allow-topic/--allow-group")
    if password is None:
        if sys.stdin.isatty():
            password = click.prompt(
                f"Password for {name}", hide_input=True, confirmation_prompt=True
            )
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    allow = None
    if allow_topics or allow_groups:
        allow = users.allow_list(_topic_patterns(allow_topics), list(allow_groups))
    directory = resolve_data_dir(data_dir)
    new = users.add(
        directory, name, password or "",
        mechanisms=mechanisms or users.SCRAM_MECHANISMS, iterations=iterations,
        allow=allow, keep_allow=not allow_all,
    )  # fmt: skip
    stored = ", ".join(mechanisms or users.SCRAM_MECHANISMS)
    click.echo(f"{'Added' if new else 'Updated'} user '{name}' ({stored})")


def _topic_patterns(specs: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        pattern, sep, operations = spec.partition("=")
        if not sep or not operations:
            raise InvalidArgument(
                f"--allow-topic {spec!r}: PATTERN=OPERATIONS, e.g. 'orders=read,write' "
                f"(operations: {', '.join(users.OPERATIONS)})"
            )
        out.setdefault(pattern, []).extend(o.strip() for o in operations.split(","))
    return out


@users_group.command("list")
@data_dir_option
@format_option
def list_users(data_dir: str | None, fmt: str) -> None:
    """Each user, its SCRAM mechanisms and allow list (no credential is shown)."""
    known = sorted(users.load(resolve_data_dir(data_dir)).items())
    if fmt == "json":
        echo_json(
            [
                {
                    "user": name,
                    "mechanisms": sorted(user.scram),
                    "allow": None
                    if user.allow is None
                    else {"topics": user.allow.topics, "groups": user.allow.groups},
                }
                for name, user in known
            ]
        )
        return
    for name, user in known:
        if user.allow is None:
            allowed = "everything"
        else:
            topics = [f"{p}={','.join(o)}" for p, o in user.allow.topics.items()]
            groups = [f"group {g}" for g in user.allow.groups]
            allowed = " ".join(topics + groups) or "nothing"
        click.echo(f"{name}\t{','.join(sorted(user.scram))}\t{allowed}")


@users_group.command()
@data_dir_option
@click.argument("name")
def delete(data_dir: str | None, name: str) -> None:
    """Delete user NAME: its next login fails (its open connections stay until
    their session ends, as Kafka's)."""
    if not users.delete(resolve_data_dir(data_dir), name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"Deleted user '{name}'")
