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


@click.group()
def main() -> None:
    """shmbroker: Kafka's model on one host, at shared-memory speed."""


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
