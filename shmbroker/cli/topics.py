"""`topics`: create, list, describe, alter and delete topics (kafka-topics,
and kafka-configs for a topic's configs)."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from shmbroker import TopicExists, UnknownTopic, protocol
from shmbroker.cli.configs import alter_options, alter_topic_configs
from shmbroker.cli.options import KafkaActions, echo_json, format_option, key_values
from shmbroker.cli.target import Target, target_options

# what the Kafka protocol tells of a partition, local or remote
KAFKA_PARTITION_FIELDS = ("partition", "log_start_offset", "high_watermark")


@click.group(cls=KafkaActions)
def topics() -> None:
    """Create, list, describe, alter and delete topics (kafka-topics); Kafka's
    action flags work too: `topics --list` is `topics list`."""


@topics.command("create")
@target_options
@click.option("--topic", required=True, help="the topic's name: [a-zA-Z0-9._-]{1,249}")
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--replication-factor", type=int, default=1,
              help="always 1: one broker holds every partition")  # fmt: skip
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="a topic config, e.g. retention.ms=3600000; repeatable")  # fmt: skip
@click.option("--if-not-exists", is_flag=True, help="no error if the topic exists")
def topics_create(
    target: Target,
    topic: str,
    partitions: int,
    replication_factor: int,
    configs: tuple[str, ...],
    if_not_exists: bool,
) -> None:
    """Create a topic; prints `Created topic T.` as kafka-topics --create."""
    if replication_factor != 1:
        raise click.BadParameter(
            f"{replication_factor}: one broker holds every partition, so the "
            f"replication factor is 1",
            param_hint="--replication-factor",
        )
    overrides = key_values(configs, "--config")
    with target.admin() as admin:
        try:
            admin.create_topic(topic, partitions, overrides)
        except TopicExists:
            if if_not_exists:
                return
            raise
    click.echo(f"Created topic {topic}.")


@topics.command("list")
@target_options
@format_option
def topics_list(target: Target, fmt: str) -> None:
    """Topic names, one a line, sorted (kafka-topics --list)."""
    with target.admin() as admin:
        found = admin.list_topics()
    names = sorted(found)
    if fmt == "json":
        echo_json(
            [
                {
                    "topic": name,
                    "topic_id": found[name].topic_id,
                    "partition_count": found[name].partitions,
                }
                for name in names
            ]
        )
        return
    for name in names:
        click.echo(name)


@topics.command("describe")
@target_options
@click.option("--topic", help="only this topic [every topic]")
@click.option("--storage", is_flag=True,
              help="with --data-dir: each partition's RingFill (bytes not yet "
              "spilled / ring capacity), DiskBytes and any SpillError too")  # fmt: skip
@format_option
def topics_describe(target: Target, topic: str | None, storage: bool, fmt: str) -> None:
    """Topics and their partitions in kafka-topics --describe's layout, then each
    partition's LogStartOffset and HighWatermark. Configs lists the overrides only."""
    if storage and not target.local:
        raise click.UsageError(
            "--storage shows the host's rings and files: it needs --data-dir, not "
            "--bootstrap-server"
        )
    with target.admin() as admin:
        # protocol.TopicDescription locally, remote.TopicSummary over Kafka
        described: list[Any] = admin.describe_topics(None if topic is None else [topic])
    described.sort(key=lambda d: d.name)
    if fmt == "json":
        echo_json([_description_json(d, storage) for d in described])
        return
    for d in described:
        configs = ",".join(f"{k}={v}" for k, v in sorted(d.configs.items()))
        click.echo(
            f"Topic: {d.name}\tTopicId: {d.topic_id}\tPartitionCount: "
            f"{len(d.partitions)}\tReplicationFactor: 1\tConfigs: {configs}"
        )
        for p in sorted(d.partitions, key=lambda p: p.partition):
            line = (
                f"\tTopic: {d.name}\tPartition: {p.partition}\tLeader: 0\tReplicas: 0"
                f"\tIsr: 0\tLogStartOffset: {p.log_start_offset}\tHighWatermark: "
                f"{p.high_watermark}"
            )
            if storage:
                assert isinstance(p, protocol.PartitionDescription)
                line += (
                    f"\tRingFill: {p.ring_unspilled_bytes}/{p.ring_capacity_bytes}"
                    f"\tDiskBytes: {p.disk_bytes}"
                )
                if p.spill_error:
                    line += f"\tSpillError: {p.spill_error}"
            click.echo(line)


def _description_json(d: Any, storage: bool) -> dict[str, Any]:
    partitions = []
    for p in sorted(d.partitions, key=lambda p: p.partition):
        fields = msgspec.structs.asdict(p)
        if not storage:
            fields = {k: fields[k] for k in KAFKA_PARTITION_FIELDS}
        partitions.append({"leader": 0, "replicas": [0], "isr": [0], **fields})
    return {
        "topic": d.name,
        "topic_id": d.topic_id,
        "partition_count": len(d.partitions),
        "replication_factor": 1,
        "configs": dict(sorted(d.configs.items())),
        "partitions": partitions,
    }


@topics.command("delete")
@target_options
@click.option("--topic", required=True)
@click.option("--if-exists", is_flag=True, help="no error if there is no such topic")
def topics_delete(target: Target, topic: str, if_exists: bool) -> None:
    """Delete a topic: its rings and segment files go (kafka-topics --delete; prints
    nothing, as it)."""
    with target.admin() as admin:
        try:
            admin.delete_topic(topic)
        except UnknownTopic:
            if not if_exists:
                raise


@topics.command("alter")
@target_options
@click.option("--topic", required=True)
@alter_options
@click.option("--partitions", type=click.IntRange(min=1),
              help="the new partition count (only grows)")  # fmt: skip
def topics_alter(
    target: Target,
    topic: str,
    add: tuple[str, ...],
    delete: tuple[str, ...],
    partitions: int | None,
    if_exists: bool,
) -> None:
    """Change a topic's configs (kafka-configs --alter: prints `Completed updating
    config for topic T.`) and/or grow its partitions (kafka-topics --alter)."""
    if not (add or delete or partitions):
        raise click.UsageError(
            "nothing to alter: give --add-config, --delete-config or --partitions"
        )
    with target.admin() as admin:
        try:
            if add or delete:
                alter_topic_configs(admin, topic, add, delete)
            if partitions is not None:
                admin.create_partitions(topic, partitions)
        except UnknownTopic:
            if not if_exists:
                raise
