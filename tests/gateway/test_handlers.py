"""Every handler over in-memory bytes: requests written by kio (or by hand, to be
wrong on purpose) into a real Gateway of this process, talking to a real
supervisor; responses decoded by kio, an independent reader of our hand-framed
Produce and Fetch answers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shmbroker import Admin, EmbeddedBroker, Producer, _native
from shmbroker.gateway.apis import APIS
from shmbroker.kafka import codec
from shmbroker.kafka.errors import Code
from tests.gateway.wire import Wire, make_gateway, request

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS = 0, 1, 2, 3, 18


def run(
    broker: EmbeddedBroker, test: Callable[[Wire], Awaitable[None]], **config: Any
) -> None:
    """Run test(wire) on a fresh in-process gateway of the broker."""

    async def main() -> None:
        gateway = make_gateway(str(broker.data_dir), **config)
        try:
            await test(Wire(gateway))
        finally:
            gateway.close()

    asyncio.run(main())


def batch(values: list[bytes], keys: list[bytes | None] | None = None) -> bytes:
    return _native.batch_encode(_native.RecordArrays(values, keys))


def produce_request(version: int, topic: str, partitions: dict[int, bytes | None],
                    acks: int = 1, timeout_ms: int = 10_000) -> Any:  # fmt: skip
    t = codec.request_type(PRODUCE, version)
    data = codec.nested(t, "PartitionProduceData")
    topic_data = codec.nested(t, "TopicProduceData")
    return codec.build(
        t, transactional_id=None, acks=acks, timeout=timeout_ms,
        topic_data=(topic_data(name=topic, partition_data=tuple(
            data(index=p, records=r) for p, r in partitions.items())),),
    )  # fmt: skip


def fetch_request(version: int, topic: str, partitions: list[tuple[int, int, int]],
                  max_wait_ms: int = 0, min_bytes: int = 1,
                  max_bytes: int = 50 << 20) -> Any:  # fmt: skip
    t = codec.request_type(FETCH, version)
    fp = codec.nested(t, "FetchPartition")
    ft = codec.nested(t, "FetchTopic")
    return codec.build(
        t, replica_id=-1, max_wait=max_wait_ms, min_bytes=min_bytes,
        max_bytes=max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
        topics=(ft(topic=topic, partitions=tuple(
            codec.build(fp, partition=p, current_leader_epoch=-1, fetch_offset=o,
                        log_start_offset=-1, partition_max_bytes=m)
            for p, o, m in partitions)),),
        forgotten_topics_data=(), rack_id="",
    )  # fmt: skip


def batches_of(records: bytes) -> list[tuple[int, int]]:
    """(base offset, record count) of each whole batch in records."""
    out, at = [], 0
    while at + 61 <= len(records):
        size = struct.unpack_from(">i", records, at + 8)[0] + 12
        if at + size > len(records):
            break
        out.append((struct.unpack_from(">q", records, at)[0],
                    struct.unpack_from(">i", records, at + 57)[0]))  # fmt: skip
        at += size
    return out


def create(
    broker: EmbeddedBroker, topic: str, partitions: int = 1, **configs: str
) -> None:
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, partitions, configs)


# ---- ApiVersions ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_lists_the_registry(broker: EmbeddedBroker, version: int) -> None:
    async def test(wire: Wire) -> None:
        body = request(API_VERSIONS, version, client_software_name="t",
                       client_software_version="1")  # fmt: skip
        response = await wire.call(API_VERSIONS, version, body)
        assert response.error_code == Code.NONE
        assert {
            (a.api_key, a.min_version, a.max_version) for a in response.api_keys
        } == {(a.key, a.min_version, a.max_version) for a in APIS.values()}

    run(broker, test)


def test_api_versions_above_3_gets_v0_with_unsupported_version(
    broker: EmbeddedBroker,
) -> None:
    """KIP-511: a v4 request is answered in the v0 format, error 35, our ranges."""

    async def test(wire: Wire) -> None:
        wire.feed(struct.pack(">ihhih", 10, API_VERSIONS, 4, 77, -1))
        cid, raw = await wire.response()
        assert cid == 77
        response = codec.decode_response(API_VERSIONS, 0, raw)
        assert response.error_code == Code.UNSUPPORTED_VERSION
        assert (0, 0, 7) in {
            (a.api_key, a.min_version, a.max_version) for a in response.api_keys
        }

    run(broker, test)


def test_advertised_versions() -> None:
    """The ranges real clients key features on (kafka-protocol.md)."""
    assert (APIS[PRODUCE].min_version, APIS[PRODUCE].max_version) == (0, 7)
    assert (APIS[FETCH].min_version, APIS[FETCH].max_version) == (4, 11)
    assert (APIS[METADATA].min_version, APIS[METADATA].max_version) == (0, 7)
    assert (APIS[LIST_OFFSETS].min_version, APIS[LIST_OFFSETS].max_version) == (1, 2)
    assert APIS[10].min_version == 0  # FindCoordinator: librdkafka's LZ4 needs v0


# ---- Metadata ------------------------------------------------------------------------


def test_metadata_null_means_every_topic_and_creates_none(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic, 2)

    async def test(wire: Wire) -> None:
        every = await wire.call(METADATA, 1, request(METADATA, 1, topics=None))
        names = {t.name: len(t.partitions) for t in every.topics}
        assert names[topic] == 2
        v0 = await wire.call(METADATA, 0, request(METADATA, 0, topics=()))
        assert {t.name for t in v0.topics} == set(names)
        assert [(b.node_id, b.host, b.port) for b in every.brokers] == [
            (0, "127.0.0.1", 9)
        ]

    run(broker, test)
    with Admin(str(broker.data_dir)) as admin:
        assert topic in admin.list_topics()


@pytest.mark.parametrize("version", [1, 4, 7])
def test_metadata_auto_creates_a_named_topic(
    broker: EmbeddedBroker, topic: str, version: int
) -> None:
    async def test(wire: Wire) -> None:
        t = codec.nested(codec.request_type(METADATA, version), "MetadataRequestTopic")
        body = request(METADATA, version, topics=(t(name=topic),),
                       allow_auto_topic_creation=True)  # fmt: skip
        response = await wire.call(METADATA, version, body)
        [described] = response.topics
        assert (described.name, described.error_code, len(described.partitions)) == (
            topic,
            Code.NONE,
            1,
        )
        p = described.partitions[0]
        assert (p.leader_id, p.replica_nodes, p.isr_nodes) == (0, (0,), (0,))

    run(broker, test)


def test_metadata_without_auto_create_or_with_a_bad_name(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def test(wire: Wire) -> None:
        t = codec.nested(codec.request_type(METADATA, 4), "MetadataRequestTopic")
        body = request(METADATA, 4, topics=(t(name=topic), t(name="bad/name")),
                       allow_auto_topic_creation=False)  # fmt: skip
        response = await wire.call(METADATA, 4, body)
        assert [(t.name, t.error_code) for t in response.topics] == [
            (topic, Code.UNKNOWN_TOPIC_OR_PARTITION),
            ("bad/name", Code.INVALID_TOPIC_EXCEPTION),
        ]

    run(broker, test)


# ---- Produce -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 5, 7])
def test_produce_appends_the_batch_as_sent(
    broker: EmbeddedBroker, topic: str, version: int
) -> None:
    create(broker, topic)
    sent = batch([b"a", b"b", b"c"], [b"k1", None, b"k3"])

    async def test(wire: Wire) -> None:
        for expected_base in (0, 3):
            response = await wire.call(
                PRODUCE, version, produce_request(version, topic, {0: sent})
            )
            [t] = response.responses
            [p] = t.partition_responses
            assert (t.name, p.index, p.error_code, p.base_offset) == (
                topic,
                0,
                Code.NONE,
                expected_base,
            )
        # a fetch may end where the spilled segments do (the rest is in the ring):
        # the next one, from there, gets the rest
        records, offset = b"", 0
        while offset < 6:
            fetched = await wire.call(
                FETCH, 4, fetch_request(4, topic, [(0, offset, 1 << 20)])
            )
            more = fetched.responses[0].partitions[0].records
            assert more, f"nothing fetched from offset {offset}"
            records += more
            offset = sum(batches_of(records)[-1])
        assert batches_of(records) == [(0, 3), (3, 3)]
        # the client's bytes, but for baseOffset (0-7) and partitionLeaderEpoch (12-15)
        assert records[8:12] + records[16 : len(sent)] == sent[8:12] + sent[16:]

    run(broker, test)


def test_produce_acks_0_gets_no_response(broker: EmbeddedBroker, topic: str) -> None:
    create(broker, topic)

    async def test(wire: Wire) -> None:
        wire.send(PRODUCE, 7, produce_request(7, topic, {0: batch([b"x"])}, acks=0))
        response = await wire.call(
            PRODUCE, 7, produce_request(7, topic, {0: batch([b"y"])})
        )
        assert response.responses[0].partition_responses[0].base_offset == 1

    run(broker, test)


def test_produce_acks_all_answers_once_fsynced(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic)

    async def test(wire: Wire) -> None:
        response = await wire.call(
            PRODUCE, 7, produce_request(7, topic, {0: batch([b"x"] * 10)}, acks=-1)
        )
        assert response.responses[0].partition_responses[0].error_code == Code.NONE
        partition = wire.gateway.topics.partition(topic, 0)
        assert partition is not None
        assert partition.ring.stat().durable_offset >= 10

    run(broker, test)


def test_produce_refuses_bad_batches_by_partition(
    broker: EmbeddedBroker, topic: str
) -> None:
    """Each partition's batch gets its own error; the good one is appended."""
    create(broker, topic, 6, **{"max.message.bytes": "2000"})
    good = batch([b"fine"])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    control = bytearray(good)
    control[22] |= 0x20
    two = good + good
    big = batch([b"x" * 3000])

    async def test(wire: Wire) -> None:
        batches = {0: good, 1: bytes(bad_crc), 2: bytes(control), 3: two, 4: big,
                   5: good[:-3], 9: good}  # fmt: skip
        body = produce_request(7, topic, batches)
        response = await wire.call(PRODUCE, 7, body)
        codes = {
            p.index: p.error_code for p in response.responses[0].partition_responses
        }
        assert codes == {
            0: Code.NONE,
            1: Code.CORRUPT_MESSAGE,
            2: Code.INVALID_RECORD,
            3: Code.INVALID_RECORD,
            4: Code.MESSAGE_TOO_LARGE,
            5: Code.CORRUPT_MESSAGE,
            9: Code.UNKNOWN_TOPIC_OR_PARTITION,
        }

    run(broker, test)
    with Admin(str(broker.data_dir)) as admin:
        ends = {
            p: admin.list_offsets({(topic, p): "latest"})[(topic, p)] for p in range(6)
        }
    assert ends == {0: 1, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}


