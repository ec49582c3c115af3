"""`consumer-groups` and `consume --group` against a real supervisor: Kafka's layouts
(kafka-consumer-groups 3.x, columns padded to the widest value, `-` for a missing
one), resets with every spec, the refusals while a group has live members, and
one-line errors (never a traceback)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, TopicPartition
from tests.cli.test_cli import cli, fails, ok, shmbroker
from tests.conftest import wait_until

NO_MEMBERS = "\nConsumer group '{}' has no active members.\n"


@contextmanager
def member(data_dir: Path, group: str, topics: list[str]) -> Iterator[Consumer]:
    """A live member that has its assignment (polled here until the group gave it
    one); its heartbeat thread keeps it in the group between polls, as Kafka's
    does for max.poll.interval.ms."""
    consumer = Consumer(
        data_dir, group_id=group, client_id="app", enable_auto_commit=False
    )
    try:
        consumer.subscribe(topics)

        def assigned() -> bool:
            consumer.poll_batch(timeout=0.01)
            return bool(consumer.assignment())

        wait_until(assigned, 10, f"group {group!r} to assign partitions")
        yield consumer
    finally:
        consumer.close()


def commit(data_dir: Path, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit as a group without members does (Kafka's standalone commit)."""
    with Consumer(data_dir, group_id=group) as consumer:
        consumer.commit(offsets)


def committed(data_dir: Path, group: str) -> dict[TopicPartition, int]:
    with Admin(data_dir) as admin:
        return {tp: o.offset for tp, o in admin.list_group_offsets(group).items()}


def produce(data_dir: Path, topic: str, partition: int, values: list[bytes]) -> None:
    with Producer(data_dir) as producer:
        producer.send_batch(topic, values, partition=partition)


def groups(broker: EmbeddedBroker, *args: str):
    return cli(broker, "consumer-groups", *args)


# ---- --list -------------------------------------------------------------------------


