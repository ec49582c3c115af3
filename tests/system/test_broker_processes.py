"""A broker with real client processes: producers and a consumer through the API,
the supervisor killed (SIGKILL) or restarted under them, and a topic deleted under a
running producer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shmbroker import Admin, Consumer, Ring, shm
from tests.conftest import wait_until
from tests.system.ring_worker import RECORD

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"ring.bytes": 1 << 16, "segment.bytes": 1 << 20}  # the spill matters
PRODUCERS, PER_PRODUCER, PARTITIONS = 3, 100_000, 4
RESTARTS = 5


def worker(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.system.broker_worker", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def started(proc: subprocess.Popen[str], line: str) -> None:
    """Wait for the worker's line saying it is going (or fail with its stderr)."""
    got = proc.stdout.readline()
    if got != f"{line}\n":
        proc.kill()
        pytest.fail(f"worker did not start ({got!r}): {proc.communicate()[1]}")


def finish(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def start_clients(broker, topic: str):
    consumer = worker(
        "consume", broker.data_dir, topic, PARTITIONS, PRODUCERS * PER_PRODUCER
    )
    started(consumer, "consuming")
    producers = [
        worker("produce", broker.data_dir, topic, i, PER_PRODUCER)
        for i in range(PRODUCERS)
    ]
    return consumer, producers


def check_everything_once(broker, topic: str, consumer, producers) -> None:
    for p in producers:
        assert finish(p, 120) == {"sent": PER_PRODUCER}
    result = finish(consumer, 120)
    assert result["problems"] == []
    assert result["missing"] == {}
    assert result["per_producer"] == {str(i): PER_PRODUCER for i in range(PRODUCERS)}
    assert result["records"] == PRODUCERS * PER_PRODUCER
    with Admin(broker.data_dir) as admin:
        (described,) = admin.describe_topics([topic])
    ends = {str(p.partition): p.high_watermark for p in described.partitions}
    assert result["next_offsets"] == ends  # dense from 0 to the high watermark
    assert sum(ends.values()) == PRODUCERS * PER_PRODUCER
    assert min(ends.values()) > 0, f"a partition got nothing: {ends}"


def test_producer_and_consumer_processes_see_every_record_once(broker):
    """If three producer processes send 100k records each to a 4-partition topic
    while a consumer process reads all partitions, then the consumer gets every
    record exactly once, each producer's records in order within a partition, and
    dense offsets."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("events", PARTITIONS, SMALL)
    consumer, producers = start_clients(broker, "events")
    try:
        check_everything_once(broker, "events", consumer, producers)
    finally:
        stop_all([consumer, *producers])


def high_watermark(rings: list[Ring]) -> int:
    return sum(r.stat().next_offset for r in rings)


CANARY = 1100  # records: a run of sends, then one send_batch


def check_clients_work_without_supervisor(broker, k: int) -> None:
    """A new producer process attaches to a topic and appends to it, and a new
    consumer reads it, while no supervisor runs. (The producers of the main topic
    may all be waiting for their rings to be spilled just now.)"""
    canary = worker("produce", broker.data_dir, "canary", 100 + k, CANARY)
    try:
        assert finish(canary, 60) == {"sent": CANARY}
    finally:
        stop_all([canary])
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([("canary", 0)])
        consumer.seek(("canary", 0), (k - 1) * CANARY)
        got = []
        while len(got) < CANARY:
            got += consumer.poll_batch(timeout=10) or pytest.fail(
                f"the canary's records (restart {k}): {len(got)} of {CANARY}"
            )
    assert [RECORD.unpack(r.value) for r in got] == [
        (100 + k, seq) for seq in range(CANARY)
    ]
    assert consumer.connection.hello is None, "a supervisor answered"


@pytest.mark.parametrize("how", ["kill", "graceful"])
def test_clients_keep_going_while_the_supervisor_restarts(broker, how):
    """If the supervisor is SIGKILLed (or stopped gracefully) and started again five
    times while producer and consumer processes run, then the clients carry on
    through every restart (the data plane does not need the supervisor: producers
    only wait while their ring is full of unspilled records; new clients attach
    from the registry), and in the end the consumer has every record exactly once,
    in order, with dense offsets."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("events", PARTITIONS, SMALL)
        admin.create_topic("canary", 1, SMALL)
    rings = [
        Ring.open(shm.ring_name(broker.shm_base, meta.topic_id, p))
        for p in range(PARTITIONS)
    ]
    consumer, producers = start_clients(broker, "events")
    try:
        total = PRODUCERS * PER_PRODUCER
        for k in range(1, RESTARTS + 1):  # restart k when k/(RESTARTS+1) are in
            wait_until(
                lambda k=k: high_watermark(rings) >= k * total // (RESTARTS + 1),
                60,
                f"{k}/{RESTARTS + 1} of the records before restart {k}",
            )
            if how == "kill":
                broker.kill()
            else:
                assert broker.stop() == 0, broker.log_tail()
            check_clients_work_without_supervisor(broker, k)
            broker.start()
        check_everything_once(broker, "events", consumer, producers)
        with Admin(broker.data_dir) as admin:

            def spilled():
                (described,) = admin.describe_topics(["events"])
                assert [p.spill_error for p in described.partitions] == [None] * 4
                return all(
                    p.log_end_offset == p.high_watermark for p in described.partitions
                )

            wait_until(spilled, 30, "every record in the segment files")
    finally:
        stop_all([consumer, *producers])
        for ring in rings:
            ring.close()


def test_a_topic_deleted_under_running_clients_ends_them_with_unknown_topic(
    broker, shm_prefix
):
    """If a topic is deleted while a producer process sends to it and a consumer
    process reads it, then both stop with UnknownTopic, and none of its shared
    memory is left in /dev/shm."""
    with Admin(broker.data_dir) as admin:
        meta = admin.create_topic("doomed", 2, SMALL)
        consumer = worker("consume", broker.data_dir, "doomed", 2, -1)
        producer = worker("produce", broker.data_dir, "doomed", 0, -1)
        try:
            started(consumer, "consuming")
            started(producer, "producing")
            admin.delete_topic("doomed")
            _, producer_err = producer.communicate(timeout=30)
            _, consumer_err = consumer.communicate(timeout=30)
        finally:
            stop_all([consumer, producer])
        assert producer.returncode == 1
        # its last words; a WARNING of the records it could not send may come first
        assert producer_err.splitlines()[-1].startswith("UnknownTopic: "), producer_err
        assert consumer.returncode == 1
        assert consumer_err.startswith("UnknownTopic: "), consumer_err
        assert "doomed" not in admin.list_topics()  # not auto-created again
    left = [n for n in shm.list_names(shm_prefix) if meta.topic_id in n]
    assert left == []
    assert [n for n in shm.list_names(shm_prefix) if not n.endswith(".broker")] == []
    assert not (broker.data_dir / "doomed-0").exists()