def test_produce_v2_closes_the_connection(broker: EmbeddedBroker, topic: str) -> None:
    async def test(wire: Wire) -> None:
        wire.send(PRODUCE, 2, b"\xff\xff\x00\x01" + b"\x00" * 30)  # kio has no v2
        await wire.closed()

    run(broker, test)


def test_log_append_time_topic_stamps_the_batch(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic, **{"message.timestamp.type": "LogAppendTime"})

    async def test(wire: Wire) -> None:
        sent = _native.batch_encode(_native.RecordArrays([b"v"], timestamp=1000))
        response = await wire.call(PRODUCE, 7, produce_request(7, topic, {0: sent}))
        p = response.responses[0].partition_responses[0]
        append_time = int(p.log_append_time.timestamp() * 1000)
        assert p.error_code == Code.NONE
        assert append_time > 1_600_000_000_000
        fetched = await wire.call(FETCH, 4, fetch_request(4, topic, [(0, 0, 1 << 20)]))
        records = fetched.responses[0].partitions[0].records
        assert records[22] & 0x08  # timestamp type: LogAppendTime
        assert struct.unpack_from(">q", records, 35)[0] == append_time
        assert _native.batch_validate(bytes(records)) == 1  # the new CRC holds

    run(broker, test)


# ---- Fetch ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5, 7, 11])
def test_fetch_answers_every_partition_and_starts_at_the_batch_holding_the_offset(
    broker: EmbeddedBroker, topic: str, version: int
) -> None:
    create(broker, topic, 2)
    with Producer(str(broker.data_dir)) as producer:
        producer.send_batch(topic, [b"a", b"b", b"c"], partition=0)
        producer.send_batch(topic, [b"d", b"e"], partition=0)

    async def test(wire: Wire) -> None:
        body = fetch_request(
            version, topic, [(0, 4, 1 << 20), (1, 0, 1 << 20), (5, 0, 100)]
        )
        response = await wire.call(FETCH, version, body)
        parts = {p.partition_index: p for p in response.responses[0].partitions}
        assert set(parts) == {0, 1, 5}
        assert batches_of(parts[0].records) == [(3, 2)]  # holds offset 4: from 3
        assert (parts[0].error_code, parts[0].high_watermark) == (Code.NONE, 5)
        assert (parts[1].error_code, parts[1].high_watermark, parts[1].records) == (
            Code.NONE,
            0,
            None if version < 0 else parts[1].records,
        )
        assert not parts[1].records
        assert parts[5].error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
        out_of_range = await wire.call(
            FETCH, version, fetch_request(version, topic, [(0, 6, 100)])
        )
        assert (
            out_of_range.responses[0].partitions[0].error_code
            == Code.OFFSET_OUT_OF_RANGE
        )

    run(broker, test)


