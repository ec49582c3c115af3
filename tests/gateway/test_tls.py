"""SSL listeners: TLS with the gateway's certificate and client certificates
(ssl.client.auth=required), certificates made here with trustme; confluent-kafka,
kafka-python and kcat produce and consume; a client without a certificate is
refused; the certificate's CN is the principal the allow lists apply to. Bad PEM
files stop `serve` at once; an open listener on a non-loopback address warns."""

from __future__ import annotations

import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from click.testing import CliRunner

from shmbroker import EmbeddedBroker, users
from shmbroker.cli import main
from shmbroker.config import BrokerConfig
from shmbroker.gateway.server import ssl_context, warn_if_open
from tests.gateway.conftest import KCAT, kcat, pem_files, secured_broker

with warnings.catch_warnings():  # as tests/gateway/test_clients.py: its import warns
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import kafka


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, the gateway's certificate and key, and two clients'
    (CN writer: no allow list; CN reader: may only read)."""
    return pem_files(tmp_path_factory.mktemp("pems"), "writer", "reader")


@pytest.fixture(scope="module")
def ssl_broker(
    tmp_path_factory: pytest.TempPathFactory, pems: dict[str, str]
) -> Iterator[EmbeddedBroker]:
    directory = tmp_path_factory.mktemp("ssl")
    users.add(
        directory / "data", "reader", "unused-password",
        allow=users.allow_list({"*": ["read"]}, []),
    )  # fmt: skip
    with secured_broker(
        directory, "SSL", **{
            "ssl.certificate.location": pems["server.cert"],
            "ssl.key.location": pems["server.key"],
            "ssl.client.auth": "required",
            "ssl.ca.location": pems["ca"],
        },
    ) as broker:  # fmt: skip
        yield broker


def _conf(broker: EmbeddedBroker, pems: dict[str, str], client: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": broker.bootstrap_servers,
        "security.protocol": "SSL",
        "ssl.ca.location": pems["ca"],
        "ssl.certificate.location": pems[f"{client}.cert"],
        "ssl.key.location": pems[f"{client}.key"],
    }


def test_confluent_kafka_over_tls_with_a_client_certificate(
    ssl_broker: EmbeddedBroker, pems: dict[str, str], topic: str
) -> None:
    conf = _conf(ssl_broker, pems, "writer")
    producer = confluent_kafka.Producer(conf)
    producer.produce(topic, b"over tls")
    assert producer.flush(30) == 0
    consumer = confluent_kafka.Consumer(
        {**conf, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 30
    message = None
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(0.5)
    consumer.close()
    assert message is not None, "nothing consumed within 30s"
    assert message.error() is None
    assert message.value() == b"over tls"


def test_kafka_python_over_tls_with_a_client_certificate(
    ssl_broker: EmbeddedBroker, pems: dict[str, str], topic: str
) -> None:
    options = {
        "bootstrap_servers": ssl_broker.bootstrap_servers,
        "security_protocol": "SSL", "ssl_cafile": pems["ca"],
        "ssl_certfile": pems["writer.cert"], "ssl_keyfile": pems["writer.key"],
    }  # fmt: skip
    producer = kafka.KafkaProducer(**options)
    producer.send(topic, b"python over tls").get(timeout=30)
    producer.close()
    consumer = kafka.KafkaConsumer(
        **options, auto_offset_reset="earliest", consumer_timeout_ms=10_000
    )
    consumer.assign([kafka.TopicPartition(topic, 0)])
    got = [m.value for _, m in zip(range(1), consumer, strict=False)]
    consumer.close()
    assert got == [b"python over tls"]


def test_kcat_over_tls_with_a_client_certificate(
    ssl_broker: EmbeddedBroker, pems: dict[str, str], topic: str
) -> None:
    conf = _conf(ssl_broker, pems, "writer")
    del conf["bootstrap.servers"]
    options = [a for k, v in conf.items() for a in ("-X", f"{k}={v}")]
    kcat(ssl_broker, *options, "-P", "-t", topic, stdin=b"a\nb\n")
    out = kcat(ssl_broker, *options, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
    assert out.stdout.split() == [b"a", b"b"]


def test_a_client_without_a_certificate_is_refused(
    ssl_broker: EmbeddedBroker, pems: dict[str, str]
) -> None:
    assert KCAT is not None
    result = subprocess.run(
        [KCAT, "-b", ssl_broker.bootstrap_servers, "-X", "security.protocol=SSL",
         "-X", f"ssl.ca.location={pems['ca']}", "-L", "-m", "2"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert b"SSL" in result.stderr  # the handshake failed: no certificate


def test_the_certificate_cn_is_the_principal_of_the_allow_lists(
    ssl_broker: EmbeddedBroker, pems: dict[str, str], topic: str
) -> None:
    """If CN=reader may only read, then its produce gets TOPIC_AUTHORIZATION_FAILED
    while CN=writer (no allow list) writes."""
    reports: list[Any] = []
    for client in ("writer", "reader"):
        producer = confluent_kafka.Producer(_conf(ssl_broker, pems, client))
        producer.produce(
            topic, client.encode(), on_delivery=lambda e, m: reports.append(e)
        )
        assert producer.flush(30) == 0
    assert reports[0] is None
    assert reports[1].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_bad_pem_files_are_refused_by_serve_naming_the_keys(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    result = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path / "data"), "--gateway-listen",
         "SSL://127.0.0.1:0", "--config", str(_config(tmp_path, key))],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "ssl.certificate.location" in result.output
    assert "cannot load them as a PEM certificate and its key" in result.output
    assert not (tmp_path / "data").exists()  # refused before anything started


def _config(tmp_path: Path, key: Path) -> Path:
    config = tmp_path / "broker.toml"
    config.write_text(
        f'ssl.certificate.location = "{tmp_path / "missing.pem"}"\n'
        f'ssl.key.location = "{key}"\n'
    )
    return config


@pytest.mark.parametrize(
    ("listener", "warned"),
    [
        ("PLAINTEXT://0.0.0.0:0", True),
        ("PLAINTEXT://127.0.0.1:0", False),
        ("SASL_PLAINTEXT://0.0.0.0:0", False),
    ],
)
def test_a_listener_others_reach_without_authentication_warns(
    listener: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    config = BrokerConfig(listeners=listener)
    assert config.listener is not None
    warn_if_open(config, config.listener)
    warnings_logged = [r for r in caplog.records if r.levelname == "WARNING"]
    assert bool(warnings_logged) is warned
    if warned:
        assert "not loopback and has no authentication" in caplog.text


@pytest.mark.parametrize(
    ("client_auth", "verify_mode"),
    [("none", ssl.CERT_NONE), ("requested", ssl.CERT_OPTIONAL),
     ("required", ssl.CERT_REQUIRED)],
)  # fmt: skip
def test_ssl_client_auth_is_kafkas(
    pems: dict[str, str], client_auth: str, verify_mode: ssl.VerifyMode
) -> None:
    context = ssl_context(
        BrokerConfig(
            listeners="SSL://127.0.0.1:0",
            ssl_certificate_location=pems["server.cert"],
            ssl_key_location=pems["server.key"],
            ssl_client_auth=client_auth,
            ssl_ca_location=pems["ca"],
        )
    )
    assert context is not None
    assert context.verify_mode == verify_mode
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
