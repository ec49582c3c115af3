"""The command line against a real supervisor: Kafka's layouts for topics, the console
producer and consumer through real pipes, get-offsets, perf, gc and doctor, and one-line
errors (never a traceback) for a user's mistakes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shmbroker import Admin, EmbeddedBroker, Producer
from shmbroker.cli import main
from tests.conftest import wait_until


def cli(
    broker: EmbeddedBroker | Path, *args: str, input: bytes | None = None
) -> Result:
    """One command in this process, on the broker's data directory."""
    data_dir = broker if isinstance(broker, Path) else broker.data_dir
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(result: Result, code: int = 1) -> str:
    """The error text of a failed command: one message, no traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.stderr


def shmbroker(*args: str, **kwargs) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shmbroker", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


# ---- topics -------------------------------------------------------------------------


def test_topics_create_list_describe_delete_in_kafkas_layout(
    broker: EmbeddedBroker,
) -> None:
    out = ok(cli(broker, "topics", "create", "--topic", "orders", "--partitions", "2",
                 "--config", "retention.ms=3600000"))  # fmt: skip
    assert out == "Created topic orders.\n"
    ok(cli(broker, "topics", "create", "--topic", "audit"))
    assert ok(cli(broker, "topics", "list")) == "audit\norders\n"

    lines = ok(cli(broker, "topics", "describe", "--topic", "orders", "--storage"))
    lines = lines.splitlines()
    assert re.fullmatch(
        r"Topic: orders\tTopicId: [0-9a-f]{32}\tPartitionCount: 2\t"
        r"ReplicationFactor: 1\tConfigs: retention.ms=3600000,ring.bytes=1048576",
        lines[0],
    )
    for p, line in enumerate(lines[1:]):
        assert re.fullmatch(
            rf"\tTopic: orders\tPartition: {p}\tLeader: 0\tReplicas: 0\tIsr: 0\t"
            rf"LogStartOffset: 0\tHighWatermark: 0\tRingFill: 0/1048576\t"
            rf"DiskBytes: \d+",
            line,
        ), line
    assert len(lines) == 3
    kafka = ok(cli(broker, "topics", "describe", "--topic", "orders")).splitlines()
    assert kafka[0] == lines[0]
    assert kafka[1:] == [line.split("\tRingFill")[0] for line in lines[1:]]

    every = ok(cli(broker, "topics", "describe")).splitlines()
    assert [line.split("\t")[0] for line in every if not line.startswith("\t")] == [
        "Topic: audit",
        "Topic: orders",
    ]

    assert ok(cli(broker, "topics", "delete", "--topic", "audit")) == ""
    assert ok(cli(broker, "topics", "list")) == "orders\n"
    assert "topic 'audit' does not exist" in fails(
        cli(broker, "topics", "delete", "--topic", "audit")
    )
    ok(cli(broker, "topics", "delete", "--topic", "audit", "--if-exists"))


def test_create_an_existing_topic_fails_unless_if_not_exists(
    broker: EmbeddedBroker,
) -> None:
    ok(cli(broker, "topics", "create", "--topic", "t"))
    assert "already exists" in fails(cli(broker, "topics", "create", "--topic", "t"))
    assert ok(cli(broker, "topics", "create", "--topic", "t", "--if-not-exists")) == ""


def test_tables_as_json(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "j", "--partitions", "2",
           "--config", "segment.bytes=1048576"))  # fmt: skip
    (listed,) = json.loads(ok(cli(broker, "topics", "list", "--format", "json")))
    assert listed["topic"] == "j"
    assert listed["partition_count"] == 2
    (topic,) = json.loads(ok(cli(broker, "topics", "describe", "--format", "json")))
    # overrides and the broker's defaults (the fixture's ring.bytes), as Kafka
    assert topic["configs"] == {"ring.bytes": "1048576", "segment.bytes": "1048576"}
    assert [p["partition"] for p in topic["partitions"]] == [0, 1]
    assert topic["partitions"][0]["high_watermark"] == 0
    assert "ring_capacity_bytes" not in topic["partitions"][0]  # --storage only
    (topic,) = json.loads(
        ok(cli(broker, "topics", "describe", "--format", "json", "--storage"))
    )
    assert topic["partitions"][0]["ring_capacity_bytes"] == 1 << 20
    offsets = json.loads(ok(cli(broker, "get-offsets", "--format", "json")))
    assert offsets == [
        {"topic": "j", "partition": 0, "offset": 0},
        {"topic": "j", "partition": 1, "offset": 0},
    ]


def test_illegal_topic_name_fails_naming_the_rule(broker: EmbeddedBroker) -> None:
    err = fails(cli(broker, "topics", "create", "--topic", "a/b"))
    assert "topic name 'a/b'" in err
    assert "legal characters are ASCII letters, digits, '.', '_' and '-'" in err
    assert ok(cli(broker, "topics", "list")) == ""


def test_unknown_config_key_is_named(broker: EmbeddedBroker) -> None:
    err = fails(
        cli(broker, "topics", "create", "--topic", "c", "--config", "retention.mss=1")
    )
    assert "unknown topic config 'retention.mss'" in err
    assert "retention.ms" in err  # the known ones are listed
    err = fails(
        cli(broker, "topics", "create", "--topic", "c", "--config", "novalue"), 2
    )
    assert "'novalue' is not key=value" in err
    assert fails(
        cli(broker, "topics", "create", "--topic", "c", "--replication-factor", "3"),
        code=2,
    ).count("replication factor is 1")


def test_alter_sets_and_deletes_configs_and_grows_partitions(
    broker: EmbeddedBroker,
) -> None:
    ok(cli(broker, "topics", "create", "--topic", "a", "--config", "flush.ms=5000"))
    out = ok(cli(broker, "topics", "alter", "--topic", "a",
                 "--add-config", "retention.ms=1000,retention.bytes=4096",
                 "--delete-config", "flush.ms", "--partitions", "3"))  # fmt: skip
    assert out == "Completed updating config for topic a.\n"
    head = ok(cli(broker, "topics", "describe", "--topic", "a")).splitlines()[0]
    assert "\tPartitionCount: 3\t" in head
    assert head.endswith(
        "\tConfigs: retention.bytes=4096,retention.ms=1000,ring.bytes=1048576"
    )
    assert "nothing to alter" in fails(
        cli(broker, "topics", "alter", "--topic", "a"), 2
    )
    assert "unknown topic config 'bogus'" in fails(
        cli(broker, "topics", "alter", "--topic", "a", "--add-config", "bogus=1")
    )
    assert "does not exist" in fails(
        cli(broker, "topics", "alter", "--topic", "zz", "--partitions", "2")
    )


def test_no_broker_is_one_line_naming_serve(tmp_path: Path) -> None:
    err = fails(cli(tmp_path / "none", "topics", "list"))
    assert "no broker answers" in err
    assert "shmbroker serve --data-dir" in err


# ---- produce and consume ------------------------------------------------------------


def test_produce_then_consume_through_pipes(broker: EmbeddedBroker) -> None:
    """If N lines go into `produce`, then `consume --from-beginning --max-messages N`
    prints them in order, and the count on stderr."""
    n = 20_000
    lines = b"".join(b"line %d\n" % i for i in range(n))
    data_dir = str(broker.data_dir)
    producer = shmbroker("produce", "--topic", "pipes", "--data-dir", data_dir)
    out, err = producer.communicate(lines, timeout=30)
    assert producer.returncode == 0, err
    assert (out, err) == (b"", b"")
    consumer = shmbroker("consume", "--topic", "pipes", "--from-beginning",
                         "--max-messages", str(n), "--data-dir", data_dir)  # fmt: skip
    out, err = consumer.communicate(timeout=30)
    assert consumer.returncode == 0, err
    assert out == lines
    assert err == b"Processed a total of %d messages\n" % n


def test_consume_prints_key_offset_partition_timestamp(
    broker: EmbeddedBroker,
) -> None:
    ok(cli(broker, "topics", "create", "--topic", "kv"))
    ok(cli(broker, "produce", "--topic", "kv", "--property", "parse.key=true",
           "--property", "key.separator=:", input=b"k1:v1\nk2:v:2\r\n"))  # fmt: skip
    result = cli(broker, "consume", "--topic", "kv", "--from-beginning",
                 "--max-messages", "2", "--property", "print.key=true",
                 "--property", "print.offset=true")  # fmt: skip
    assert ok(result) == "Offset:0\tk1\tv1\nOffset:1\tk2\tv:2\n"
    assert result.stderr == "Processed a total of 2 messages\n"
    out = ok(cli(broker, "consume", "--topic", "kv", "--partition", "0",
                 "--offset", "1", "--max-messages", "1",
                 "--property", "print.timestamp=true",
                 "--property", "print.partition=true",
                 "--property", "print.key=true",
                 "--property", "key.separator= | "))  # fmt: skip
    assert re.fullmatch(r"CreateTime:\d{13} \| Partition:0 \| k2 \| v:2\n", out), out


def test_keys_go_to_kafkas_partitions_and_null_prints_null(
    broker: EmbeddedBroker,
) -> None:
    ok(cli(broker, "topics", "create", "--topic", "k10", "--partitions", "10"))
    # murmur2 as Kafka's Java client: "foobar" -> 6, "abc" -> 7 of 10 partitions
    ok(cli(broker, "produce", "--topic", "k10", "--property", "parse.key=true",
           "--property", "null.marker=NULL",
           input=b"foobar\tx\nabc\ty\nabc\tNULL\n"))  # fmt: skip
    out = ok(cli(broker, "consume", "--topic", "k10", "--from-beginning",
                 "--max-messages", "3", "--property", "print.partition=true",
                 "--property", "print.key=true"))  # fmt: skip
    assert sorted(out.splitlines()) == [
        "Partition:6\tfoobar\tx",
        "Partition:7\tabc\tnull",
        "Partition:7\tabc\ty",
    ]


def test_keyless_lines_go_stickily_to_one_partition_then_another(
    broker: EmbeddedBroker,
) -> None:
    """Each read of stdin is one batch to the producer's sticky partition; the
    next read goes to another (Kafka's sticky partitioner, KIP-480)."""
    ok(cli(broker, "topics", "create", "--topic", "sticky", "--partitions", "2"))
    lines = b"".join(b"%07d\n" % i for i in range(100_000))  # 800 KB: 7 reads
    ok(cli(broker, "produce", "--topic", "sticky", input=lines))
    with Admin(broker.data_dir) as admin:
        ends = admin.list_offsets({("sticky", p): "latest" for p in range(2)})
    assert sum(n or 0 for n in ends.values()) == 100_000
    assert all(ends.values()), ends  # both partitions got some


def test_keyed_and_keyless_lines_keep_their_order_in_a_partition(
    broker: EmbeddedBroker,
) -> None:
    """A null key (null.marker) goes stickily, the keyed ones by murmur2; within a
    partition the records are in line order whichever way each went."""
    ok(cli(broker, "topics", "create", "--topic", "mix", "--partitions", "2"))
    lines = [
        b"NULL\t%d" % i if i % 3 == 0 else b"k%d\t%d" % (i % 5, i) for i in range(60)
    ]
    text = b"\n".join(lines) + b"\n"
    ok(cli(broker, "produce", "--topic", "mix", "--property", "parse.key=true",
           "--property", "null.marker=NULL", input=text))  # fmt: skip
    for p in range(2):
        out = cli(broker, "consume", "--topic", "mix", "--partition", str(p),
                  "--offset", "earliest", "--timeout-ms", "500")  # fmt: skip
        values = [int(v) for v in ok(out).split()]
        assert values == sorted(values)
    total = ok(cli(broker, "get-offsets", "--topic", "mix")).split()
    assert sum(int(line.rsplit(":", 1)[1]) for line in total) == 60


def test_headers_round_trip(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "produce", "--topic", "h", "--property", "parse.headers=true",
           "--property", "parse.key=true",
           input=b"app:web,trace:42\tk\tv\nnone:\tk2\tv2\n"))  # fmt: skip
    out = ok(cli(broker, "consume", "--topic", "h", "--from-beginning",
                 "--max-messages", "2", "--property", "print.headers=true",
                 "--property", "print.key=true"))  # fmt: skip
    assert out == "app:web,trace:42\tk\tv\nnone:\tk2\tv2\n"