def test_fetch_gives_the_first_batch_whole_above_max_bytes_then_stops(
    broker: EmbeddedBroker, topic: str
) -> None:
    """KIP-74: the first batch comes whole even above the limits; the next
    partition's batch does not fit the rest, so it waits for the next fetch."""
    create(broker, topic, 2)
    with Producer(str(broker.data_dir)) as producer:
        for p in (0, 1):
            producer.send_batch(topic, [b"x" * 1000] * 5, partition=p)
            producer.send_batch(topic, [b"y" * 1000] * 5, partition=p)

    async def test(wire: Wire) -> None:
        body = fetch_request(7, topic, [(0, 0, 100), (1, 0, 100)], max_bytes=200)
        response = await wire.call(FETCH, 7, body)
        parts = {p.partition_index: p for p in response.responses[0].partitions}
        assert batches_of(parts[0].records) == [(0, 5)]
        assert not parts[1].records
        body = fetch_request(7, topic, [(0, 5, 1 << 20), (1, 0, 1 << 20)])
        response = await wire.call(FETCH, 7, body)
        parts = {p.partition_index: p for p in response.responses[0].partitions}
        assert batches_of(parts[0].records) == [(5, 5)]
        assert batches_of(parts[1].records) == [(0, 5), (5, 5)]

    run(broker, test)


