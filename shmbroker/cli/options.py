"""The flags and parsing that many commands share: --format, KEY=VALUE
pairs, Kafka's --property lists, JSON output."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import click

from shmbroker.config import default_data_dir

F = TypeVar("F", bound=Any)


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        help="the broker's data directory [$SHMBROKER_DATA_DIR or ./shmbroker-data]",
    )(f)


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON document on stdout",
    )(f)


def resolve_data_dir(given: str | None) -> str:
    return default_data_dir() if given is None else given


def key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    """KEY=VALUE pairs, spaces around both trimmed (Kafka's --config)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        out[key.strip()] = value.strip()
    return out


def kafka_properties(
    pairs: Sequence[str], known: Sequence[str], what: str
) -> dict[str, str]:
    """--property KEY=VALUE, the value kept as given (a separator may be a space)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        if key not in known:
            raise click.BadParameter(
                f"unknown property {key!r}; known: {', '.join(known)}", param_hint=what
            )
        out[key] = value
    return out


def is_true(props: Mapping[str, str], key: str) -> bool:
    """Kafka's boolean properties: "true" in any case is true, anything else false."""
    return props.get(key, "false").strip().lower() == "true"


def echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


class KafkaActions(click.Group):
    """A command group that takes Kafka's action flags as well as its subcommands:
    `topics --list` runs `topics list`, as kafka-topics users type it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and "--help" not in args:
            flags = {f"--{name}": name for name in self.commands}
            given = [a for a in args if a in flags]
            if len(given) != 1:
                raise click.UsageError(
                    "Command must include exactly one action: "
                    + ", ".join(sorted(flags)),
                    ctx,
                )
            rest = list(args)
            rest.remove(given[0])
            args = [flags[given[0]], *rest]
        return super().parse_args(ctx, args)
