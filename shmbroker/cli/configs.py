"""`configs`: describe and alter topic configs (kafka-configs), each config with
the value in force, where it comes from, and the value of every layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from shmbroker import UnknownTopic
from shmbroker.cli.options import KafkaActions, echo_json, format_option, key_values
from shmbroker.cli.target import Target, target_options

if TYPE_CHECKING:
    from shmbroker.cli.target import AnyAdmin
    from shmbroker.client.admin import ConfigEntry


def entity_options(f: Any) -> Any:
    """Kafka's two ways to name a topic: --topic T, or --entity-type topics
    --entity-name T."""
    for option in (
        click.option("--entity-name", help="the topic (with --entity-type topics)"),
        click.option(
            "--entity-type",
            type=click.Choice(["topics"]),
            help="the kind of entity: topics (the only kind with configs here)",
        ),
        click.option("--topic", help="the topic [--describe: every topic]"),
    ):
        f = option(f)
    return f


def _topic_named(
    topic: str | None, entity_type: str | None, entity_name: str | None
) -> str | None:
    if entity_name is not None and entity_type is None:
        raise click.UsageError("--entity-name needs --entity-type topics")
    if topic is not None and entity_name is not None and topic != entity_name:
        raise click.UsageError(
            f"--topic {topic} and --entity-name {entity_name} name different topics"
        )
    return topic if topic is not None else entity_name


@click.group(cls=KafkaActions)
def configs() -> None:
    """Describe and alter topic configs (kafka-configs); Kafka's action flags work
    too: `configs --describe` is `configs describe`."""


@configs.command("describe")
@target_options
@entity_options
@click.option("--all", "all_configs", is_flag=True,
              help="every config, defaults too [the topic's own]")  # fmt: skip
@format_option
def configs_describe(
    target: Target,
    topic: str | None,
    entity_type: str | None,
    entity_name: str | None,
    all_configs: bool,
    fmt: str,
) -> None:
    """Kafka's layout: per topic `Dynamic configs for topic T are:` (with --all:
    `All configs for topic T are:`), then `  key=value sensitive=false
    synonyms={SOURCE:key=value, ...}` per config, the layer in force first: the
    topic's own (DYNAMIC_TOPIC_CONFIG), the broker's default for topics
    (STATIC_BROKER_CONFIG), the built-in default (DEFAULT_CONFIG)."""
    name = _topic_named(topic, entity_type, entity_name)
    with target.admin() as admin:
        names = sorted(admin.list_topics()) if name is None else [name]
        described = {n: _entries(admin, n, all_configs) for n in names}
    if fmt == "json":
        echo_json(
            [
                {
                    "topic": n,
                    "configs": [
                        {
                            "name": e.name,
                            "value": e.value,
                            "source": e.source.name,
                            "sensitive": False,
                            "synonyms": [
                                {"source": s.name, "value": v} for s, v in e.synonyms
                            ],
                        }
                        for e in entries
                    ],
                }
                for n, entries in described.items()
            ]
        )
        return
    for n, entries in described.items():
        click.echo(f"{'All' if all_configs else 'Dynamic'} configs for topic {n} are:")
        for e in entries:
            synonyms = ", ".join(f"{s.name}:{e.name}={v}" for s, v in e.synonyms)
            click.echo(f"  {e.name}={e.value} sensitive=false synonyms={{{synonyms}}}")


def _entries(admin: AnyAdmin, topic: str, all_configs: bool) -> list[ConfigEntry]:
    entries = admin.describe_configs(topic)
    if all_configs:
        return entries
    return [e for e in entries if e.source.name == "DYNAMIC_TOPIC_CONFIG"]


def config_list(values: Sequence[str]) -> list[str]:
    """kafka-configs takes comma-separated lists as well as repeated flags."""
    return [item.strip() for value in values for item in value.split(",") if item]


def alter_options(f: Any) -> Any:
    """--add-config, --delete-config and --if-exists (kafka-configs --alter)."""
    for option in (
        click.option("--if-exists", is_flag=True,
                     help="no error if there is no such topic"),
        click.option("--delete-config", "delete", multiple=True, metavar="KEY[,...]",
                     help="return topic configs to the broker's default"),
        click.option("--add-config", "add", multiple=True, metavar="KEY=VALUE[,...]",
                     help="set topic configs (repeatable, or comma-separated)"),
    ):  # fmt: skip
        f = option(f)
    return f


def alter_topic_configs(
    admin: AnyAdmin, topic: str, add: Sequence[str], delete: Sequence[str]
) -> None:
    """Set and delete (back to the default) a topic's configs; prints Kafka's
    `Completed updating config for topic T.`"""
    to_set = key_values(config_list(add), "--add-config")
    to_delete = config_list(delete)
    both = sorted(set(to_set) & set(to_delete))
    if both:
        raise click.UsageError(f"--add-config and --delete-config both name {both}")
    admin.alter_configs(topic, to_set, to_delete)
    click.echo(f"Completed updating config for topic {topic}.")


@configs.command("alter")
@target_options
@entity_options
@alter_options
def configs_alter(
    target: Target,
    topic: str | None,
    entity_type: str | None,
    entity_name: str | None,
    add: tuple[str, ...],
    delete: tuple[str, ...],
    if_exists: bool,
) -> None:
    """Change a topic's configs: Kafka's `Completed updating config for topic T.`"""
    name = _topic_named(topic, entity_type, entity_name)
    if name is None:
        raise click.UsageError("--alter needs a topic: --topic or --entity-name")
    if not (add or delete):
        raise click.UsageError("nothing to alter: give --add-config or --delete-config")
    with target.admin() as admin:
        try:
            alter_topic_configs(admin, name, add, delete)
        except UnknownTopic:
            if not if_exists:
                raise
