"""Every client command both ways against one broker: on its data directory
(shared memory) and on --bootstrap-server (its gateway, through confluent-kafka).
The outputs are compared byte for byte; where the Kafka protocol cannot carry a
fact the difference is named here."""

from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shmbroker import Admin, Consumer, EmbeddedBroker
from shmbroker.cli import main
from tests.cli.test_groups import member
from tests.gateway import conftest as gateway

broker = gateway.broker  # this module's broker: the gateway's, with its port

# The gateway serves Metadata up to v7, which has no topic ids: over the Kafka
# protocol a topic's id is Kafka's zero id. Compared outputs mask it.
TOPIC_ID = re.compile(r'(TopicId: |"topic_id": ")[0-9a-f]{32}')
KEYED = b"".join(b"k%d\tv%d\n" % (i % 7, i) for i in range(60))
FORMAT = " ".join(
    f"--property print.{p}=true" for p in ("timestamp", "key", "partition", "offset")
)


def run(broker: EmbeddedBroker, command: str, *, remote: bool,
        input: bytes | None = None) -> Result:  # fmt: skip
    """`shmbroker <command>` in this process, on the data directory or the
    gateway."""
    target = (
        ["--bootstrap-server", broker.bootstrap_servers]
        if remote
        else ["--data-dir", str(broker.data_dir)]
    )
    return CliRunner().invoke(main, [*shlex.split(command), *target], input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def local(broker: EmbeddedBroker, command: str, input: bytes | None = None) -> str:
    return ok(run(broker, command, remote=False, input=input))


def remote(broker: EmbeddedBroker, command: str, input: bytes | None = None) -> str:
    return ok(run(broker, command, remote=True, input=input))


def both(broker: EmbeddedBroker, command: str, mask: re.Pattern[str] | None = None
         ) -> str:  # fmt: skip
    """The command's stdout, the same both ways (after mask, if given)."""
    here, there = local(broker, command), remote(broker, command)
    if mask is not None:
        here, there = mask.sub(r"\1-", here), mask.sub(r"\1-", there)
    assert there == here, f"{command}:\nlocal:\n{here}\nremote:\n{there}"
    return here


def new_topic(broker: EmbeddedBroker, flags: str = "", records: bytes = b"") -> str:
    """A topic of the test's own (created locally), with records if given."""
    topic = f"r-{uuid.uuid4().hex[:8]}"
    local(broker, f"topics create --topic {topic} {flags}")
    if records:
        local(broker, f"produce --topic {topic} --property parse.key=true", records)
    return topic


def test_topics_both_ways(broker: EmbeddedBroker) -> None:
    a = new_topic(broker, "--partitions 3 --config retention.ms=90000")
    b = f"r-{uuid.uuid4().hex[:8]}"
    created = remote(broker, f"topics --create --topic {b} --partitions 3 "
                             f"--config retention.ms=90000")  # fmt: skip
    assert created == f"Created topic {b}.\n"
    listed = both(broker, "topics list")
    assert {a, b} <= set(listed.split())
    assert remote(broker, "topics --list") == listed
    for topic in (a, b):
        described = both(broker, f"topics describe --topic {topic}", TOPIC_ID)
        assert "Configs: retention.ms=90000,ring.bytes=4194304\n" in described
        both(broker, f"topics --describe --topic {topic} --format json", TOPIC_ID)
        listed = both(broker, "topics list --format json", TOPIC_ID)
        assert f'"topic": "{topic}"' in listed
    altered = remote(broker, f"topics alter --topic {b} --partitions 4 "
                             f"--add-config segment.ms=100000")  # fmt: skip
    assert altered == f"Completed updating config for topic {b}.\n"
    described = both(broker, f"topics describe --topic {b}", TOPIC_ID)
    assert "PartitionCount: 4" in described
    assert "Configs: retention.ms=90000,ring.bytes=4194304,segment.ms=100000" in (
        described
    )
    assert remote(broker, f"topics --delete --topic {b}") == ""
    assert b not in both(broker, "topics list").split()
    missing = run(broker, f"topics delete --topic {b}", remote=True)
    assert missing.exit_code == 1
    assert "Traceback" not in missing.output
    assert remote(broker, f"topics delete --topic {b} --if-exists") == ""


@pytest.mark.parametrize(
    "command",
    [
        "topics create --topic {topic}",
        "topics describe --topic nope-{topic}",
        "topics delete --topic nope-{topic}",
        "topics alter --topic nope-{topic} --add-config retention.ms=1",
        "topics alter --topic {topic} --add-config bogus=1",
        "topics alter --topic {topic} --partitions 1",
        "topics create --topic 'bad name!'",
        "configs --describe --topic nope-{topic}",
        "get-offsets --topic {topic} --partitions 5",
        "perf consume --topic nope-{topic} --messages 1 --hide-header",
    ],
)
def test_errors_are_the_same_both_ways(broker: EmbeddedBroker, command: str) -> None:
    """The broker's own words reach the Kafka client; a missing topic is never
    created by looking at it."""
    command = command.format(topic=new_topic(broker))
    here = run(broker, command, remote=False)
    there = run(broker, command, remote=True)
    assert here.exit_code == there.exit_code == 1, (here.output, there.output)
    assert there.stderr == here.stderr
    assert here.stderr.startswith("Error: ")
    assert len(here.stderr.splitlines()) == 1
    assert not [t for t in local(broker, "topics list").split() if t.startswith("nope")]


def test_configs_with_sources_both_ways(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker, "--config retention.ms=90000")
    lines = both(broker, f"configs --describe --all --topic {topic}").splitlines()
    assert lines[0] == f"All configs for topic {topic} are:"
    assert (
        "  retention.ms=90000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:"
        "retention.ms=90000, DEFAULT_CONFIG:retention.ms=604800000}" in lines
    )
    assert (  # the fixture's broker default for topics
        "  ring.bytes=4194304 sensitive=false synonyms={STATIC_BROKER_CONFIG:"
        "ring.bytes=4194304, DEFAULT_CONFIG:ring.bytes=16777216}" in lines
    )
    assert (
        "  segment.bytes=1073741824 sensitive=false synonyms={DEFAULT_CONFIG:"
        "segment.bytes=1073741824}" in lines
    )
    dynamic = both(broker, f"configs --describe --entity-type topics "
                           f"--entity-name {topic}")  # fmt: skip
    assert dynamic == (
        f"Dynamic configs for topic {topic} are:\n"
        f"  retention.ms=90000 sensitive=false synonyms={{DYNAMIC_TOPIC_CONFIG:"
        f"retention.ms=90000, DEFAULT_CONFIG:retention.ms=604800000}}\n"
    )
    both(broker, f"configs describe --all --topic {topic} --format json")
    altered = remote(broker, f"configs --alter --topic {topic} --add-config "
                             f"retention.ms=1000,flush.ms=2000 "
                             f"--delete-config segment.ms")  # fmt: skip
    assert altered == f"Completed updating config for topic {topic}.\n"
    dynamic = both(broker, f"configs --describe --topic {topic}")
    assert "  flush.ms=2000 " in dynamic
    assert "  retention.ms=1000 " in dynamic


def test_produce_and_consume_both_ways(broker: EmbeddedBroker) -> None:
    """Keys land on the same partitions both ways (murmur2); each partition's
    records read are the same whichever way they are read."""
    mine, theirs = (
        new_topic(broker, "--partitions 3"),
        new_topic(broker, "--partitions 3"),
    )
    keyed = "--property parse.key=true"
    assert local(broker, f"produce --topic {mine} {keyed}", KEYED) == ""
    assert remote(broker, f"produce --topic {theirs} {keyed}", KEYED) == ""
    layouts = []
    for topic in (mine, theirs):
        with Admin(broker.data_dir) as admin:
            ends = admin.list_offsets({(topic, p): "latest" for p in range(3)})
        assert sum(n or 0 for n in ends.values()) == 60
        per_partition = [
            both(
                broker,
                f"consume --topic {topic} --partition {p} --offset earliest "
                f"--max-messages {ends[(topic, p)]} {FORMAT}",
            )
            for p in range(3)
        ]
        assert [len(o.splitlines()) for o in per_partition] == list(ends.values())
        layouts.append([re.sub(r"CreateTime:\d+\t", "", o) for o in per_partition])
    assert layouts[0] == layouts[1]  # the same partitions, offsets, keys, values
    assert both(broker, f"get-offsets --topic '{mine}|{theirs}'").count(":") == 12
    both(broker, f"get-offsets --topic {mine} --time earliest")
    both(broker, f"get-offsets --topic {mine} --format json")


def test_whole_topic_consume_prints_the_same_records(broker: EmbeddedBroker) -> None:
    """Across partitions the order is the client's; the lines are the same."""
    topic = new_topic(broker, "--partitions 2", KEYED)
    command = f"consume --topic {topic} --from-beginning --max-messages 60 {FORMAT}"
    here = run(broker, command, remote=False)
    there = run(broker, command, remote=True)
    assert sorted(ok(here).splitlines()) == sorted(ok(there).splitlines())
    assert here.stderr == there.stderr == "Processed a total of 60 messages\n"


def test_an_oversized_line_is_reported_both_ways(broker: EmbeddedBroker) -> None:
    topic = new_topic(broker, "--config max.message.bytes=2000")
    lines = b"first\n" + b"x" * 3000 + b"\nlast\n"
    for way in (False, True):
        result = run(broker, f"produce --topic {topic} --partition 0", input=lines,
                     remote=way)  # fmt: skip
        assert result.exit_code == 1
        first, summary = result.stderr.splitlines()
        assert first.startswith(
            f"Error when sending line 2 to topic {topic} with key: null, value: "
            f"3000 bytes with error: "
        )
        assert (
            summary == f"Error: 1 of 3 records not sent (too large for topic {topic})"
        )
    out = both(broker, f"consume --topic {topic} --from-beginning --max-messages 4")
    assert out == "first\nlast\nfirst\nlast\n"


PERF_PRODUCE = re.compile(
    r"1000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
    r"[\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99.9th.\n"
    r"[\d.]+ us 50th, [\d.]+ us 95th, [\d.]+ us 99th, [\d.]+ us 99.9th.\n"
)


def test_perf_both_ways(broker: EmbeddedBroker) -> None:
    """Timings differ run to run; the layout and the counts do not."""
    topic = new_topic(broker)
    for way in (False, True):
        out = ok(run(broker, f"perf produce --topic {topic} --num-records 1000 "
                             f"--record-size 10 --batch 100", remote=way))  # fmt: skip
        assert PERF_PRODUCE.fullmatch(out), out
    for way in (False, True):
        out = ok(run(broker, f"perf consume --topic {topic} --messages 2000 "
                             f"--format json", remote=way))  # fmt: skip
        measured = json.loads(out)
        assert measured["messages"] == 2000
        assert not measured["timed_out"]


def test_command_config_is_passed_to_the_kafka_client(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Kafka client properties reach librdkafka: a wrong security.protocol is a
    one-line error naming it, the right one works."""
    good, bad = tmp_path / "good.properties", tmp_path / "bad.properties"
    good.write_text("# Kafka client properties\nsecurity.protocol=PLAINTEXT\n"
                    "client.id = from-file\n")  # fmt: skip
    bad.write_text("security.protocol=NOT_A_PROTOCOL\n")
    topic = new_topic(broker)
    assert topic in remote(broker, f"topics list --command-config {good}").split()
    failed = run(broker, f"topics list --command-config {bad}", remote=True)
    assert failed.exit_code == 1
    assert failed.stderr == (
        'Error: Invalid value "NOT_A_PROTOCOL" for configuration property '
        '"security.protocol"\n'
    )
    here = run(broker, f"topics list --command-config {good}", remote=False)
    assert here.exit_code == 2
    assert "--command-config holds Kafka client properties" in here.stderr


def test_consumer_groups_both_ways(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic, group = new_topic(broker, "--partitions 2", KEYED), f"g-{uuid.uuid4().hex}"
    with Consumer(broker.data_dir, group_id=group) as committer:
        committer.commit({(topic, 0): 3, (topic, 1): 5})
    assert group in both(broker, "consumer-groups --list").split()
    both(broker, "consumer-groups --list --state")
    both(broker, f"consumer-groups --describe --group {group}")
    both(broker, "consumer-groups --describe --all-groups --offsets")
    with member(broker.data_dir, group, [topic]):
        both(broker, f"consumer-groups --describe --group {group} --members --verbose")
        both(broker, f"consumer-groups --describe --group {group}")
    reset = f"consumer-groups --reset-offsets --group {group} --topic {topic}"
    exported = both(broker, f"{reset} --to-earliest --dry-run --export")
    assert exported == f"{topic},0,0\n{topic},1,0\n"
    plan = tmp_path / "plan.csv"
    plan.write_text(f"{topic},0,1\n{topic},1,2\n")
    remote(broker, f"consumer-groups --reset-offsets --group {group} "
                   f"--from-file {plan} --execute")  # fmt: skip
    with Admin(broker.data_dir) as admin:
        offsets = admin.list_group_offsets(group)
    assert sorted(o.offset for o in offsets.values()) == [1, 2]
    deleted = remote(broker, f"consumer-groups --delete-offsets --group {group} "
                             f"--topic {topic}:0")  # fmt: skip
    assert deleted.startswith(
        f"Request succeed for deleting offsets with topic {topic} group {group}\n"
    )
    assert remote(broker, f"consumer-groups --delete --group {group}") == (
        f"Deletion of requested consumer groups ('{group}') was successful.\n"
    )


def test_consume_with_a_group_and_include_both_ways(broker: EmbeddedBroker) -> None:
    prefix = f"r-{uuid.uuid4().hex[:8]}"
    for topic in (f"{prefix}-a", f"{prefix}-b"):
        local(broker, f"topics create --topic {topic}")
        local(broker, f"produce --topic {topic}", b"1\n2\n3\n")
    for way in (False, True):
        group = f"g-{uuid.uuid4().hex}"
        out = run(broker, f"consume --topic {prefix}-a --group {group} "
                          f"--from-beginning --max-messages 3 --timeout-ms 10000",
                  remote=way)  # fmt: skip
        assert ok(out) == "1\n2\n3\n"
        with Admin(broker.data_dir) as admin:
            (committed,) = admin.list_group_offsets(group).values()
        assert committed.offset == 3
        command = f"consume --include '{prefix}-.*' --from-beginning --max-messages 6"
        out = run(broker, f"{command} --timeout-ms 10000", remote=way)
        assert sorted(ok(out).split()) == ["1", "1", "2", "2", "3", "3"]
