"""Commands that look inside the data: `verify` (whole logs), `dump-log`
(segment files), `ring-stat` (one ring), and the ring `demo`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import click
import msgspec

from shmbroker import Admin, Ring, shm
from shmbroker.cli.options import (
    data_dir_option,
    echo_json,
    format_option,
    resolve_data_dir,
)


@click.command()
@data_dir_option
@click.option("--topic", "topics", multiple=True, help="only this topic (repeatable)")
@format_option
def verify(data_dir: str | None, topics: tuple[str, ...], fmt: str) -> None:
    """Read every batch of every segment of the data directory's topics and check
    it (length, CRC32C, records), dense offsets within and across segments, and
    every index entry (Kafka's kafka-dump-log --deep-iteration over whole logs).
    Prints each problem with the repair it suggests; exit status 1 if any."""
    from shmbroker.log.verify import verify_data_dir

    reports = verify_data_dir(resolve_data_dir(data_dir), topics)
    problems = [p for r in reports for p in r.problems]
    if fmt == "json":
        echo_json(msgspec.to_builtins(reports))
    else:
        for p in problems:
            where = f" at byte {p.position}" if p.position >= 0 else ""
            click.echo(f"ERROR {p.file}{where}: {p.message}\n  repair: {p.repair}")
        click.echo(
            f"{len(reports)} partitions, {sum(r.segments for r in reports)} "
            f"segments, {sum(r.batches for r in reports)} batches, "
            f"{sum(r.records for r in reports)} records checked: "
            f"{len(problems) or 'no'} problems"
        )
    if problems:
        sys.exit(1)


# ---- demo, inspectors ---------------------------------------------------------------


@click.command()
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
        click.echo("A broker: `shmbroker serve`, then `shmbroker produce/consume`.")
    finally:
        ring.unlink()
        ring.close()


@click.command("_consume", hidden=True)
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
            # no durable log here: the one consumer frees the space it has read
            ring.spill_advance(reader.position)
        elapsed = time.perf_counter() - start
        click.echo(
            f"{count} records, {count / elapsed:,.0f} records/s, offsets "
            f"{got[-1].offset - count + 1}..{got[-1].offset}"
        )


@click.command(
    "dump-log",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dump_log(args: tuple[str, ...]) -> None:
    """Print and check segment files like Kafka's kafka-dump-log (--help for more)."""
    from shmbroker.log.dump import main as dump_main

    sys.exit(dump_main(list(args)))


@click.command("ring-stat")
@click.argument("name", required=False)
@data_dir_option
@click.option("--topic", help="the ring of this topic's --partition (instead of NAME)")
@click.option("--partition", type=click.IntRange(min=0), default=0, show_default=True)
@format_option
def ring_stat(
    name: str | None, data_dir: str | None, topic: str | None, partition: int, fmt: str
) -> None:
    """Cursors, offsets and counters of a ring (like Aeron's AeronStat): the ring
    NAME (/shmb....), or the ring of --topic T --partition P of the broker on
    --data-dir."""
    if (name is None) == (topic is None):
        raise click.UsageError("give a ring NAME or --topic (and --partition)")
    if name is None:
        assert topic is not None
        with Admin(resolve_data_dir(data_dir)) as admin:
            name = admin.ring_name(topic, partition)
    with Ring.open(name) as ring:
        stat: dict[str, Any] = msgspec.structs.asdict(ring.stat())
        stat["damage"] = ring.check()
    if fmt == "json":
        click.echo(json.dumps(stat))
        return
    for key, value in stat.items():
        if key != "damage":
            click.echo(f"{key:24} {value}")
    unspilled = stat["tail_position"] - stat["spill_position"]
    click.echo(
        f"{'fill':24} {unspilled}/{stat['capacity_bytes']} bytes not yet spilled"
    )
    click.echo(f"{'header':24} {stat['damage'] or 'sound'}")
    if stat["damage"]:
        click.echo(f"ERROR: the header is damaged: {stat['damage']}", err=True)
        sys.exit(1)