def test_fetch_long_poll_waits_for_data_then_times_out(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic)

    async def test(wire: Wire) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await wire.call(
            FETCH, 4, fetch_request(4, topic, [(0, 0, 1 << 20)], max_wait_ms=300)
        )
        assert loop.time() - started >= 0.29
        assert not response.responses[0].partitions[0].records

    run(broker, test)


def test_fetch_long_poll_is_woken_by_a_produce_and_answers_in_order(
    broker: EmbeddedBroker, topic: str
) -> None:
    """A parked fetch holds the requests behind it; a produce on another
    connection wakes it; the held requests are answered after it, in order."""
    create(broker, topic)

    async def test(wire: Wire) -> None:
        loop = asyncio.get_running_loop()
        other = Wire(wire.gateway)
        started = loop.time()
        fetch_id = wire.send(
            FETCH, 4, fetch_request(4, topic, [(0, 0, 1 << 20)], max_wait_ms=30_000)
        )
        held_id = wire.send(METADATA, 1, request(METADATA, 1, topics=None))
        await asyncio.sleep(0.05)  # not synchronisation: the fetch parks in this time
        assert wire.pending() == 0  # nothing answered yet: the fetch waits
        await other.call(PRODUCE, 7, produce_request(7, topic, {0: batch([b"hello"])}))
        first, raw = await wire.response()
        second, _ = await wire.response()
        assert (first, second) == (fetch_id, held_id)
        assert loop.time() - started < 10
        fetched = codec.decode_response(FETCH, 4, raw)
        assert batches_of(fetched.responses[0].partitions[0].records) == [(0, 1)]

    run(broker, test)


# ---- ListOffsets ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_list_offsets(broker: EmbeddedBroker, topic: str, version: int) -> None:
    create(broker, topic)
    with Producer(str(broker.data_dir)) as producer:
        for i in range(5):
            producer.send(topic, b"v", partition=0, timestamp=10_000 + 1000 * i).get(10)
    t = codec.request_type(LIST_OFFSETS, version)
    lp, lt = (
        codec.nested(t, "ListOffsetsPartition"),
        codec.nested(t, "ListOffsetsTopic"),
    )

    async def test(wire: Wire) -> None:
        specs = [-2, -1, 12_500, 99_000]
        partitions = tuple(
            codec.build(lp, partition_index=0, timestamp=s, current_leader_epoch=-1)
            for s in specs
        )
        body = codec.build(
            t, replica_id=-1, isolation_level=0,
            topics=(lt(name=topic, partitions=partitions),),
        )  # fmt: skip
        response = await wire.call(LIST_OFFSETS, version, body)
        got = [
            (p.error_code, p.timestamp, p.offset) for p in response.topics[0].partitions
        ]
        assert got == [(0, -1, 0), (0, -1, 5), (0, 13_000, 3), (0, -1, -1)]

    run(broker, test)


