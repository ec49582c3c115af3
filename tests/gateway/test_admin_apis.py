"""The admin APIs over in-memory bytes: the versions and corners no client of ours
sends (DescribeConfigs v0, the flexible IncrementalAlterConfigs v1, validate_only,
a topic named twice)."""

from __future__ import annotations

import struct

from shmbroker import Admin, EmbeddedBroker
from shmbroker.kafka import codec
from shmbroker.kafka.errors import Code
from tests.gateway.test_handlers import create, run
from tests.gateway.wire import Wire

CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS = 19, 20, 32
ALTER_CONFIGS, CREATE_PARTITIONS, INCREMENTAL_ALTER_CONFIGS = 33, 37, 44
TOPIC = 2


def overrides(broker: EmbeddedBroker, topic: str) -> dict[str, str]:
    with Admin(str(broker.data_dir)) as admin:
        [described] = admin.describe_topics([topic])
    return {k: v for k, v in described.configs.items() if k != "ring.bytes"}


def create_request(
    version: int, topics: list[tuple[str, int]], validate_only: bool = False
):
    t = codec.request_type(CREATE_TOPICS, version)
    ct = codec.nested(t, "CreatableTopic")
    return codec.build(
        t, timeout=10_000, validate_only=validate_only,
        topics=tuple(ct(name=n, num_partitions=p, replication_factor=-1,
                        assignments=(), configs=()) for n, p in topics),
    )  # fmt: skip


def test_create_topics_validate_only_and_a_name_twice(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def test(wire: Wire) -> None:
        body = create_request(
            3, [(topic, 2), (f"{topic}.twice", 1), (f"{topic}.twice", 1)]
        )
        response = await wire.call(CREATE_TOPICS, 3, body)
        assert [(t.name, t.error_code) for t in response.topics] == [
            (topic, Code.NONE), (f"{topic}.twice", Code.INVALID_REQUEST)
        ]  # fmt: skip
        body = create_request(2, [(f"{topic}.checked", 4), (f"{topic}.zero", 0)], True)
        response = await wire.call(CREATE_TOPICS, 2, body)
        assert [(t.name, t.error_code) for t in response.topics] == [
            (f"{topic}.checked", Code.NONE), (f"{topic}.zero", Code.INVALID_PARTITIONS)
        ]  # fmt: skip

    run(broker, test)
    with Admin(str(broker.data_dir)) as admin:
        names = set(admin.list_topics())
    assert topic in names
    assert not {f"{topic}.twice", f"{topic}.checked"} & names


def test_delete_topics_and_create_partitions(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic, 2)

    async def test(wire: Wire) -> None:
        t = codec.request_type(CREATE_PARTITIONS, 1)
        part = codec.nested(t, "CreatePartitionsTopic")

        async def grow(count: int, validate_only: bool) -> int:
            grown = part(name=topic, count=count, assignments=None)
            body = codec.build(
                t, timeout=10_000, validate_only=validate_only, topics=(grown,)
            )
            return (await wire.call(CREATE_PARTITIONS, 1, body)).results[0].error_code

        assert await grow(4, validate_only=True) == Code.NONE
        assert await grow(2, validate_only=True) == Code.INVALID_PARTITIONS
        assert await grow(3, validate_only=False) == Code.NONE
        assert wire.gateway.admin.list_topics()[topic].partitions == 3
        body = codec.build(codec.request_type(DELETE_TOPICS, 1), timeout=10_000,
                           topic_names=(topic, f"{topic}.none"))  # fmt: skip
        response = await wire.call(DELETE_TOPICS, 1, body)
        assert [(r.name, r.error_code) for r in response.responses] == [
            (topic, Code.NONE), (f"{topic}.none", Code.UNKNOWN_TOPIC_OR_PARTITION)
        ]  # fmt: skip

    run(broker, test)


def test_describe_configs_v0_by_hand(broker: EmbeddedBroker, topic: str) -> None:
    """v0 (no include_synonyms; is_default instead of a source), read by hand."""
    create(broker, topic, 1, **{"retention.ms": "1000"})

    async def test(wire: Wire) -> None:
        name = topic.encode()
        body = struct.pack(">ibh", 1, TOPIC, len(name)) + name + struct.pack(">i", -1)
        wire.send(DESCRIBE_CONFIGS, 0, body)
        _, raw = await wire.response()
        at = 8  # throttle, one result
        code, message_len = struct.unpack_from(">hh", raw, at)
        assert (code, message_len) == (Code.NONE, -1)
        at += 4 + 1
        (n,) = struct.unpack_from(">h", raw, at)
        assert raw[at + 2 : at + 2 + n] == name
        at += 2 + n
        (count,) = struct.unpack_from(">i", raw, at)
        at += 4
        configs = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">h", raw, at)
            key = raw[at + 2 : at + 2 + n].decode()
            at += 2 + n
            (n,) = struct.unpack_from(">h", raw, at)
            value = raw[at + 2 : at + 2 + n].decode()
            at += 2 + n
            _, is_default, _ = struct.unpack_from(">???", raw, at)  # read-only, ...
            at += 3
            configs[key] = (value, is_default)
        assert at == len(raw)
        assert configs["retention.ms"] == ("1000", False)
        assert configs["segment.ms"] == (str(7 * 24 * 3600 * 1000), True)

    run(broker, test)