def test_list_names_groups_and_with_state_filters_them(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    commit(broker.data_dir, "idle", {("t", 0): 0})
    with member(broker.data_dir, "live", ["t"]):
        assert ok(groups(broker, "--list")) == "idle\nlive\n"
        # Kafka's "%-{widest+10}s %-20s": the state column is padded too
        assert ok(groups(broker, "--list", "--state")) == (
            f"{'GROUP':25} {'STATE':20}\n"
            f"{'idle':25} {'Empty':20}\n"
            f"{'live':25} {'Stable':20}\n"
        )
        assert ok(groups(broker, "--list", "--state", "stable")) == (
            f"{'GROUP':25} {'STATE':20}\n{'live':25} {'Stable':20}\n"
        )
        both = ok(groups(broker, "--list", "--state", "Empty, STABLE"))
        assert len(both.splitlines()) == 3
        assert json.loads(ok(groups(broker, "--list", "--format", "json"))) == [
            {"group": "idle", "state": "Empty", "protocol_type": "consumer"},
            {"group": "live", "state": "Stable", "protocol_type": "consumer"},
        ]
        err = fails(groups(broker, "--list", "--state", "stable,running"), 2)
        assert "Invalid state list 'stable,running'. Valid states are: " in err


# ---- --describe ---------------------------------------------------------------------


def test_describe_offsets_of_a_live_group_in_kafkas_layout(
    broker: EmbeddedBroker,
) -> None:
    """If a live member owns some partitions and the group also has an offset for
    a partition nobody owns, then the owned rows come first, and the other row has
    `-` for its owner; a partition without a committed offset has `-` for
    CURRENT-OFFSET and LAG."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("orders", 2)
        admin.create_topic("audit")
    produce(broker.data_dir, "orders", 0, [b"o"] * 5)
    produce(broker.data_dir, "orders", 1, [b"o"] * 2)
    produce(broker.data_dir, "audit", 0, [b"a"] * 4)
    commit(broker.data_dir, "billing", {("audit", 0): 1})
    with member(broker.data_dir, "billing", ["orders"]) as consumer:
        consumer.commit({("orders", 0): 3})
        with Admin(broker.data_dir) as admin:
            (m,) = admin.describe_group("billing").members
        result = groups(broker, "--describe", "--group", "billing")
        assert result.stderr == ""  # Stable: no notice
        host = m.host.ljust(15)
        assert ok(result) == (
            "\n"
            f"GROUP           TOPIC           PARTITION  CURRENT-OFFSET  "
            f"LOG-END-OFFSET  LAG             {'CONSUMER-ID':{len(m.member_id)}} "
            f"{'HOST':15} CLIENT-ID\n"
            f"billing         orders          0          3               "
            f"5               2               {m.member_id} {host} app\n"
            f"billing         orders          1          -               "
            f"2               -               {m.member_id} {host} app\n"
            f"billing         audit           0          1               "
            f"4               3               -{' ' * (len(m.member_id) - 1)} "
            f"{'-':15} -\n"
        )
        assert ok(groups(broker, "--describe", "--group", "billing", "--offsets")) == (
            result.stdout
        )
        (described,) = json.loads(
            ok(groups(broker, "--describe", "--group", "billing", "--format", "json"))
        )
    assert described["state"] == "Stable"
    assert described["offsets"][1] == {
        "group": "billing",
        "topic": "orders",
        "partition": 1,
        "current_offset": None,
        "log_end_offset": 2,
        "lag": None,
        "consumer_id": m.member_id,
        "host": m.host,
        "client_id": "app",
    }
    assert described["offsets"][2]["consumer_id"] is None


def test_describe_members_and_state_of_a_live_group(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("orders", 3)
        admin.create_topic("audit")
    with member(broker.data_dir, "g", ["orders", "audit"]):
        with Admin(broker.data_dir) as admin:
            (m,) = admin.describe_group("g").members
        # Kafka's format ends with "%-15s ", then ASSIGNMENT with --verbose
        head = f"GROUP           {'CONSUMER-ID':{len(m.member_id)}} {'HOST':15} "
        row = f"g               {m.member_id} {m.host:15} "
        assert ok(groups(broker, "--describe", "--group", "g", "--members")) == (
            f"\n{head}CLIENT-ID       #PARTITIONS     \n"
            f"{row}app             4{' ' * 15}\n"
        )
        verbose = groups(broker, "--describe", "--group", "g", "--members", "--verbose")
        assert ok(verbose) == (
            f"\n{head}CLIENT-ID       #PARTITIONS     ASSIGNMENT\n"
            f"{row}app             4               audit(0), orders(0,1,2)\n"
        )
        assert ok(groups(broker, "--describe", "--group", "g", "--state")) == (
            "\nGROUP           COORDINATOR (ID)          ASSIGNMENT-STRATEGY  "
            "STATE                #MEMBERS\n"
            "g               localhost:0 (0)           range                "
            "Stable               1\n"
        )
        (members,) = json.loads(
            ok(
                groups(
                    broker,
                    "--describe",
                    "--group",
                    "g",
                    "--members",
                    "--format",
                    "json",
                )
            )
        )
        (state,) = json.loads(
            ok(
                groups(
                    broker, "--describe", "--group", "g", "--state", "--format", "json"
                )
            )
        )
    assert members["members"][0]["partitions"] == 4
    assert members["members"][0]["assignment"][0] == {"topic": "audit", "partition": 0}
    assert state["coordinator"] == {"host": "localhost", "port": 0, "id": 0}
    assert (state["state"], state["assignment_strategy"], state["members"]) == (
        "Stable",
        "range",
        1,
    )


def test_describe_a_group_without_members(broker: EmbeddedBroker) -> None:
    """If every member left, then Kafka's notice goes to stderr, the offsets table
    has `-` for the owners, the members table is not printed, and the state is
    Empty with `-` for the assignor."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    produce(broker.data_dir, "t", 0, [b"x"] * 3)
    with member(broker.data_dir, "g", ["t"]) as consumer:
        consumer.commit({("t", 0): 2})
    result = groups(broker, "--describe", "--group", "g")
    assert result.stderr == NO_MEMBERS.format("g")
    assert ok(result) == (
        "\nGROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  "
        "LAG             CONSUMER-ID     HOST            CLIENT-ID\n"
        "g               t               0          2               3               "
        "1               -               -               -\n"
    )
    result = groups(broker, "--describe", "--group", "g", "--members")
    assert (ok(result), result.stderr) == ("", NO_MEMBERS.format("g"))
    assert ok(groups(broker, "--describe", "--group", "g", "--state")) == (
        "\nGROUP           COORDINATOR (ID)          ASSIGNMENT-STRATEGY  "
        "STATE                #MEMBERS\n"
        "g               localhost:0 (0)           -                    "
        "Empty                0\n"
    )


def test_unknown_group_is_one_error_line(broker: EmbeddedBroker) -> None:
    for extra in ([], ["--members"], ["--state"], ["--format", "json"]):
        err = fails(groups(broker, "--describe", "--group", "nope", *extra))
        assert err == "Error: Consumer group 'nope' does not exist.\n"
    err = fails(groups(broker, "--delete", "--group", "nope"))
    assert err.startswith(
        "Error: Deletion of some consumer groups failed:\n"
        "* Group 'nope' could not be deleted due to: GroupIdNotFound: "
    )


# ---- live groups: reset and delete refused ------------------------------------------


def test_reset_and_delete_are_refused_while_the_group_has_members(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    produce(broker.data_dir, "t", 0, [b"x"] * 3)
    with member(broker.data_dir, "g", ["t"]) as consumer:
        consumer.commit({("t", 0): 2})
        result = groups(
            broker,
            "--reset-offsets",
            "--group",
            "g",
            "--all-topics",
            "--to-earliest",
            "--execute",
        )
        assert fails(result) == (
            "Error: Assignments can only be reset if the group 'g' is inactive, but "
            "the current state is Stable.\n"
        )
        assert result.stdout == ""
        err = fails(groups(broker, "--delete", "--group", "g"))
        assert err.startswith(
            "Error: Deletion of some consumer groups failed:\n"
            "* Group 'g' could not be deleted due to: GroupNotEmpty: "
        )
        assert committed(broker.data_dir, "g") == {("t", 0): 2}
    out = ok(groups(broker, "--delete", "--group", "g"))
    assert out == "Deletion of requested consumer groups ('g') was successful.\n"
    assert ok(groups(broker, "--list")) == ""
    assert committed(broker.data_dir, "g") == {}


def test_delete_as_json(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    commit(broker.data_dir, "a", {("t", 0): 0})
    result = groups(
        broker, "--delete", "--group", "a", "--group", "b", "--format", "json"
    )
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["deleted"] == ["a"]
    assert list(document["failed"]) == ["b"]


# ---- --reset-offsets ----------------------------------------------------------------


def test_reset_with_every_spec_dry_run_then_execute(broker: EmbeddedBroker) -> None:
    """Records from three hours ago, two hours ago and now (3 each; none older
    than retention.ms, or retention could delete them); the group is at 4. Each
    spec's dry run prints the new offset and changes nothing; --execute commits it,
    and a consumer of the group starts there."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    hour_ms = 3600_000
    now_ms = int(time.time() * 1000)
    with Producer(broker.data_dir) as producer:
        for i, age_ms in enumerate([3 * hour_ms, 2 * hour_ms, 0]):
            values = [b"v%d" % (3 * i + j) for j in range(3)]
            producer.send_batch("t", values, partition=0, timestamp=now_ms - age_ms)

    def kafka_time(moment: datetime) -> str:  # yyyy-MM-ddTHH:mm:ss.SSS
        return (
            moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        )

    # 2.5 hours ago, in UTC (Kafka's default without a zone) and at +01:00
    between = datetime.fromtimestamp((now_ms - 5 * hour_ms // 2) / 1000, timezone.utc)
    at_utc = kafka_time(between)
    at_plus_one = kafka_time(between + timedelta(hours=1)) + "+01:00"
    cases = [
        (["--to-earliest"], 0, ""),
        (["--to-latest"], 9, ""),
        (["--to-offset", "2"], 2, ""),
        (
            ["--to-offset", "20"],
            9,
            "WARN: New offset (20) is higher than latest "
            "offset for topic partition t-0. Value will be set to 9\n",
        ),
        (["--shift-by", "2"], 6, ""),
        (
            ["--shift-by", "-10"],
            0,
            "WARN: New offset (-6) is lower than earliest "
            "offset for topic partition t-0. Value will be set to 0\n",
        ),
        (["--to-datetime", at_utc], 3, ""),
        (["--to-datetime", at_plus_one], 3, ""),
        (["--by-duration", "PT1H"], 6, ""),
        (["--by-duration", "PT2H30M"], 3, ""),
        (["--by-duration", "P1DT1M"], 0, ""),
    ]
    scope = ["--reset-offsets", "--group", "g", "--topic", "t"]
    for spec, new, warning in cases:
        ok(groups(broker, *scope, "--to-offset", "4", "--execute"))
        dry = groups(broker, *scope, *spec, "--dry-run")
        assert ok(dry) == (
            "\nGROUP           TOPIC           PARTITION  NEW-OFFSET\n"
            f"g               t               0          {new}\n"
        ), spec
        assert dry.stderr == warning
        assert committed(broker.data_dir, "g") == {("t", 0): 4}, spec
        assert ok(groups(broker, *scope, *spec, "--execute")) == dry.stdout
        assert committed(broker.data_dir, "g") == {("t", 0): new}, spec
        if new < 9:
            out = ok(
                cli(
                    broker,
                    "consume",
                    "--topic",
                    "t",
                    "--group",
                    "g",
                    "--max-messages",
                    "1",
                )
            )
            assert out == f"v{new}\n", spec
            assert committed(broker.data_dir, "g") == {("t", 0): new + 1}, spec
    result = groups(broker, *scope, "--to-earliest", "--format", "json")
    assert "the --execute option is missing" in result.stderr  # a dry run, as Kafka
    assert json.loads(ok(result)) == {
        "dry_run": True,
        "offsets": [{"group": "g", "topic": "t", "partition": 0, "new_offset": 0}],
    }


def test_reset_scopes(broker: EmbeddedBroker) -> None:
    """--topic t (every partition), --topic t:0,2 (those), --all-topics (those with
    an offset); a group nobody knows can be given offsets (Kafka's Dead state)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 3)
        admin.create_topic("u")
    for p in range(3):
        produce(broker.data_dir, "t", p, [b"x"] * (p + 1))

    def new_offsets(*args: str) -> list[str]:
        out = ok(
            groups(broker, "--reset-offsets", "--group", "fresh", "--to-latest", *args)
        )
        return [" ".join(line.split()) for line in out.splitlines()[2:]]

    assert new_offsets("--topic", "t", "--dry-run") == [
        "fresh t 0 1",
        "fresh t 1 2",
        "fresh t 2 3",
    ]
    assert new_offsets("--topic", "t:2,0", "--topic", "u", "--execute") == [
        "fresh t 0 1",
        "fresh t 2 3",
        "fresh u 0 0",
    ]
    assert new_offsets("--all-topics", "--dry-run") == new_offsets(
        "--topic", "t:0,2", "--topic", "u:0", "--dry-run"
    )
    assert 'The partitions "t-5" do not exist' in fails(
        groups(
            broker,
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "t:1,5",
            "--to-earliest",
            "--dry-run",
        )
    )
    assert "topic 'nope' does not exist" in fails(
        groups(
            broker,
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "nope",
            "--to-earliest",
            "--dry-run",
        )
    )
    assert "Invalid partition 'x' specified in topic arg 't:x'" in fails(
        groups(
            broker,
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "t:x",
            "--to-earliest",
            "--dry-run",
        ),
        2,
    )
    assert "no current committed offset" in fails(
        groups(
            broker,
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "1",
            "--dry-run",
        )
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Command must include exactly one action: --list, --describe"),
        (["--list", "--delete"], "exactly one action"),
        (
            ["--describe"],
            "Option --describe takes one of these options: --all-groups, --group",
        ),
        (["--describe", "--all-groups", "--group", "g"], "--all-groups can't be used"),
        (["--delete-offsets", "--group", "g"], "takes the options --group (one) and"),
        (["--delete-offsets", "--all-groups", "--topic", "t"], "--all-groups can't"),
        (
            [
                "--reset-offsets",
                "--group",
                "g",
                "--all-topics",
                "--to-earliest",
                "--export",
                "--format",
                "json",
            ],
            "--export can't be used with --format json",
        ),
        (["--describe", "--group", "g", "--members", "--state"], "at most one of"),
        (["--describe", "--group", "g", "--state", "Stable"], "does not take a value"),
        (["--list", "--group", "g"], "Option --group can't be used with option --list"),
        (
            ["--delete", "--group", "g", "--topic", "t"],
            "topic-specific offset deletion",
        ),
        (["--reset-offsets", "--group", "g", "--topic", "t"], "one of the following"),
        (
            [
                "--reset-offsets",
                "--group",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-latest",
            ],
            "can't be used with option --to-latest",
        ),
        (["--reset-offsets", "--group", "g", "--to-earliest"], "reset scopes"),
        (
            [
                "--reset-offsets",
                "--group",
                "g",
                "--all-topics",
                "--to-earliest",
                "--dry-run",
                "--execute",
            ],
            "only accepts one of --execute and --dry-run",
        ),
        (
            [
                "--reset-offsets",
                "--group",
                "g",
                "--all-topics",
                "--to-datetime",
                "2024-01-01 10:00:00",
            ],
            "Error parsing timestamp '2024-01-01 10:00:00'",
        ),
        (
            ["--reset-offsets", "--group", "g", "--all-topics", "--by-duration", "1h"],
            "Text cannot be parsed to a Duration",
        ),
        (
            ["--reset-offsets", "--group", "g", "--all-topics", "--by-duration", "PT"],
            "Text cannot be parsed to a Duration",
        ),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Checked before the broker is asked (none runs here)."""
    result = cli(tmp_path, "consumer-groups", *args)
    assert message in fails(result, 2)


# ---- consume --group ----------------------------------------------------------------


def test_consume_with_a_group_goes_on_where_the_last_run_committed(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    produce(broker.data_dir, "t", 0, [b"a0", b"a1", b"a2"])
    produce(broker.data_dir, "t", 1, [b"b0", b"b1"])
    # a new group starts at the log end, as Kafka's (auto.offset.reset=latest)
    result = cli(
        broker, "consume", "--topic", "t", "--group", "late", "--timeout-ms", "300"
    )
    assert (ok(result), result.stderr) == ("", "Processed a total of 0 messages\n")
    first = ok(
        cli(
            broker,
            "consume",
            "--topic",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "3",
        )
    )
    second = ok(
        cli(broker, "consume", "--topic", "t", "--group", "g", "--max-messages", "2")
    )
    lines = first.splitlines() + second.splitlines()
    assert sorted(lines) == ["a0", "a1", "a2", "b0", "b1"]
    assert committed(broker.data_dir, "g") == {("t", 0): 3, ("t", 1): 2}
    assert "Options group and partition cannot be specified together." in fails(
        cli(broker, "consume", "--topic", "t", "--group", "g", "--partition", "0"), 2
    )
    assert "The partition is required when offset is specified." in fails(
        cli(broker, "consume", "--topic", "t", "--group", "g", "--offset", "1"), 2
    )


def test_console_consumer_is_a_live_member_and_commits_on_exit(
    broker: EmbeddedBroker,
) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    produce(broker.data_dir, "t", 0, [b"one", b"two", b"three"])
    consumer = shmbroker(
        "consume",
        "--topic",
        "t",
        "--group",
        "console",
        "--from-beginning",
        "--data-dir",
        str(broker.data_dir),
    )
    try:
        assert consumer.stdout is not None
        assert [consumer.stdout.readline() for _ in range(3)] == [
            b"one\n",
            b"two\n",
            b"three\n",
        ]
        members = groups(broker, "--describe", "--group", "console", "--members")
        header, row = ok(members).strip("\n").split("\n")
        assert header.split() == [
            "GROUP",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
        ]
        assert row.split()[0] == "console"
        assert row.split()[-2:] == ["console-consumer", "1"]
        assert row.split()[1].startswith("console-consumer-")
        consumer.send_signal(signal.SIGINT)
        _, err = consumer.communicate(timeout=10)
    finally:
        consumer.kill()
    assert (consumer.returncode, err) == (0, b"Processed a total of 3 messages\n")
    assert committed(broker.data_dir, "console") == {("t", 0): 3}
    result = groups(broker, "--describe", "--group", "console")
    assert result.stderr == NO_MEMBERS.format("console")


# ---- --all-groups, --export, --from-file ---------------------------------------------


def test_all_groups_describes_and_deletes_every_group(broker: EmbeddedBroker) -> None:
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t")
    produce(broker.data_dir, "t", 0, [b"x"] * 4)
    commit(broker.data_dir, "a", {("t", 0): 1})
    commit(broker.data_dir, "b", {("t", 0): 3})
    described = json.loads(
        ok(groups(broker, "--describe", "--all-groups", "--format", "json"))
    )
    assert [(d["group"], d["offsets"][0]["lag"]) for d in described] == [
        ("a", 3),
        ("b", 1),
    ]
    out = ok(groups(broker, "--delete", "--all-groups"))
    assert out == "Deletion of requested consumer groups ('a', 'b') was successful.\n"
    assert ok(groups(broker, "--list")) == ""


def test_reset_offsets_export_then_from_file(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Kafka's CSV: topic,partition,offset for one group, with the group first for
    several; --from-file takes back what --export wrote."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    produce(broker.data_dir, "t", 0, [b"x"] * 5)
    produce(broker.data_dir, "t", 1, [b"x"] * 7)
    one = ok(groups(broker, "--reset-offsets", "--group", "a", "--topic", "t",
                    "--to-latest", "--dry-run", "--export"))  # fmt: skip
    assert one == "t,0,5\nt,1,7\n"
    two = ok(groups(broker, "--reset-offsets", "--group", "a", "--group", "b",
                    "--topic", "t:1", "--to-earliest", "--export"))  # fmt: skip
    assert two == "a,t,1,0\nb,t,1,0\n"
    plan = tmp_path / "plan.csv"
    plan.write_text("t,0,2\nt,1,9\n")  # 9 is past the log end: 7, as Kafka warns
    result = groups(broker, "--reset-offsets", "--group", "a", "--from-file",
                    str(plan), "--execute", "--export")  # fmt: skip
    assert ok(result) == "t,0,2\nt,1,7\n"
    assert "New offset (9) is higher than latest offset" in result.stderr
    assert committed(broker.data_dir, "a") == {
        TopicPartition("t", 0): 2,
        TopicPartition("t", 1): 7,
    }
    plan.write_text("a,t,0,1\nb,t,1,3\n")
    ok(groups(broker, "--reset-offsets", "--group", "a", "--group", "b",
              "--from-file", str(plan), "--execute"))  # fmt: skip
    assert committed(broker.data_dir, "a")[TopicPartition("t", 0)] == 1
    assert committed(broker.data_dir, "b") == {TopicPartition("t", 1): 3}
    plan.write_text("t;0;1\n")
    assert f"{plan} line 1: 't;0;1' is not group,topic,partition,offset" in fails(
        groups(
            broker,
            "--reset-offsets",
            "--group",
            "a",
            "--group",
            "b",
            "--from-file",
            str(plan),
            "--dry-run",
        ),
        2,
    )


def test_delete_offsets_keeps_those_of_a_subscribed_topic(
    broker: EmbeddedBroker,
) -> None:
    """Kafka's layout; the offsets of a topic a live member reads stay (exit 1)."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
        admin.create_topic("u")
    for topic, partition in (("t", 0), ("t", 1), ("u", 0)):
        produce(broker.data_dir, topic, partition, [b"x"] * 3)
    commit(broker.data_dir, "g", {("t", 0): 1, ("t", 1): 2, ("u", 0): 3})
    out = ok(groups(broker, "--delete-offsets", "--group", "g", "--topic", "t:1"))
    assert out.splitlines() == [
        "Request succeed for deleting offsets with topic t group g",
        "",
        f"{'TOPIC':30} {'PARTITION':15} STATUS         ",
        f"{'t':30} {'1':15} Successful     ",
    ]
    assert committed(broker.data_dir, "g") == {
        TopicPartition("t", 0): 1,
        TopicPartition("u", 0): 3,
    }
    with member(broker.data_dir, "g", ["u"]):
        result = groups(broker, "--delete-offsets", "--group", "g", "--topic", "u",
                        "--topic", "t")  # fmt: skip
        assert result.exit_code == 1
        assert result.stdout.splitlines()[0] == (
            "Encounter some partition level error, see the follow-up details:"
        )
        assert (
            f"{'u':30} {'0':15} Error: The consumer group is subscribed to the "
            "topic" in result.stdout
        )
    assert committed(broker.data_dir, "g") == {TopicPartition("u", 0): 3}