# ---- framing and dispatch ------------------------------------------------------------


def test_pipelined_requests_in_one_read_get_one_write_in_order(
    broker: EmbeddedBroker,
) -> None:
    async def test(wire: Wire) -> None:
        frames = b"".join(
            codec.frame_request(API_VERSIONS, 0, cid, b"") for cid in range(1, 51)
        )
        wire.feed(frames)
        assert wire.transport.writes == 1
        assert [(await wire.response())[0] for _ in range(50)] == list(range(1, 51))

    run(broker, test)


def test_a_frame_split_into_single_bytes_is_answered(broker: EmbeddedBroker) -> None:
    async def test(wire: Wire) -> None:
        frame = codec.frame_request(API_VERSIONS, 1, 5, b"")
        for i in range(len(frame)):
            wire.feed(frame[i : i + 1])
        assert (await wire.response())[0] == 5

    run(broker, test)


@pytest.mark.parametrize(
    ("what", "frame"),
    [
        ("above socket.request.max.bytes", struct.pack(">i", 1 << 20) + b"\x00" * 8),
        ("negative size", struct.pack(">i", -5)),
        ("shorter than a header", struct.pack(">i", 3) + b"\x00\x12\x00"),
        ("unknown API key", codec.frame_request(999, 0, 1, b"")),
        ("unsupported version", codec.frame_request(FETCH, 3, 1, b"")),
        ("malformed body", codec.frame_request(METADATA, 1, 1, b"\x00\x00\x00\x09")),
        ("client id past the end", struct.pack(">ihhih", 10, 18, 0, 1, 500)),
    ],
)
def test_bad_frames_close_the_connection(
    broker: EmbeddedBroker, what: str, frame: bytes
) -> None:
    async def test(wire: Wire) -> None:
        wire.feed(frame)
        await wire.closed()
        healthy = Wire(wire.gateway)  # and the gateway serves the next one
        response = await healthy.call(API_VERSIONS, 0, b"")
        assert response.error_code == Code.NONE

    run(broker, test, socket_request_max_bytes=1 << 16)


def test_connections_beyond_max_connections_are_closed(broker: EmbeddedBroker) -> None:
    async def test(wire: Wire) -> None:
        second = Wire(wire.gateway)
        third = Wire(wire.gateway)
        assert not second.transport.closed
        assert third.transport.closed

    run(broker, test, max_connections=2)


def test_closing_a_connection_ends_its_parked_fetch(
    broker: EmbeddedBroker, topic: str
) -> None:
    """A Fetch parked for a minute is cancelled with its connection: nothing stays
    parked on the partition (a client could otherwise pile them up)."""
    create(broker, topic)

    async def test(wire: Wire) -> None:
        wire.send(
            FETCH, 4, fetch_request(4, topic, [(0, 0, 1 << 20)], max_wait_ms=60_000)
        )
        session = wire.protocol.session
        partition = wire.gateway.topics.partition(topic, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while partition is None or not partition.waker._futures:
            assert loop.time() < deadline, "the fetch did not park"
            await asyncio.sleep(0.005)
            partition = wire.gateway.topics.partition(topic, 0)
        session.close()
        while session._tasks or partition.waker._futures:
            assert loop.time() < deadline, "the parked fetch outlived its connection"
            await asyncio.sleep(0.005)

    run(broker, test)


def test_requests_sent_before_the_client_closed_are_carried_out(
    broker: EmbeddedBroker, topic: str
) -> None:
    """If a client pipelines acks=0 batches and closes at once (librdkafka's
    flush() returns when they are sent), then every batch is still appended, even
    those queued behind a request that waited (the topic's first metadata)."""
    create(broker, topic)

    async def test(wire: Wire) -> None:
        for i in range(3):
            wire.send(
                PRODUCE, 7, produce_request(7, topic, {0: batch([b"%d" % i])}, acks=0)
            )
        wire.protocol.connection_lost(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not wire.protocol.session.closed:
            assert loop.time() < deadline, "the session never finished"
            await asyncio.sleep(0.005)
        assert wire.pending() == 0  # nothing written to a gone client

    run(broker, test)
    with Admin(str(broker.data_dir)) as admin:
        assert admin.list_offsets({(topic, 0): "latest"})[(topic, 0)] == 3