def test_describe_configs_v1_synonyms_and_key_filter(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic, 1, **{"retention.ms": "1000"})
    t = codec.request_type(DESCRIBE_CONFIGS, 1)
    resource = codec.nested(t, "DescribeConfigsResource")

    async def test(wire: Wire) -> None:
        body = codec.build(t, include_synonyms=True, resources=(
            resource(resource_type=TOPIC, resource_name=topic,
                     configuration_keys=("retention.ms",)),
            resource(resource_type=TOPIC, resource_name=f"{topic}.none",
                     configuration_keys=None),
            resource(resource_type=4, resource_name="0", configuration_keys=None),
        ))  # fmt: skip
        response = await wire.call(DESCRIBE_CONFIGS, 1, body)
        mine, missing, brokers = response.results
        [entry] = mine.configs
        assert (entry.name, entry.value, entry.config_source) == (
            "retention.ms",
            "1000",
            1,
        )
        assert [(s.value, s.source) for s in entry.synonyms] == [
            ("1000", 1), (str(7 * 24 * 3600 * 1000), 5)
        ]  # fmt: skip
        assert missing.error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
        assert {c.name for c in brokers.configs} >= {"num.partitions", "listeners"}
        assert all(c.read_only for c in brokers.configs)

    run(broker, test)


def test_alter_configs_replaces_every_override(
    broker: EmbeddedBroker, topic: str
) -> None:
    create(broker, topic, 1, **{"retention.ms": "1000", "segment.ms": "5000"})
    t = codec.request_type(ALTER_CONFIGS, 1)
    resource, config = (
        codec.nested(t, "AlterConfigsResource"),
        codec.nested(t, "AlterableConfig"),
    )

    def alter(configs: dict[str, str], validate_only: bool, kind: int = TOPIC):
        entries = tuple(config(name=k, value=v) for k, v in configs.items())
        changed = resource(resource_type=kind, resource_name=topic, configs=entries)
        return codec.build(t, validate_only=validate_only, resources=(changed,))

    async def test(wire: Wire) -> None:
        response = await wire.call(ALTER_CONFIGS, 1, alter({"flush.ms": "7"}, True))
        assert response.responses[0].error_code == Code.NONE
        assert overrides(broker, topic) == {
            "retention.ms": "1000",
            "segment.ms": "5000",
        }
        response = await wire.call(ALTER_CONFIGS, 1, alter({"flush.ms": "7"}, False))
        assert response.responses[0].error_code == Code.NONE
        assert overrides(broker, topic) == {"flush.ms": "7"}
        response = await wire.call(ALTER_CONFIGS, 0, alter({"flush.ms": "x"}, False))
        assert response.responses[0].error_code == Code.INVALID_CONFIG
        assert "flush.ms" in response.responses[0].error_message
        response = await wire.call(ALTER_CONFIGS, 1, alter({}, False, kind=4))
        assert response.responses[0].error_code == Code.INVALID_REQUEST

    run(broker, test)


def test_incremental_alter_configs_v1_is_flexible(
    broker: EmbeddedBroker, topic: str
) -> None:
    """v1 has header v2 and answers with response header v1 (a tagged-field byte
    after the correlation id); kio reads the body after it."""
    create(broker, topic, 1, **{"retention.ms": "1000"})
    t = codec.request_type(INCREMENTAL_ALTER_CONFIGS, 1)
    resource, config = (
        codec.nested(t, "AlterConfigsResource"),
        codec.nested(t, "AlterableConfig"),
    )
    body = codec.build(t, validate_only=False, resources=(resource(
        resource_type=TOPIC, resource_name=topic, configs=(
            config(name="segment.ms", config_operation=0, value="9000"),
            config(name="retention.ms", config_operation=1, value=None),
        )),))  # fmt: skip

    async def test(wire: Wire) -> None:
        cid = wire.send(INCREMENTAL_ALTER_CONFIGS, 1, body)
        got, raw = await wire.response()
        assert (got, raw[:1]) == (cid, b"\x00")  # no tagged fields in the header
        response = codec.decode_response(INCREMENTAL_ALTER_CONFIGS, 1, raw, 1)
        assert response.responses[0].error_code == Code.NONE

    run(broker, test)
    assert overrides(broker, topic) == {"segment.ms": "9000"}