def test_line_without_key_separator_stops_after_the_lines_before(
    broker: EmbeddedBroker,
) -> None:
    err = fails(cli(broker, "produce", "--topic", "bad", "--property",
                    "parse.key=true", input=b"a\t1\nnokey\nb\t2\n"))  # fmt: skip
    assert "No key separator found on line number 2: 'nokey'" in err
    assert ok(cli(broker, "get-offsets", "--topic", "bad")) == "bad:0:1\n"
    assert "unknown property 'parse.keys'" in fails(
        cli(broker, "produce", "--topic", "bad", "--property", "parse.keys=true"), 2
    )


def test_produce_splits_batches_at_max_message_bytes(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "small",
           "--config", "max.message.bytes=2000"))  # fmt: skip
    lines = b"".join(b"%05d\n" % i for i in range(3000))
    ok(cli(broker, "produce", "--topic", "small", input=lines))
    out = ok(cli(broker, "consume", "--topic", "small", "--from-beginning",
                 "--max-messages", "3000"))  # fmt: skip
    assert out.encode() == lines
    with Admin(broker.data_dir) as admin:
        (described,) = admin.describe_topics(["small"])
    assert described.partitions[0].high_watermark == 3000


def test_produce_reports_an_oversized_line_and_sends_the_rest(
    broker: EmbeddedBroker,
) -> None:
    """As Kafka's console producer: the error names the line, the others go."""
    ok(cli(broker, "topics", "create", "--topic", "small2",
           "--config", "max.message.bytes=2000"))  # fmt: skip
    lines = [b"first", b"x" * 3000, b"third", b"k\t" + b"y" * 2500, b"last"]
    err = fails(cli(broker, "produce", "--topic", "small2", "--property",
                    "parse.key=false", input=b"\n".join(lines) + b"\n"))  # fmt: skip
    first, second, summary = err.splitlines()
    assert first.startswith(
        "Error when sending line 2 to topic small2 with key: null, value: 3000 bytes "
        "with error: "
    )
    assert "max.message.bytes (2000)" in first
    assert second.startswith("Error when sending line 4 to topic small2")
    assert summary == "Error: 2 of 5 records not sent (too large for topic small2)"
    out = ok(cli(broker, "consume", "--topic", "small2", "--from-beginning",
                 "--max-messages", "3", "--timeout-ms", "2000"))  # fmt: skip
    assert out == "first\nthird\nlast\n"


