"""Columnar polls (Consumer.poll_columns, RecordColumns) against a real supervisor:
the same records poll_batch returns, as columns, compressed batches too; the cap on
records and the position; Arrow without a copy."""

from __future__ import annotations

import pytest

from shmbroker import Admin, Consumer, InvalidArgument, Producer, TopicPartition

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.fixture
def mixed(broker):
    """Topic t, partition 0: 30 records in three batches (zstd-compressed with keys,
    plain with null values and headers, plain value-only); partition 1: 5 records."""
    with Admin(broker.data_dir) as admin:
        admin.create_topic("t", 2)
    with Producer(broker.data_dir, compression_type="zstd") as producer:
        producer.send_batch(
            "t", [b"z%d" % i for i in range(10)], [b"k%d" % i for i in range(10)],
            partition=0,
        )  # fmt: skip
    with Producer(broker.data_dir) as producer:
        producer.send_batch(
            "t",
            [None if i % 4 == 0 else b"a long value, number %d" % i for i in range(10)],
            partition=0,
            headers=[[("h", b"%d" % i)] for i in range(10)],
        )
        producer.send_batch("t", [b"p%d" % i for i in range(10)], partition=0)
        producer.send_batch("t", [b"q%d" % i for i in range(5)], partition=1)
    return broker


def records_of(broker, **poll):
    with Consumer(broker.data_dir, auto_offset_reset="earliest") as c:
        c.assign([T0, T1])
        got = []
        while len(got) < 35:
            got += c.poll_batch(100, timeout=5)
        return got


def test_poll_columns_gives_poll_batchs_records_one_object_per_partition(mixed):
    want = records_of(mixed)
    with Consumer(mixed.data_dir, auto_offset_reset="earliest") as c:
        c.assign([T0, T1])
        got = []
        while sum(map(len, got)) < 35:
            got += c.poll_columns(1000, timeout=5)
        assert c.position(T0) == 30
    assert sorted((cols.topic, cols.partition) for cols in got) == [("t", 0), ("t", 1)]
    for cols in got:
        mine = [r for r in want if r.partition == cols.partition]
        assert cols.offsets.tolist() == [r.offset for r in mine]
        assert cols.timestamps.tolist() == [r.timestamp for r in mine]
        assert cols.values() == [r.value for r in mine]
        assert cols.keys() == [r.key for r in mine]
        assert cols.headers() == [r.headers for r in mine]
        assert cols.records() == mine
        assert [cols.value(i) for i in range(len(cols))] == [r.value for r in mine]


def test_poll_columns_returns_at_most_max_records_and_the_rest_next(mixed):
    with Consumer(mixed.data_dir, auto_offset_reset="earliest") as c:
        c.assign([T0])
        first = c.poll_columns(12, timeout=5)
        assert [len(cols) for cols in first] == [12]
        assert c.position(T0) == 12
        second = c.poll_columns(12, timeout=5)
        assert second[0].offsets.tolist() == list(range(12, 24))
        # the other kind of poll goes on from the position, as read_batches does
        assert [r.offset for r in c.poll_batch(3, timeout=5)] == [24, 25, 26]
        assert c.poll_columns(100, timeout=5)[0].offsets.tolist() == list(range(27, 30))
        c.seek(T0, 13)  # into the second batch: the records before 13 left out
        assert c.poll_columns(100, timeout=5)[0].offsets[0] == 13
        assert c.poll_columns(100, timeout=0.05) == []
        with pytest.raises(InvalidArgument, match="max_records must be >= 1, not 0"):
            c.poll_columns(0)


def test_to_arrow_holds_the_records_without_copying_the_values(mixed):
    pa = pytest.importorskip("pyarrow")
    want = records_of(mixed)
    with Consumer(mixed.data_dir, auto_offset_reset="earliest") as c:
        c.assign([T1])
        (cols,) = c.poll_columns(100, timeout=5)
        c.assign([T0])
        zstd = c.poll_columns(25, timeout=5)[0]
    table = cols.to_arrow()
    assert table.schema.names == ["offset", "timestamp", "key", "value"]
    assert table.column("value").type == pa.binary_view()
    assert table.column("value").to_pylist() == [b"q%d" % i for i in range(5)]
    # the value buffer is the columns' own: no copy
    assert (
        table.column("value").buffers()[2].address == pa.py_buffer(cols.buffer).address
    )
    arrow = zstd.to_arrow()
    mine = [r for r in want if r.partition == 0][:25]
    assert arrow.column("offset").to_pylist() == list(range(25))
    assert arrow.column("key").to_pylist() == [r.key for r in mine]
    assert arrow.column("value").to_pylist() == [r.value for r in mine]
    assert arrow.column("value").null_count == 3
    stamps = arrow.column("timestamp").cast(pa.int64()).to_pylist()
    assert stamps == [r.timestamp for r in mine]
