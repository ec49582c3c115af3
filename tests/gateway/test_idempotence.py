"""Idempotent producers: InitProducerId, retries answered with their first offsets,
gaps and fenced epochs refused, and the state rebuilt from the log by a new
gateway process (in-memory wire), then confluent-kafka's idempotent producer with
the gateway SIGKILLed under it (real processes)."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest
from confluent_kafka import Producer as KafkaProducer

from shmbroker import Admin, Consumer, EmbeddedBroker, Producer, _native
from shmbroker.gateway.producer_ids import BLOCK, ProducerIds
from shmbroker.kafka import codec
from shmbroker.kafka.errors import Code
from tests.conftest import wait_until
from tests.gateway.test_handlers import create, produce_request, run
from tests.gateway.wire import Wire, make_gateway, request

PRODUCE, INIT_PRODUCER_ID = 0, 22


def idempotent(values: list[bytes], pid: int, epoch: int, sequence: int) -> bytes:
    """A batch from producer pid: its id, epoch and base sequence, and a new CRC."""
    batch = bytearray(_native.batch_encode(_native.RecordArrays(values)))
    struct.pack_into(">qhi", batch, 43, pid, epoch, sequence)
    struct.pack_into(">I", batch, 17, _native.crc32c(bytes(batch[21:])))
    return bytes(batch)


async def produced(wire: Wire, topic: str, batch: bytes) -> tuple[int, int]:
    """(error code, base offset) of one batch sent to partition 0."""
    response = await wire.call(
        PRODUCE, 7, produce_request(7, topic, {0: batch}, acks=-1)
    )
    p = response.responses[0].partition_responses[0]
    return p.error_code, p.base_offset


async def new_producer_id(wire: Wire) -> int:
    body = request(
        INIT_PRODUCER_ID, 1, transactional_id=None, transaction_timeout=60_000
    )
    response = await wire.call(INIT_PRODUCER_ID, 1, body)
    assert (response.error_code, response.producer_epoch) == (Code.NONE, 0)
    return response.producer_id


def end_offset(broker: EmbeddedBroker, topic: str) -> int:
    with Admin(str(broker.data_dir)) as admin:
        return admin.list_offsets({(topic, 0): "latest"})[(topic, 0)]


def test_producer_ids_are_unique_across_processes_and_restarts(tmp_path) -> None:
    first, second = ProducerIds(tmp_path), ProducerIds(tmp_path)
    ids = [first.allocate(), second.allocate(), first.allocate()]
    ids += [ProducerIds(tmp_path).allocate() for _ in range(3)]  # restarts
    assert len(set(ids)) == len(ids)
    assert ids[:3] == [0, BLOCK, 1]
    assert first.is_ours(1)
    assert not first.is_ours(BLOCK)


def test_init_producer_id_refuses_transactions(broker: EmbeddedBroker) -> None:
    async def test(wire: Wire) -> None:
        ids = {await new_producer_id(wire) for _ in range(3)}
        assert len(ids) == 3
        body = request(
            INIT_PRODUCER_ID, 0, transactional_id="tx", transaction_timeout=1
        )
        response = await wire.call(INIT_PRODUCER_ID, 0, body)
        assert response.error_code == Code.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    run(broker, test)


def test_retries_get_their_first_offsets_and_gaps_are_refused(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic)

    async def test(wire: Wire) -> None:
        pid = await new_producer_id(wire)
        first = idempotent([b"a", b"b"], pid, 0, 0)
        second = idempotent([b"c"], pid, 0, 2)
        assert await produced(wire, topic, first) == (Code.NONE, 0)
        assert await produced(wire, topic, second) == (Code.NONE, 2)
        assert await produced(wire, topic, first) == (Code.NONE, 0)  # retries
        assert await produced(wire, topic, second) == (Code.NONE, 2)
        gap = idempotent([b"x"], pid, 0, 9)
        assert await produced(wire, topic, gap) == (
            Code.OUT_OF_ORDER_SEQUENCE_NUMBER,
            -1,
        )
        overlap = idempotent([b"x", b"y"], pid, 0, 1)
        assert (await produced(wire, topic, overlap))[
            0
        ] == Code.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert await produced(wire, topic, idempotent([b"d"], pid, 0, 3)) == (
            Code.NONE,
            3,
        )
        # a new epoch starts at 0; the old one is fenced
        assert await produced(wire, topic, idempotent([b"e"], pid, 1, 0)) == (
            Code.NONE,
            4,
        )
        old = idempotent([b"f"], pid, 0, 4)
        assert (await produced(wire, topic, old))[0] == Code.INVALID_PRODUCER_EPOCH

    run(broker, test)
    assert end_offset(broker, topic) == 5


def test_sequences_wrap_at_2_to_the_31(broker: EmbeddedBroker, topic: str) -> None:
    create(broker, topic)

    async def test(wire: Wire) -> None:
        pid = await new_producer_id(wire)
        top = idempotent([b"a", b"b"], pid, 0, 2**31 - 2)
        assert await produced(wire, topic, top) == (Code.NONE, 0)
        assert await produced(wire, topic, idempotent([b"c"], pid, 0, 0)) == (
            Code.NONE,
            2,
        )

    run(broker, test)


def test_a_new_gateway_rebuilds_the_state_from_the_log(
    broker: EmbeddedBroker, topic: str
) -> None:
    """If a gateway dies after appending a producer's batches, the next one
    answers their retries with the first offsets (the batches carry the producer
    id, epoch and sequence), even with other producers' batches after them."""
    create(broker, topic)
    pid = 7_000_000  # given out by no gateway of this test
    batches = [idempotent([b"v%d" % i] * 3, pid, 0, 3 * i) for i in range(8)]

    async def first_life(wire: Wire) -> None:
        for i, batch in enumerate(batches):
            assert await produced(wire, topic, batch) == (Code.NONE, 3 * i)

    run(broker, first_life)
    with Producer(str(broker.data_dir)) as others:  # the tail grows meanwhile
        for _ in range(50):
            others.send_batch(topic, [b"other"] * 100, partition=0)

    async def second_life(wire: Wire) -> None:
        for i in range(3, 8):  # the last 5 are remembered
            assert await produced(wire, topic, batches[i]) == (Code.NONE, 3 * i)
        following = idempotent([b"next"], pid, 0, 24)
        assert await produced(wire, topic, following) == (Code.NONE, 24 + 5000)
        gap = idempotent([b"gap"], pid, 0, 30)
        assert (await produced(wire, topic, gap))[
            0
        ] == Code.OUT_OF_ORDER_SEQUENCE_NUMBER

    run(broker, second_life)
    assert end_offset(broker, topic) == 24 + 5000 + 1