def test_consume_timeout_ends_and_counts(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "quiet"))
    with Producer(broker.data_dir) as producer:
        producer.send_batch("quiet", [b"old"], partition=0)
    result = cli(broker, "consume", "--topic", "quiet", "--timeout-ms", "100")
    assert ok(result) == ""  # latest by default: the old record is not printed
    assert result.stderr == "Processed a total of 0 messages\n"
    result = cli(broker, "consume", "--topic", "quiet", "--from-beginning",
                 "--timeout-ms", "100")  # fmt: skip
    assert ok(result) == "old\n"
    assert result.stderr == "Processed a total of 1 messages\n"


def test_consume_of_a_topic_not_there_yet_creates_it_and_waits(
    broker: EmbeddedBroker,
) -> None:
    """If the console consumer is started on a topic that does not exist, then (the
    broker auto-creating topics) it creates it and prints what is produced later,
    as Kafka's does."""
    proc = shmbroker("consume", "--topic", "later", "--from-beginning",
                     "--max-messages", "1", "--data-dir", broker.data_dir)  # fmt: skip
    try:
        with Admin(broker.data_dir) as admin:
            wait_until(lambda: "later" in admin.list_topics(), 30, "topic 'later'")
        with Producer(broker.data_dir) as producer:
            producer.send_batch("later", [b"first"], partition=0)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, b"first\n"), err
    assert err.decode().endswith("Processed a total of 1 messages\n")


