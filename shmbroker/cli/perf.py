"""`perf produce` and `perf consume` (kafka-producer-perf-test,
kafka-consumer-perf-test)."""

from __future__ import annotations

from datetime import datetime

import click

from shmbroker import perf as measure
from shmbroker.cli.options import echo_json, format_option
from shmbroker.cli.progress import progress_bar
from shmbroker.cli.target import Target, target_options


@click.group()
def perf() -> None:
    """Throughput and latency tests (kafka-producer/consumer-perf-test)."""


@perf.command("produce")
@target_options
@click.option("--topic", required=True)
@click.option("--num-records", type=int, required=True)
@click.option("--record-size", type=int, default=100, show_default=True,
              help="value bytes (random capital letters)")  # fmt: skip
@click.option("--throughput", type=float, default=-1, show_default=True,
              help="at most this many records/s; -1: no limit")  # fmt: skip
@click.option("--batch", type=int, default=1000, show_default=True,
              help="records per send_batch (the unit of latency)")  # fmt: skip
@click.option("--partition", type=click.IntRange(min=0),
              help="only this partition [batches go round all]")  # fmt: skip
@click.option("--acks", type=click.Choice(["0", "1", "-1", "all"]), default="1",
              show_default=True)  # fmt: skip
@format_option
def perf_produce(
    target: Target,
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    batch: int,
    partition: int | None,
    acks: str,
    fmt: str,
) -> None:
    """Send records as fast as possible (or at --throughput) and print Kafka's
    summary line; latency is from the send to the append of its batch. A second line
    gives the percentiles in microseconds."""

    def window(w: measure.Window) -> None:
        if fmt == "text":
            click.echo(
                f"{w.records} records sent, {w.records_per_sec:.1f} records/sec "
                f"({w.mb_per_sec:.2f} MB/sec), {w.avg_latency_ms:.1f} ms avg latency, "
                f"{w.max_latency_ms:.1f} ms max latency."
            )

    with (
        target.producer(acks=acks, client_id="perf-producer-client") as producer,
        progress_bar(f"producing to {topic}", num_records, "records") as sent,
    ):
        r = measure.produce(
            producer,
            topic,
            num_records,
            record_size,
            throughput=throughput,
            batch=batch,
            partition=partition,
            on_window=window,
            on_progress=sent,
        )
    ms, us = r.percentiles_ms, r.percentiles_us
    if fmt == "json":
        echo_json(
            {
                "records": r.records,
                "records_per_sec": r.records_per_sec,
                "mb_per_sec": r.mb_per_sec,
                "avg_latency_ms": r.avg_latency_ms,
                "max_latency_ms": r.max_latency_ms,
                "percentiles_ms": ms,
                "percentiles_us": us,
            }
        )
        return
    click.echo(
        f"{r.records} records sent, {r.records_per_sec:f} records/sec "
        f"({r.mb_per_sec:.2f} MB/sec), {r.avg_latency_ms:.2f} ms avg latency, "
        f"{r.max_latency_ms:.2f} ms max latency, {ms['50th']} ms 50th, "
        f"{ms['95th']} ms 95th, {ms['99th']} ms 99th, {ms['99.9th']} ms 99.9th."
    )
    click.echo(
        f"{us['50th']:.1f} us 50th, {us['95th']:.1f} us 95th, {us['99th']:.1f} us "
        f"99th, {us['99.9th']:.1f} us 99.9th."
    )


PERF_HEADER = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, "
    "nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


@perf.command("consume")
@target_options
@click.option("--topic", required=True)
@click.option("--messages", type=int, required=True, help="records to read")
@click.option("--timeout", type=click.IntRange(min=0), default=10_000,
              show_default=True, help="ms allowed between records")  # fmt: skip
@click.option("--from-latest", is_flag=True, help="only new records [earliest]")
@click.option("--hide-header", is_flag=True)
@format_option
def perf_consume(
    target: Target,
    topic: str,
    messages: int,
    timeout: int,
    from_latest: bool,
    hide_header: bool,
    fmt: str,
) -> None:
    """Read records as fast as possible and print kafka-consumer-perf-test's
    columns."""
    if fmt == "text" and not hide_header:
        click.echo(PERF_HEADER)  # first, as Kafka: the run may take a while
    with target.admin() as admin:
        partitions = admin.topic(topic).partitions
    with (
        target.consumer(
            auto_offset_reset="latest" if from_latest else "earliest",
            client_id="perf-consumer-client",
        ) as consumer,
        progress_bar(f"consuming {topic}", messages, "records") as read,
    ):
        r = measure.consume(
            consumer, topic, partitions, messages, timeout_ms=timeout, on_progress=read
        )
    if fmt == "json":
        echo_json(
            {
                "start_ms": r.start_ms,
                "end_ms": r.end_ms,
                "mb": r.mb,
                "mb_per_sec": r.mb_per_sec,
                "messages": r.messages,
                "messages_per_sec": r.messages_per_sec,
                "rebalance_time_ms": r.rebalance_ms,
                "fetch_time_ms": r.fetch_ms,
                "fetch_mb_per_sec": r.fetch_mb_per_sec,
                "fetch_messages_per_sec": r.fetch_messages_per_sec,
                "timed_out": r.timed_out,
            }
        )
        return
    if r.timed_out:
        click.echo(
            f"WARNING: Exiting before consuming the expected number of messages: "
            f"timeout ({timeout} ms) exceeded. You can use the --timeout option to "
            f"increase the timeout."
        )
    click.echo(
        f"{_date(r.start_ms)}, {_date(r.end_ms)}, {r.mb:.4f}, {r.mb_per_sec:.4f}, "
        f"{r.messages}, {r.messages_per_sec:.4f}, {r.rebalance_ms}, {r.fetch_ms}, "
        f"{r.fetch_mb_per_sec:.4f}, {r.fetch_messages_per_sec:.4f}"
    )


def _date(ms: int) -> str:
    """Kafka's default --date-format, yyyy-MM-dd HH:mm:ss:SSS, local time."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S:") + (
        f"{ms % 1000:03d}"
    )
