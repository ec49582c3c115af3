"""Configuration: every knob with its default, unit and reason, in frozen dataclasses.

`TopicConfig` holds a topic's (and so each of its partitions') settings under Kafka's
names with dots turned into underscores; `TopicConfig.from_kafka({"retention.ms":
"1000"})` takes Kafka's spelling and rejects unknown keys and bad values by name.
`BrokerConfig` holds the supervisor's; `BrokerConfig.load` applies the precedence
CLI flag > SHMBROKER_* environment > TOML file > default.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from shmbroker.errors import ConfigError, InvalidArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
        ring = self.ring_bytes
        if isinstance(ring, int) and (ring < 4096 or ring & (ring - 1)):
            raise ConfigError(f"ring.bytes: {ring} must be a power of two >= 4096")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "message_timestamp_type":
                if value not in ("CreateTime", "LogAppendTime"):
                    raise ConfigError(
                        f"message.timestamp.type: {value!r} is not CreateTime or "
                        f"LogAppendTime"
                    )
                continue
            low, high = _RANGES[f.name]
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not low <= value <= high
                or (value == 0 and f.name in _NOT_ZERO)
            ):
                zero = " except 0" if f.name in _NOT_ZERO else ""
                raise ConfigError(
                    f"{kafka_name(f.name)}: {value!r} must be an integer in "
                    f"[{low}, {high}]{zero}"
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


INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
# Kafka's ranges (LogConfig), with our -1 for "never" / "no limit" where it has one
_RANGES = {
    "segment_bytes": (14, INT32_MAX),  # Kafka: at least one legacy record overhead
    "segment_ms": (1, INT64_MAX),
    "retention_ms": (-1, INT64_MAX),
    "retention_bytes": (-1, INT64_MAX),
    "index_interval_bytes": (0, INT32_MAX),
    "flush_messages": (-1, INT64_MAX),
    "flush_ms": (-1, INT64_MAX),
    "ring_bytes": (4096, 1 << 62),  # /dev/shm space is checked at create
    "max_message_bytes": (1, INT32_MAX),  # 0 or -1 made a topic unwritable
}
_NOT_ZERO = {"flush_messages"}  # -1 is "never"; 0 would be nothing


def kafka_name(field: str) -> str:
    return field.replace("_", ".")


MAX_TOPIC_NAME = 249
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: object) -> str:
    """Kafka's rule: [a-zA-Z0-9._-], 1 to 249 characters, not '.' or '..'."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"topic name {name!r}: must be a non-empty string")
    if name in (".", ".."):
        raise InvalidArgument(f"topic name {name!r} is not allowed")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidArgument(
            f"topic name of {len(name)} characters: at most {MAX_TOPIC_NAME} allowed"
        )
    if not _LEGAL_TOPIC.fullmatch(name):
        bad = sorted({c for c in name if not _LEGAL_TOPIC.fullmatch(c)})
        raise InvalidArgument(
            f"topic name {name!r} contains {''.join(bad)!r}: legal characters are "
            f"ASCII letters, digits, '.', '_' and '-'"
        )
    return name


DEFAULT_DATA_DIR = "shmbroker-data"
CONTROL_SOCKET = "control.sock"


def default_data_dir() -> str:
    """Where clients look for the broker when not told: SHMBROKER_DATA_DIR, else
    ./shmbroker-data (the supervisor's default too)."""
    return os.environ.get("SHMBROKER_DATA_DIR") or DEFAULT_DATA_DIR


class Listener(NamedTuple):
    host: str
    port: int


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SSL_CLIENT_AUTH = ("none", "requested", "required")  # Kafka's ssl.client.auth
DEFAULT_PROTOCOL_MAP = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)


def parse_listener(text: str, key: str = "listeners") -> Listener:
    """Kafka's `NAME://HOST:PORT` (or plain `HOST:PORT`) as (host, port); one
    listener (its security protocol: `listener_protocol`)."""
    return _split_listener(text, key)[1]