def test_pipelined_acks_all_produces_are_answered_in_order(
    broker: EmbeddedBroker, topic: str
) -> None:
    """An acks=all answer waits for fsync without holding the appends behind it:
    the three batches go in together and their answers come in order."""
    create(broker, topic)

    async def test(wire: Wire) -> None:
        ids = [
            wire.send(PRODUCE, 7, produce_request(7, topic, {0: _native.batch_encode(
                _native.RecordArrays([b"%d" % i]))}, acks=-1))
            for i in range(3)
        ]  # fmt: skip
        answers = [await wire.response() for _ in ids]
        assert [cid for cid, _ in answers] == ids
        offsets = [
            codec.decode_response(PRODUCE, 7, raw).responses[0].partition_responses[0]
            .base_offset for _, raw in answers
        ]  # fmt: skip
        assert offsets == [0, 1, 2]

    run(broker, test)


@pytest.mark.system
def test_idempotent_producer_with_the_gateway_killed_5_times(
    broker: EmbeddedBroker, topic: str
) -> None:
    """If confluent-kafka's idempotent producer sends 200k records while the gateway
    is SIGKILLed 5 times, then every record is there once, in order per partition."""
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic(topic, 2)
    total, kills = 200_000, 5
    producer = KafkaProducer({
        "bootstrap.servers": broker.bootstrap_servers,
        "enable.idempotence": True,
        "linger.ms": 5,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
    })  # fmt: skip
    failures: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(str(err))

    kill_at = {total * (k + 1) // (kills + 1) for k in range(kills)}
    for i in range(total):
        while True:
            try:
                producer.produce(
                    topic, b"%d" % i, partition=i % 2, on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i in kill_at:
            pid = broker.gateway_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda p=pid: broker.gateway_pid() not in (None, p), 60,
                       "the gateway restarted by the supervisor")  # fmt: skip
    assert producer.flush(120) == 0, "records still unsent 120 s after the last kill"
    assert failures == []
    seen: dict[int, list[int]] = {0: [], 1: []}
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0), (topic, 1)])
        deadline = time.monotonic() + 60
        while sum(map(len, seen.values())) < total and time.monotonic() < deadline:
            for r in consumer.poll_batch(10_000, timeout=1):
                seen[r.partition].append(int(r.value))
    assert seen[0] == list(range(0, total, 2))
    assert seen[1] == list(range(1, total, 2))


def test_a_producer_moving_between_gateway_processes_keeps_its_sequence(
    broker: EmbeddedBroker, topic: str
) -> None:
    """With gateway.processes > 1 a reconnecting producer may land on another
    process: the one it comes back to has stale state, so a batch its state calls
    a gap is checked against the log before it is refused."""
    create(broker, topic)
    pid = 8_000_000

    async def test(first: Wire) -> None:
        second = Wire(make_gateway(str(broker.data_dir)))
        try:
            for seq in (0, 1, 2):
                batch = idempotent([b"a"], pid, 0, seq)
                assert await produced(first, topic, batch) == (Code.NONE, seq)
            for seq in (3, 4):  # the producer reconnected to the other process
                batch = idempotent([b"b"], pid, 0, seq)
                assert await produced(second, topic, batch) == (Code.NONE, seq)
            back = idempotent([b"c"], pid, 0, 5)  # and back to the first
            assert await produced(first, topic, back) == (Code.NONE, 5)
            retry = idempotent([b"b"], pid, 0, 4)
            assert await produced(first, topic, retry) == (Code.NONE, 4)
            gap = idempotent([b"d"], pid, 0, 9)
            assert (await produced(first, topic, gap))[0] == (
                Code.OUT_OF_ORDER_SEQUENCE_NUMBER
            )
        finally:
            second.gateway.close()

    run(broker, test)
