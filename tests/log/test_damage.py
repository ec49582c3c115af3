"""Segments damaged while the broker was stopped: never served as good, never keeping
the broker down. Real rings, real files, damaged as a disk or a person would."""

from __future__ import annotations

import json
import logging
import os

import pytest
from click.testing import CliRunner

from shmbroker import Admin, Consumer, CorruptError, Producer, Ring, shm
from shmbroker.cli import main
from shmbroker.config import TopicConfig
from shmbroker.log.partition import RECOVERY_POINT_FILE
from shmbroker.log.reader import PartitionReader

CONFIG = TopicConfig(ring_bytes=1 << 20, segment_bytes=1 << 14)


def fill(log, batches, start=0):
    for i in range(start, start + batches):
        log.ring.append_batch([b"%06d" % (i * 10 + j) for j in range(10)])
        while log.spill(0):
            pass


def values(reader_owner, start=0):
    reader, out = reader_owner.reader(start), []
    while got := reader.poll(0):
        out += [r.value for r in got]
    return out


def flip(path, position):
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x40]))


def test_active_segment_damaged_after_a_clean_stop_is_spilled_again_from_the_ring(
    open_log, tmp_path, caplog
):
    """If bytes of the active segment are damaged while the broker is stopped and
    its ring still holds every batch, then the restart cuts the segment at the
    damage and spills the cut batches again from the ring: every record readable
    and correct, and the partition takes appends after them."""
    log = open_log(CONFIG)
    fill(log, 30)
    active = log.active.path
    log.close()
    flip(active, os.path.getsize(active) // 2)
    with caplog.at_level(logging.WARNING):
        log = open_log(CONFIG)
    assert "spilling offsets" in caplog.text
    assert log.log_end_offset == log.high_watermark == 300
    fill(log, 1, start=30)
    assert values(log) == [b"%06d" % i for i in range(310)]


def test_active_segment_damaged_beyond_what_the_ring_holds_loses_only_that(
    open_log, tmp_path, ring_name, caplog
):
    """If the damaged batches are no longer in the ring either, then the broker
    still starts: an ERROR names the lost offsets, the partition goes on from the
    recovered log end, and a client still attached to the old ring is told."""
    small = TopicConfig(ring_bytes=1 << 16, segment_bytes=1 << 30)
    log = open_log(small)
    fill(log, 2000)  # ~260 KB through a 64 KiB ring: the early batches are gone
    active = log.active.path
    log.close()
    stale = Ring.open(ring_name)
    flip(active, 1000)
    with caplog.at_level(logging.WARNING):
        log = open_log(small)
    end = log.log_end_offset
    assert 0 < end < 20_000
    assert f"offsets {end}..19999 are lost" in caplog.text
    assert log.high_watermark == end
    with pytest.raises(Exception, match="deleted"):
        stale.append(b"into the old ring")
    stale.close()
    fill(log, 1, start=2000)
    assert values(log)[-10:] == [b"%06d" % (20_000 + j) for j in range(10)]


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_hole_in_the_middle_of_the_log_is_named_never_skipped(
    open_log, tmp_path, ring_name, caplog, damage
):
    """If a middle segment is truncated or deleted while the broker is stopped,
    then the restart logs an ERROR naming the missing offsets and the file, and a
    reader that reaches them gets CorruptError naming them: no silent jump."""
    log = open_log(CONFIG)
    fill(log, 300)
    segments = log.segments()
    assert len(segments) >= 4
    middle = segments[2]
    log.close()
    shm.unlink(ring_name)
    if damage == "truncated":
        os.truncate(middle.path, 0)
        first_missing = middle.base_offset
    else:
        for suffix in (".log", ".index", ".timeindex"):
            os.unlink(middle.path.with_suffix(suffix))
        first_missing = middle.base_offset
    with caplog.at_level(logging.ERROR):
        log = open_log(CONFIG)
    next_base = log.segments()[3 if damage == "truncated" else 2].base_offset
    missing = f"offsets {first_missing}..{next_base - 1} are missing"
    assert missing in caplog.text
    reader = PartitionReader.open(tmp_path / "t-0", ring_name, topic="t", partition=0)
    try:
        for owner in (log, reader):
            log_reader, seen = owner.reader(0), []
            while len(seen) < first_missing:
                seen += log_reader.poll(0)
            assert [r.offset for r in seen] == list(range(first_missing))
            with pytest.raises(CorruptError, match=missing):
                log_reader.poll(0)
    finally:
        reader.close()


def test_a_garbage_recovery_point_is_ignored_with_a_warning(open_log, tmp_path, caplog):
    """If the recovery-point checkpoint holds garbage, then a WARNING says so and
    the log is validated from its start (a damaged early segment is found)."""
    log = open_log(CONFIG)
    fill(log, 300)
    first = log.segments()[0].path
    log.close()
    (tmp_path / "t-0" / RECOVERY_POINT_FILE).write_bytes(b"\x00garbage")
    flip(first, os.path.getsize(first) - 5)
    with caplog.at_level(logging.WARNING):
        log = open_log(CONFIG)
    assert f"{RECOVERY_POINT_FILE} holds no offset" in caplog.text
    assert "deleting segment" in caplog.text  # the first was cut: nothing may follow
    assert values(log) == [b"%06d" % i for i in range(log.log_end_offset)]


def test_verify_names_each_damage_with_its_repair_and_fails(broker):
    """If segments or indexes are damaged, then `shmbroker verify` names each
    problem (file, byte, offsets) with the repair it suggests and exits 1; a sound
    log passes with exit 0 and the counts it checked."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic(
            "v", 2, {"segment.bytes": 1 << 14, "index.interval.bytes": 512}
        )
    with Producer(broker.data_dir) as producer:
        for p in (0, 1):
            for _ in range(60):
                producer.send_batch("v", [b"%06d" % j for j in range(20)], partition=p)
    broker.stop()

    def verify(*args):
        return CliRunner().invoke(
            main, ["verify", "--data-dir", str(broker.data_dir), *args]
        )

    sound = verify()
    assert sound.exit_code == 0, sound.output
    assert "2 partitions" in sound.output
    assert "2400 records checked: no problems" in sound.output
    p0, p1 = broker.data_dir / "v-0", broker.data_dir / "v-1"
    segments = sorted(p0.glob("*.log"))
    flip(segments[0], segments[0].stat().st_size - 10)  # a record, under the CRC
    os.unlink(sorted(p1.glob("*.log"))[1])  # a hole
    index = sorted(p1.glob("*.index"))[0]
    data = bytearray(index.read_bytes())
    data[7] ^= 1  # the first entry's position
    index.write_bytes(bytes(data))
    damaged = verify()
    assert damaged.exit_code == 1
    out = damaged.output
    assert f"ERROR {segments[0]} at byte" in out
    assert "a batch whose CRC or records are bad" in out
    assert "repair: stop the broker and start it again: recovery cuts" in out
    assert "are missing: the segment before ends at" in out
    assert f"ERROR {index}: entry (offset" in out
    assert "repair: delete the index files" in out
    only = verify("--topic", "v", "--format", "json")
    assert only.exit_code == 1, only.output
    assert only.stdout.startswith("["), (only.stdout[:300], only.stderr[:300])
    assert len(json.loads(only.stdout)) == 2


def test_a_bit_flipped_below_the_recovery_point_is_caught_by_consumers(broker):
    """If one bit of a record in a segment that recovery trusts (below the recovery
    point) flips while the broker is stopped, then a consumer raises CorruptError
    naming the partition, the batch's offset, the file and the byte (Kafka's
    check.crcs, on by default) instead of returning the changed value; with
    check_crcs=False it returns what is stored."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("bits", 1, {"segment.bytes": 1 << 14})
    with Producer(broker.data_dir) as producer:
        for i in range(100):
            producer.send_batch(
                "bits", [b"value-%06d" % (i * 10 + j) for j in range(10)]
            )
    broker.stop()
    first = sorted((broker.data_dir / "bits-0").glob("*.log"))[0]
    data = first.read_bytes()
    at = data.index(b"value-000055")
    flip(first, at + 11)  # the last digit: '5' ^ 0x40
    broker.start()
    batch = 50  # batches of 10: offset 55 is in the batch at offset 50

    got = []

    def read_all(**config):
        with Consumer(broker.data_dir, auto_offset_reset="earliest", **config) as c:
            c.assign([("bits", 0)])
            got.clear()
            while len(got) < 1000:
                got.extend(c.poll_batch(timeout=5))
            return got

    with pytest.raises(CorruptError, match=(
        rf"partition bits-0: the batch at offset {batch} \(.* bytes into what was "
        rf"read from {first} at byte \d+\) fails its CRC32C"
    )):  # fmt: skip
        read_all()
    assert [r.offset for r in got] == list(range(batch))  # those before it first
    values = [r.value for r in read_all(check_crcs=False)]
    assert values[55] == b"value-000055".replace(b"55", b"5u")

    offsets = []  # columnar polls check CRCs the same way

    def read_columns():
        with Consumer(broker.data_dir, auto_offset_reset="earliest") as c:
            c.assign([("bits", 0)])
            while len(offsets) < 1000:
                for cols in c.poll_columns(1000, timeout=5):
                    offsets.extend(cols.offsets.tolist())

    with pytest.raises(CorruptError, match=rf"the batch at offset {batch} \("):
        read_columns()
    assert offsets == list(range(batch))