def _split_listener(text: str, key: str) -> tuple[str, Listener]:
    value = text.strip()
    name, sep, rest = value.partition("://")
    if sep:
        value = rest
    else:
        name = ""
    if "," in value:
        raise ConfigError(f"{key}: {text!r}: one listener only")
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT (port 0 to 65535)")
    return (name.upper() if name else "PLAINTEXT"), Listener(
        host or "0.0.0.0", int(port)
    )


def parse_protocol_map(text: str) -> dict[str, str]:
    """Kafka's listener.security.protocol.map: `NAME:PROTOCOL,...`."""
    out: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, protocol = item.partition(":")
        if not sep or protocol.upper() not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL "
                f"(a protocol of {', '.join(SECURITY_PROTOCOLS)})"
            )
        out[name.strip().upper()] = protocol.upper()
    return out


def listener_protocol(text: str, protocol_map: str = DEFAULT_PROTOCOL_MAP) -> str:
    """The security protocol of listener text, by its name and the map."""
    name, _ = _split_listener(text, "listeners")
    protocols = parse_protocol_map(protocol_map)
    if name not in protocols:
        raise ConfigError(
            f"listeners: {text!r}: listener name {name} is not in "
            f"listener.security.protocol.map ({protocol_map})"
        )
    return protocols[name]


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: str = DEFAULT_DATA_DIR  # one broker per data directory
    shm_prefix: str = "shmb."  # every shm name starts "/<prefix>"; tests make it unique
    auto_create_topics_enable: bool = True  # a produce to an unknown topic creates it
    num_partitions: int = 1  # partitions of an auto-created topic (Kafka)
    control_max_connections: int = 1000  # control-socket clients at once; more refused
    # topic configs (Kafka's names) for topics that do not set them: lets a host with
    # a small /dev/shm default to small rings
    topic_defaults: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # a member's session.timeout.ms must lie within these (Kafka's keys). Kafka's
    # minimum is 6000; ours is lower: local members die with their control
    # connection anyway, and remote ones may choose to be detected quickly
    group_min_session_timeout_ms: int = 100
    group_max_session_timeout_ms: int = 30 * 60 * 1000  # Kafka's default
    # ---- the Kafka protocol gateway (Kafka's key names where Kafka has one) ----
    # where the gateway listens: PLAINTEXT://HOST:PORT (port 0: any free one);
    # "" runs no gateway
    listeners: str = "PLAINTEXT://127.0.0.1:9092"
    advertised_listeners: str = ""  # what Metadata tells clients; "": the bound one
    gateway_processes: int = 1  # > 1: that many processes share the port (SO_REUSEPORT)
    socket_request_max_bytes: int = 100 << 20  # larger requests close the connection
    max_connections: int = 10_000  # connections beyond this are closed at once
    # acks=all answers once the batch is fsynced (a waiting produce makes the spill
    # fsync at once, shared by concurrent ones); false: at append, as Kafka with one
    # replica does
    gateway_acks_all_fsync: bool = True
    # where the supervisor serves Prometheus text at /metrics (Redpanda's admin
    # port): HOST:PORT (port 0: any free one); "" serves none
    metrics_listener: str = "127.0.0.1:9644"
    # ---- gateway security (Kafka's names) ----
    # a listener's name (`NAME://`) -> its security protocol
    listener_security_protocol_map: str = DEFAULT_PROTOCOL_MAP
    # what SASL_* listeners offer; users and their credentials: `shmbroker users`
    sasl_enabled_mechanisms: str = "SCRAM-SHA-256,SCRAM-SHA-512"
    # SSL/SASL_SSL listeners: the certificate (PEM, chain first) and its private key
    # (PEM; ssl.key.password if encrypted)
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    ssl_key_password: str = ""
    ssl_client_auth: str = "none"  # client certificates: none | requested | required
    ssl_ca_location: str = ""  # PEM CAs that sign client certificates
    # an authenticated session lasts this long before the client must log in again
    # (KIP-368: SaslAuthenticate v1 tells it); 0: no limit
    connections_max_reauth_ms: int = 0
    # requests before authentication larger than this close the connection (Kafka)
    sasl_server_max_receive_size: int = 512 << 10
    # ---- local access for other users ----
    # a Unix group that may use the broker too: data directory 0750, control socket
    # and shared memory 0660, partition directories 02750 and their files 0640, owned
    # by it; "": the owner only (0700 / 0600)
    access_group: str = ""

    def __post_init__(self) -> None:
        if self.listeners:
            parse_listener(self.listeners)
            protocol = self.security_protocol
            if protocol in ("SSL", "SASL_SSL") and not (
                self.ssl_certificate_location and self.ssl_key_location
            ):
                raise ConfigError(
                    f"listeners: {self.listeners!r} is {protocol}: it needs "
                    f"ssl.certificate.location and ssl.key.location (PEM files)"
                )
            if protocol.startswith("SASL_") and not self.sasl_mechanisms:
                raise ConfigError(
                    f"listeners: {self.listeners!r} is {protocol}, but "
                    f"sasl.enabled.mechanisms is empty"
                )
        for mechanism in self.sasl_mechanisms:
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"sasl.enabled.mechanisms: {mechanism!r} is not served; "
                    f"known: {', '.join(SASL_MECHANISMS)}"
                )
        if self.ssl_client_auth not in SSL_CLIENT_AUTH:
            raise ConfigError(
                f"ssl.client.auth: {self.ssl_client_auth!r} is not one of "
                f"{', '.join(SSL_CLIENT_AUTH)}"
            )
        if self.ssl_client_auth != "none" and not self.ssl_ca_location:
            raise ConfigError(
                f"ssl.client.auth={self.ssl_client_auth} needs ssl.ca.location (the "
                f"PEM CAs that sign client certificates)"
            )
        if self.connections_max_reauth_ms < 0:
            raise ConfigError(
                f"connections.max.reauth.ms: {self.connections_max_reauth_ms} must "
                f"be >= 0"
            )
        if self.metrics_listener:
            parse_listener(self.metrics_listener, "metrics.listener")
        if self.advertised_listeners:
            parse_listener(self.advertised_listeners, "advertised.listeners")
        for key in (
            "gateway_processes", "socket_request_max_bytes", "max_connections",
            "sasl_server_max_receive_size",
        ):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"{kafka_name(key)}: {value!r} must be an integer >= 1"
                )
        if self.num_partitions < 1:
            raise ConfigError(f"num.partitions: {self.num_partitions} must be >= 1")
        low, high = self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
        if not 1 <= low <= high:
            raise ConfigError(
                f"group.min.session.timeout.ms ({low}) must be >= 1 and at most "
                f"group.max.session.timeout.ms ({high})"
            )
        if self.control_max_connections < 1:
            raise ConfigError(
                f"control.max.connections: {self.control_max_connections} must be >= 1"
            )
        if not self.shm_prefix.startswith("shmb.") or "/" in self.shm_prefix:
            raise ConfigError(f"shm.prefix: {self.shm_prefix!r} must start 'shmb.'")
        TopicConfig.from_kafka(self.topic_defaults)  # names the bad key, if any

    @property
    def control_socket(self) -> Path:
        return Path(self.data_dir) / CONTROL_SOCKET

    @property
    def listener(self) -> Listener | None:
        """Where the gateway listens; None: no gateway."""
        return parse_listener(self.listeners) if self.listeners else None

    def access_gid(self) -> int | None:
        """The gid of access.group, None without one; ConfigError if this host
        has no such group."""
        if not self.access_group:
            return None
        try:
            return grp.getgrnam(self.access_group).gr_gid
        except KeyError:
            raise ConfigError(
                f"access.group: no group {self.access_group!r} on this host "
                f"(groupadd it, or leave the key out)"
            ) from None

    @property
    def listener_name(self) -> str:
        """The listener's name (`NAME://`; PLAINTEXT when not given)."""
        return _split_listener(self.listeners, "listeners")[0]

    def security_environment(self) -> dict[str, str]:
        """The security keys as SHMBROKER_* variables: how the supervisor hands
        them to its gateway processes (not on a command line, which `ps` shows)."""
        return {
            "SHMBROKER_" + f.name.upper(): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name in _SECURITY_KEYS
        }

    @property
    def security_protocol(self) -> str:
        """The listener's: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        if not self.listeners:
            return "PLAINTEXT"
        return listener_protocol(self.listeners, self.listener_security_protocol_map)

    @property
    def sasl_mechanisms(self) -> list[str]:
        return [
            m.strip().upper()
            for m in self.sasl_enabled_mechanisms.split(",")
            if m.strip()
        ]

    @property
    def metrics_address(self) -> Listener | None:
        """Where the supervisor serves /metrics; None: nowhere."""
        if not self.metrics_listener:
            return None
        return parse_listener(self.metrics_listener, "metrics.listener")

    @property
    def advertised_listener(self) -> Listener | None:
        if not self.advertised_listeners:
            return None
        return parse_listener(self.advertised_listeners, "advertised.listeners")

    def topic_config(self, overrides: Mapping[str, str | int]) -> TopicConfig:
        return TopicConfig.from_kafka({**self.topic_defaults, **overrides})

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **flags: Any,
    ) -> BrokerConfig:
        """Flags (None = not given) > SHMBROKER_<KEY> environment > TOML file >
        defaults. The TOML file uses Kafka-style keys: `data.dir`, `num.partitions`,
        `auto.create.topics.enable`, `shm.prefix`, and a `[topic]` table of topic
        config defaults."""
        values: dict[str, Any] = {}
        names = {
            kafka_name(f.name): f.name
            for f in dataclasses.fields(cls)
            if f.name != "topic_defaults"
        }
        if file is not None:
            try:
                data = tomllib.loads(Path(file).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config file {file}: {exc}") from exc
            topic = data.pop("topic", {})
            if not isinstance(topic, dict):
                raise ConfigError(f"{file}: [topic] must be a table")
            values["topic_defaults"] = {k: str(v) for k, v in _flatten(topic).items()}
            for key, value in _flatten(data).items():
                if key in names:
                    values[names[key]] = value
                else:
                    raise ConfigError(
                        f"{file}: unknown key {key!r}; known: "
                        f"{', '.join(sorted(names))}, [topic]"
                    )
        env = os.environ if env is None else env
        for field in dataclasses.fields(cls):
            raw = env.get("SHMBROKER_" + field.name.upper())
            if raw is not None and field.name != "topic_defaults":
                values[field.name] = raw
        values.update({k: v for k, v in flags.items() if v is not None})
        for field in dataclasses.fields(cls):
            value = values.get(field.name)
            if isinstance(value, str) and field.type in ("int", "bool"):
                values[field.name] = _parse(field.name, value, field.type)
        return cls(**values)


_SECURITY_KEYS = (
    "listener_security_protocol_map", "sasl_enabled_mechanisms",
    "ssl_certificate_location", "ssl_key_location", "ssl_key_password",
    "ssl_client_auth", "ssl_ca_location", "connections_max_reauth_ms",
    "sasl_server_max_receive_size",
)  # fmt: skip


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML reads `data.dir = 1` as {"data": {"dir": 1}}: back to Kafka's keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _parse(name: str, raw: str, kind: str) -> int | bool:
    if kind == "bool":
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{kafka_name(name)}: {raw!r} is not true or false")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{kafka_name(name)}: {raw!r} is not an integer") from None