def test_consume_of_a_missing_topic_fails_when_topics_are_not_auto_created(
    tmp_path: Path, shm_prefix: str
) -> None:
    with EmbeddedBroker(
        tmp_path / "data", shm_prefix=shm_prefix, auto_create_topics=False, remove=True
    ) as broker:
        assert "topic 'nope' does not exist" in fails(
            cli(broker, "consume", "--topic", "nope")
        )


def test_consume_usage_errors(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "u"))
    assert "Options group and partition cannot be specified together" in fails(
        cli(broker, "consume", "--topic", "u", "--group", "g", "--partition", "0"), 2
    )
    assert "partition is required when offset" in fails(
        cli(broker, "consume", "--topic", "u", "--offset", "3"), 2
    )
    assert "'-3' is incorrect" in fails(
        cli(broker, "consume", "--topic", "u", "--partition", "0", "--offset", "-3"), 2
    )
    assert "valid offsets are [0, 0)" in fails(
        cli(broker, "consume", "--topic", "u", "--partition", "0", "--offset", "5")
    )


def test_ctrl_c_ends_consume_with_the_count(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "produce", "--topic", "live", input=b"first\n"))
    consumer = shmbroker("consume", "--topic", "live", "--from-beginning",
                         "--data-dir", str(broker.data_dir))  # fmt: skip
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline() == b"first\n"
        consumer.send_signal(signal.SIGINT)
        _, err = consumer.communicate(timeout=10)
    finally:
        consumer.kill()
    assert consumer.returncode == 0
    assert err == b"Processed a total of 1 messages\n"


