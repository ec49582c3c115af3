"""Configuration: every knob with its default, unit and reason, in frozen dataclasses.

`TopicConfig` holds a topic's (and so each of its partitions') settings under Kafka's
names with dots turned into underscores; `TopicConfig.from_kafka({"retention.ms":
"1000"})` takes Kafka's spelling and rejects unknown keys and bad values by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from shmbroker.errors import ConfigError

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicConfig:
    segment_bytes: int = 1 << 30  # roll the active segment at this size (Kafka)
    segment_ms: int = 7 * DAY_MS  # ... or when its first batch is this old (Kafka)
    retention_ms: int = 7 * DAY_MS  # delete segments older than this; -1: keep
    retention_bytes: int = -1  # delete oldest segments past this size; -1: no limit
    index_interval_bytes: int = 4096  # an offset index entry every this many bytes
    # fsync after this many records; 1 is "always" (fsync before a durable ack);
    # -1 leaves it to flush_ms and to producers waiting for durability
    flush_messages: int = -1
    flush_ms: int = 1000  # fsync at least this often while data is unflushed; -1: never
    ring_bytes: int = 16 << 20  # shared-memory ring per partition, power of two
    max_message_bytes: int = 1 << 20  # largest batch a producer may append (Kafka)
    message_timestamp_type: str = "CreateTime"  # or "LogAppendTime"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "message_timestamp_type":
                if value not in ("CreateTime", "LogAppendTime"):
                    raise ConfigError(
                        f"message.timestamp.type: {value!r} is not CreateTime or "
                        f"LogAppendTime"
                    )
                continue
            low = 1 if f.name in ("segment_bytes", "segment_ms", "ring_bytes") else -1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(
                    f"{kafka_name(f.name)}: {value!r} must be an integer >= {low}"
                )
        if self.ring_bytes & (self.ring_bytes - 1) or self.ring_bytes < 4096:
            raise ConfigError(
                f"ring.bytes: {self.ring_bytes} must be a power of two >= 4096"
            )

    @classmethod
    def from_kafka(cls, configs: Mapping[str, str | int]) -> TopicConfig:
        """From Kafka-style keys ("retention.ms") with string or int values."""
        names = {kafka_name(f.name): f for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for key, raw in configs.items():
            field = names.get(key)
            if field is None:
                raise ConfigError(
                    f"unknown topic config {key!r}; known: {', '.join(sorted(names))}"
                )
            if field.type == "str" or field.name == "message_timestamp_type":
                values[field.name] = str(raw)
                continue
            try:
                values[field.name] = int(raw)
            except ValueError:
                raise ConfigError(f"{key}: {raw!r} is not an integer") from None
        return cls(**values)  # type: ignore[arg-type]

    def to_kafka(self, only_changed: bool = False) -> dict[str, str]:
        default = TopicConfig()
        return {
            kafka_name(f.name): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not only_changed or getattr(self, f.name) != getattr(default, f.name)
        }


def kafka_name(field: str) -> str:
    return field.replace("_", ".")
