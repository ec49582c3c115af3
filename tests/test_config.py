"""BrokerConfig's precedence (flag > SHMBROKER_* env > TOML file > default), its errors,
and Kafka's topic-name rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from shmbroker.config import BrokerConfig, Listener, parse_listener, validate_topic_name
from shmbroker.errors import ConfigError, InvalidArgument


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    file = tmp_path / "broker.toml"
    file.write_text(
        'data.dir = "/from/file"\nnum.partitions = 3\n'
        "auto.create.topics.enable = false\n[topic]\nring.bytes = 65536\n"
    )
    assert BrokerConfig.load(env={}) == BrokerConfig()
    from_file = BrokerConfig.load(file, env={})
    assert from_file.data_dir == "/from/file"
    assert from_file.num_partitions == 3
    assert from_file.auto_create_topics_enable is False
    assert from_file.topic_config({}).ring_bytes == 65536
    env = {"SHMBROKER_NUM_PARTITIONS": "5", "SHMBROKER_DATA_DIR": "/from/env"}
    from_env = BrokerConfig.load(file, env=env)
    assert (from_env.data_dir, from_env.num_partitions) == ("/from/env", 5)
    flagged = BrokerConfig.load(file, env=env, data_dir="/flag", num_partitions=None)
    assert (flagged.data_dir, flagged.num_partitions) == ("/flag", 5)


def test_topic_overrides_beat_the_brokers_topic_defaults() -> None:
    config = BrokerConfig(topic_defaults={"ring.bytes": "65536", "retention.ms": "5"})
    topic = config.topic_config({"retention.ms": "7"})
    assert (topic.ring_bytes, topic.retention_ms) == (65536, 7)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nope = 1\n", "unknown key 'nope'"),
        ("num.partitions = 0\n", "num.partitions"),
        ('[topic]\n"retention.mss" = 1\n', "retention.mss"),
        ("data.dir = \n", "config file"),
    ],
)
def test_bad_config_file_names_the_key(tmp_path: Path, text: str, match: str) -> None:
    file = tmp_path / "broker.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=match):
        BrokerConfig.load(file, env={})


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"num\.partitions: 'many'"):
        BrokerConfig.load(env={"SHMBROKER_NUM_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match=r"auto\.create\.topics\.enable"):
        BrokerConfig.load(env={"SHMBROKER_AUTO_CREATE_TOPICS_ENABLE": "maybe"})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no-such\.toml"):
        BrokerConfig.load(tmp_path / "no-such.toml", env={})


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 249, "..a", "_"])
def test_legal_topic_names(name: str) -> None:
    assert validate_topic_name(name) == name


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "non-empty"),
        (".", "not allowed"),
        ("..", "not allowed"),
        ("x" * 250, "at most 249"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("tópico", "'ó'"),
        (None, "non-empty string"),
    ],
)
def test_illegal_topic_names_name_the_rule(name: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate_topic_name(name)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("max.message.bytes", "-1", r"\[1, 2147483647\]"),
        ("max.message.bytes", "0", r"\[1, 2147483647\]"),
        ("max.message.bytes", str(10**20), r"\[1, 2147483647\]"),
        ("segment.bytes", "13", r"\[14, 2147483647\]"),
        ("segment.ms", "0", r"\[1, 9223372036854775807\]"),
        ("retention.ms", "-2", r"\[-1, 9223372036854775807\]"),
        ("flush.messages", "0", "except 0"),
        ("flush.ms", "-5", r"\[-1, "),
        ("index.interval.bytes", "-1", r"\[0, 2147483647\]"),
        ("ring.bytes", "6000", "power of two"),
        ("ring.bytes", "1024", "power of two >= 4096"),
    ],
)
def test_topic_configs_outside_kafkas_ranges_are_refused_naming_the_range(
    key: str, value: str, allowed: str
) -> None:
    """If a topic config is outside the range Kafka allows (or would make the topic
    unwritable), then creating or altering it fails naming the key, the value and
    what is allowed (before: max.message.bytes -1, 0 and 1e20 were accepted)."""
    with pytest.raises(ConfigError, match=rf"{key}: .*{allowed}"):
        BrokerConfig().topic_config({key: value})


def test_gateway_keys_use_kafkas_names(tmp_path: Path) -> None:
    file = tmp_path / "broker.toml"
    file.write_text(
        'listeners = "PLAINTEXT://0.0.0.0:9093"\n'
        'advertised.listeners = "PLAINTEXT://kafka.example:9093"\n'
        "gateway.processes = 2\nsocket.request.max.bytes = 1048576\n"
        "gateway.acks.all.fsync = false\n"
    )
    config = BrokerConfig.load(file, env={})
    assert config.listener == Listener("0.0.0.0", 9093)
    assert config.advertised_listener == Listener("kafka.example", 9093)
    assert (config.gateway_processes, config.socket_request_max_bytes) == (2, 1 << 20)
    assert config.gateway_acks_all_fsync is False
    assert BrokerConfig().listener == Listener("127.0.0.1", 9092)  # the default
    assert BrokerConfig(listeners="").listener is None  # no gateway
    assert parse_listener("[::1]:0") == Listener("::1", 0)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("SSL://host:9093", "needs ssl.certificate.location and ssl.key.location"),
        ("EXTERNAL://host:9093", "EXTERNAL is not in listener.security.protocol.map"),
        ("host", "HOST:PORT"),
        ("host:70000", "HOST:PORT"),
        ("PLAINTEXT://a:1,PLAINTEXT://b:2", "one listener"),
    ],
)
def test_bad_listeners_are_refused_by_name(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"listeners: .*{match}"):
        BrokerConfig(listeners=value)


def test_gateway_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"max\.connections: 0"):
        BrokerConfig(max_connections=0)


def test_security_keys_use_kafkas_names(tmp_path: Path) -> None:
    file = tmp_path / "broker.toml"
    file.write_text(
        'listeners = "EXTERNAL://0.0.0.0:9094"\n'
        'listener.security.protocol.map = "EXTERNAL:SASL_SSL"\n'
        'sasl.enabled.mechanisms = "PLAIN,SCRAM-SHA-512"\n'
        'ssl.certificate.location = "/etc/broker.pem"\n'
        'ssl.key.location = "/etc/broker.key"\n'
        'ssl.client.auth = "requested"\nssl.ca.location = "/etc/ca.pem"\n'
        'connections.max.reauth.ms = 60000\naccess.group = "agents"\n'
    )
    config = BrokerConfig.load(file, env={})
    assert config.security_protocol == "SASL_SSL"
    assert config.listener == Listener("0.0.0.0", 9094)
    assert config.sasl_mechanisms == ["PLAIN", "SCRAM-SHA-512"]
    assert config.connections_max_reauth_ms == 60000
    assert config.access_group == "agents"
    assert BrokerConfig().security_protocol == "PLAINTEXT"  # the default


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"sasl_enabled_mechanisms": "GSSAPI"}, "sasl.enabled.mechanisms: 'GSSAPI'"),
        (
            {"listeners": "SASL_PLAINTEXT://h:1", "sasl_enabled_mechanisms": ""},
            "sasl.enabled.mechanisms is empty",
        ),
        ({"ssl_client_auth": "maybe"}, "ssl.client.auth: 'maybe'"),
        ({"ssl_client_auth": "required"}, "needs ssl.ca.location"),
        ({"connections_max_reauth_ms": -1}, "connections.max.reauth.ms: -1"),
        ({"listener_security_protocol_map": "A:TLS"}, "'A:TLS' is not NAME:PROTOCOL"),
    ],
)
def test_bad_security_keys_are_refused_by_name(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BrokerConfig(**values)
