"""`get-offsets`: offsets of topic partitions (kafka-get-offsets)."""

from __future__ import annotations

import re

import click

from shmbroker import TopicPartition
from shmbroker.cli.options import echo_json, format_option
from shmbroker.cli.target import Target, target_options


def _time_spec(value: str) -> str | int:
    spec = value.strip().lower()
    if spec in ("-1", "latest"):
        return "latest"
    if spec in ("-2", "earliest"):
        return "earliest"
    try:
        timestamp = int(spec)
    except ValueError:
        timestamp = -3
    if timestamp < 0:
        raise click.BadParameter(
            f"Malformed time argument {value}. Please use -1 or latest / -2 or "
            f"earliest, or a timestamp in ms (max-timestamp and the tiered specs are "
            f"not supported)",
            param_hint="--time",
        )
    return timestamp


def _partition_list(value: str | None) -> set[int] | None:
    if not value:
        return None
    try:
        return {int(p) for p in value.split(",")}
    except ValueError:
        raise click.BadParameter(
            f"--partitions expects a comma separated list of numeric partition ids, "
            f"but received: {value}",
            param_hint="--partitions",
        ) from None


@click.command("get-offsets")
@target_options
@click.option("--topic", help="a topic name or regular expression [every topic]")
@click.option("--partitions", help="comma-separated partition ids [all]")
@click.option("--time", "time_arg", default="latest", show_default=True,
              metavar="earliest|latest|-2|-1|MS",
              help="latest: the high watermark; earliest: the log start; a "
              "timestamp: the first offset at or after it")  # fmt: skip
@format_option
def get_offsets(
    target: Target,
    topic: str | None,
    partitions: str | None,
    time_arg: str,
    fmt: str,
) -> None:
    """Offsets of topic partitions as `topic:partition:offset` lines
    (kafka-get-offsets). A timestamp after the last record prints no line."""
    spec = _time_spec(time_arg)
    wanted = _partition_list(partitions)
    try:
        pattern = re.compile(".*" if topic is None else topic)
    except re.error as exc:
        raise click.BadParameter(f"{topic!r}: {exc}", param_hint="--topic") from None
    with target.admin() as admin:
        tps = [
            TopicPartition(name, p)
            for name, meta in sorted(admin.list_topics().items())
            if pattern.fullmatch(name)
            for p in range(meta.partitions)
            if wanted is None or p in wanted
        ]
        if not tps:
            raise click.ClickException(
                "Could not match any topic-partitions with the specified filters"
            )
        offsets = admin.list_offsets(dict.fromkeys(tps, spec))
    found = [(tp, offsets[tp]) for tp in tps if offsets[tp] is not None]
    if fmt == "json":
        echo_json([{"topic": t, "partition": p, "offset": o} for (t, p), o in found])
        return
    for (t, p), o in found:
        click.echo(f"{t}:{p}:{o}")
