"""Consumer.poll, one record a call: it returns the records one read fetched from a
partition without visiting the partitions again, so these check that it returns
exactly what poll_batch does, and that a pause, a seek, an assignment or a rebalance
between two calls is obeyed at once."""

from __future__ import annotations

import threading

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, TopicPartition
from tests.conftest import wait_until


def fill(broker: EmbeddedBroker, counts: dict[int, int]) -> None:
    """Topic t with counts[p] records in partition p, values b"p-i"."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", len(counts))
    with Producer(broker.data_dir) as producer:
        for p, n in counts.items():
            producer.send_batch("t", [b"%d-%d" % (p, i) for i in range(n)], partition=p)


def poll_all(consumer: Consumer) -> list:
    got = []
    while (record := consumer.poll(0.2)) is not None:
        got.append(record)
    return got


def test_poll_returns_what_poll_batch_returns_and_starves_no_partition(
    broker: EmbeddedBroker,
) -> None:
    """If partition 0 holds 20,000 records and partitions 1 and 2 ten each, then
    poll() one at a time returns every record once, in offset order per partition,
    and the small partitions' records come before a tenth of the big one's."""
    fill(broker, {0: 20_000, 1: 10, 2: 10})
    tps = [TopicPartition("t", p) for p in range(3)]
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as one:
        one.assign(tps)
        got = poll_all(one)
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as batch:
        batch.assign(tps)
        want = []
        while records := batch.poll_batch(timeout=0.2):
            want += records
    for p in range(3):
        mine = [(r.offset, r.value) for r in got if r.partition == p]
        assert mine == [(r.offset, r.value) for r in want if r.partition == p]
    assert len(got) == 20_020
    last_small = max(i for i, r in enumerate(got) if r.partition != 0)
    assert last_small < 2_000, f"partitions 1 and 2 done only at record {last_small}"


def test_poll_after_a_pause_a_seek_or_an_unassign_obeys_it_at_once(
    broker: EmbeddedBroker,
) -> None:
    """If records of a partition were fetched but not all returned, then after
    pausing it poll() returns none of them, after a seek it returns the offset
    sought, and after it is unassigned none of its records."""
    fill(broker, {0: 100, 1: 100})
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as consumer:
        consumer.assign([t0, t1])
        first = consumer.poll(5)
        assert first is not None
        mine = TopicPartition("t", first.partition)
        other = t1 if mine == t0 else t0
        consumer.pause(mine)
        rest = poll_all(consumer)
        assert {r.partition for r in rest} == {other.partition}
        assert len(rest) == 100
        consumer.resume(mine)
        assert consumer.poll(5).offset == first.offset + 1  # type: ignore[union-attr]
        consumer.seek(mine, 70)
        assert consumer.poll(5).offset == 70  # type: ignore[union-attr]
        consumer.assign([other])
        assert consumer.poll(0.2) is None  # other was read to its end


class Poller:
    """A group member calling poll() on its own thread (a join waits for every
    member to rejoin, and a member rejoins from its poll): what it got, and any
    record of a partition it did not own when poll returned it."""

    def __init__(self, data_dir: str) -> None:
        self.consumer = Consumer(
            data_dir, group_id="g", subscribe=["t"], auto_offset_reset="earliest"
        )
        self.got: list[tuple[int, int]] = []
        self.foreign: list[tuple[int, int, set]] = []
        self.owned: set[TopicPartition] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                record = self.consumer.poll(0.01)
                # the assignment changes only inside poll: this is the one it had
                self.owned = self.consumer.assignment()
                if record is not None:
                    self.got.append((record.partition, record.offset))
                    if TopicPartition("t", record.partition) not in self.owned:
                        self.foreign.append(
                            (record.partition, record.offset, self.owned)
                        )
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()
        assert self.error is None, repr(self.error)


def test_poll_of_a_group_member_returns_no_record_of_a_partition_it_gave_up(
    broker: EmbeddedBroker,
) -> None:
    """If a member polling one record at a time loses partitions to a member that
    joins while it still holds fetched records of them, then it returns none of
    those, and the two together return every record once (the first commits its
    positions before giving the partitions up)."""
    fill(broker, {p: 50_000 for p in range(4)})
    first = Poller(broker.data_dir)
    second = None
    try:
        wait_until(lambda: first.got, 10, "the first member's first record")
        second = Poller(broker.data_dir)
        wait_until(
            lambda: len(first.owned) == 2 and len(second.owned) == 2,  # type: ignore[union-attr]
            20,
            "two members owning two partitions each",
        )
        wait_until(
            lambda: len(first.got) + len(second.got) >= 200_000,  # type: ignore[union-attr]
            60,
            "every record",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert first.foreign == []
    assert second.foreign == []
    seen = sorted(first.got + second.got)
    assert seen == sorted((p, o) for p in range(4) for o in range(50_000))
