"""The `shmbroker` command line. Until the broker supervisor lands (issue 4), it offers
a demo of two processes over one ring and the ring inspector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import click

from shmbroker import Ring, ShmbrokerError, shm
from shmbroker.config import BrokerConfig


@click.group()
def main() -> None:
    """shmbroker: Kafka's model on one host, at shared-memory speed."""


def _key_values(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        out[key.strip()] = value.strip()
    return out


@main.command()
@click.option("--data-dir", help="[default: ./shmbroker-data or $SHMBROKER_DATA_DIR]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file: data.dir, num.partitions, auto.create.topics.enable, "
              "shm.prefix, [topic] defaults")  # fmt: skip
@click.option("--shm-prefix", help="start of every shared-memory name [shmb.]")
@click.option("--num-partitions", type=int, help="of auto-created topics [1]")
@click.option("--auto-create-topics/--no-auto-create-topics", default=None,
              help="create a topic on its first produce [on]")  # fmt: skip
@click.option("--topic-config", multiple=True, metavar="KEY=VALUE",
              help="default topic config, e.g. ring.bytes=4194304")  # fmt: skip
def serve(
    data_dir: str | None,
    config_file: str | None,
    shm_prefix: str | None,
    num_partitions: int | None,
    auto_create_topics: bool | None,
    topic_config: tuple[str, ...],
) -> None:
    """Run the broker supervisor on a data directory until SIGTERM or Ctrl-C."""
    from shmbroker.broker.supervisor import serve as run

    try:
        config = BrokerConfig.load(
            config_file,
            data_dir=data_dir,
            shm_prefix=shm_prefix,
            num_partitions=num_partitions,
            auto_create_topics_enable=auto_create_topics,
            topic_defaults=_key_values(topic_config, "--topic-config") or None,
        )
        run(config)
    except ShmbrokerError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--records", default=1_000_000, show_default=True)
@click.option("--size", default=100, show_default=True, help="value bytes")
@click.option("--batch", default=1000, show_default=True, help="records per append")
def demo(records: int, size: int, batch: int) -> None:
    """Produce records into a fresh ring while another process consumes them."""
    name = f"/{shm.NAME_PREFIX}demo.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    ring = Ring.create(name, 16 << 20)
    try:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "shmbroker", "_consume", name, str(records)],
            stdout=subprocess.PIPE,
            text=True,
        )
        click.echo(
            f"ring {name}: producing {records} records of {size} B; "
            f"consumer pid {consumer.pid}"
        )
        value = b"x" * size
        start = time.perf_counter()
        for first in range(0, records, batch):
            n = min(batch, records - first)
            ring.append_batch([value] * n, timeout=30)
        produced = time.perf_counter() - start
        out, _ = consumer.communicate(timeout=120)
        click.echo(f"producer: {records / produced:,.0f} records/s")
        click.echo(f"consumer: {out.strip()}")
        click.echo("The broker (`shmbroker serve`) comes with issue 4; see README.md.")
    finally:
        ring.unlink()
        ring.close()


@main.command("_consume", hidden=True)
@click.argument("name")
@click.argument("records", type=int)
def consume_demo(name: str, records: int) -> None:
    with Ring.open(name) as ring:
        reader = ring.reader(0)
        count, start = 0, time.perf_counter()
        while count < records:
            got = reader.poll(timeout=10)
            if not got:
                raise click.ClickException(f"no record for 10 s after {count}")
            count += len(got)
            # no durable log yet: the one consumer frees the space it has read
            ring.spill_advance(reader.position)
        elapsed = time.perf_counter() - start
        click.echo(
            f"{count} records, {count / elapsed:,.0f} records/s, offsets "
            f"{got[-1].offset - count + 1}..{got[-1].offset}"
        )


@main.command(
    "dump-log",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dump_log(args: tuple[str, ...]) -> None:
    """Print and check segment files like Kafka's kafka-dump-log (--help for more)."""
    from shmbroker.log.dump import main as dump_main

    sys.exit(dump_main(list(args)))


@main.command("ring-stat")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def ring_stat(name: str, fmt: str) -> None:
    """Cursors, offsets and counters of a ring (like Aeron's AeronStat)."""
    try:
        with Ring.open(name) as ring:
            stat = {f: getattr(ring.stat(), f) for f in ring.stat().__struct_fields__}
    except ShmbrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        click.echo(json.dumps(stat))
        return
    for key, value in stat.items():
        click.echo(f"{key:24} {value}")
    unspilled = stat["tail_position"] - stat["spill_position"]
    click.echo(
        f"{'fill':24} {unspilled}/{stat['capacity_bytes']} bytes not yet spilled"
    )