# ---- get-offsets, perf, gc, doctor --------------------------------------------------


def test_get_offsets_earliest_latest_and_by_time(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "o", "--partitions", "2"))
    ok(cli(broker, "topics", "create", "--topic", "other"))
    with Producer(broker.data_dir) as producer:
        producer.send_batch("o", [b"a", b"b"], partition=0, timestamp=1000)
        producer.send_batch("o", [b"c"], partition=0, timestamp=2000)
        producer.send_batch("o", [b"d"], partition=1, timestamp=3000)
    assert ok(cli(broker, "get-offsets", "--topic", "o")) == "o:0:3\no:1:1\n"
    assert ok(cli(broker, "get-offsets", "--topic", "o", "--time", "-2",
                  "--partitions", "1")) == "o:1:0\n"  # fmt: skip
    assert ok(cli(broker, "get-offsets", "--topic", "o", "--time", "1500")) == (
        "o:0:2\no:1:0\n"
    )
    # after the last record: no line, as Kafka
    assert ok(cli(broker, "get-offsets", "--topic", "o", "--time", "2500")) == "o:1:0\n"
    assert ok(cli(broker, "get-offsets")) == "o:0:3\no:1:1\nother:0:0\n"
    assert "Could not match any" in fails(cli(broker, "get-offsets", "--topic", "x"))
    assert "Malformed time argument soon" in fails(
        cli(broker, "get-offsets", "--time", "soon"), 2
    )


def test_perf_produce_and_consume_print_kafkas_lines(broker: EmbeddedBroker) -> None:
    out = ok(cli(broker, "perf", "produce", "--topic", "perf", "--num-records",
                 "5000", "--record-size", "10", "--batch", "100"))  # fmt: skip
    kafka, micros = out.splitlines()
    assert re.fullmatch(
        r"5000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg "
        r"latency, [\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, "
        r"\d+ ms 99.9th\.",
        kafka,
    )
    assert re.fullmatch(
        r"[\d.]+ us 50th, [\d.]+ us 95th, [\d.]+ us 99th, [\d.]+ us 99.9th\.", micros
    )
    header, row = ok(cli(broker, "perf", "consume", "--topic", "perf",
                         "--messages", "5000")).splitlines()  # fmt: skip
    assert header.startswith("start.time, end.time, data.consumed.in.MB, MB.sec, ")
    fields = row.split(", ")
    assert len(fields) == 10
    assert fields[4] == "5000"  # data.consumed.in.nMsg
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}", fields[0])
    result = json.loads(ok(cli(broker, "perf", "consume", "--topic", "perf",
                               "--messages", "6000", "--timeout", "50",
                               "--format", "json")))  # fmt: skip
    assert (result["messages"], result["timed_out"]) == (5000, True)


def test_gc_dry_run_lists_nothing_of_a_live_broker(broker: EmbeddedBroker) -> None:
    ok(cli(broker, "topics", "create", "--topic", "g"))
    prefix = broker.shm_base.removeprefix("/")
    result = CliRunner().invoke(
        main, ["gc", "--dry-run", "--shm-prefix", prefix, "--format", "json"]
    )
    assert json.loads(ok(result)) == {"dry_run": True, "removed": [], "bytes": 0}
    assert "must start with 'shmb.'" in fails(
        CliRunner().invoke(main, ["gc", "--shm-prefix", "other."])
    )


def test_doctor_exit_status_follows_its_findings(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    findings = json.loads(ok(cli(broker, "doctor", "--format", "json")))
    assert {"check", "status", "message"} == set(findings[0])
    assert "error" not in {f["status"] for f in findings}
    broken = tmp_path / "broken"
    broken.mkdir(mode=0o700)
    (broken / "topics.json").write_text("{not json")
    result = cli(broken, "doctor")
    assert result.exit_code == 1
    assert re.search(r"^ERROR  registry: ", result.stdout, re.MULTILINE)
    assert "Traceback" not in result.output


def test_data_dir_defaults_to_the_environment(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHMBROKER_DATA_DIR", str(broker.data_dir))
    ok(cli(broker, "topics", "create", "--topic", "env"))
    result = CliRunner().invoke(main, ["topics", "list"], env=dict(os.environ))
    assert ok(result) == "env\n"
