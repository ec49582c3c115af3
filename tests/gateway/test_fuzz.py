"""Bad input: random bytes, requests of every API and version with random bodies, and
mutated frames captured from real clients (captured_frames.bin), fed to an
in-process gateway of a real supervisor in random pieces.

Every example must end with the connection answered (well-formed frames, the right
correlation ids) or closed, never with an exception out of the protocol; closing a
connection whose request still waits (a parked Fetch) ends that request; and the
gateway then answers a new connection. Each runs against a PLAINTEXT gateway, a
SASL_PLAINTEXT one (before a login: only ApiVersions and the SASL requests are
served) and a SASL_PLAINTEXT one after a PLAIN login. `make test` runs a bounded
number of examples; `make fuzz` runs many more (GATEWAY_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import struct
import subprocess
import sys
import time
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmbroker import Admin, EmbeddedBroker, Producer, shm, users
from shmbroker.config import BrokerConfig, Listener
from shmbroker.gateway.apis import APIS
from shmbroker.gateway.sasl import SASL_AUTHENTICATE, SASL_HANDSHAKE
from shmbroker.gateway.server import Gateway
from shmbroker.kafka import codec
from tests.gateway.capture_frames import read_frames
from tests.gateway.wire import Wire, make_gateway

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SETTLE = 2.0  # seconds an example's request may take before it counts as waiting
CAPTURED = [frame for _, frame in read_frames()]
SPECS = sorted(
    (key, version)
    for key, api in APIS.items()
    for version in range(api.min_version, api.max_version + 1)
)


def _example(cls: Any) -> Any:
    """A request of kio type cls with a value in every field (one element in
    every array), for the APIs and versions no captured client sent."""
    return cls(**{f.name: _value(f.type, f.metadata.get("kafka_type"))
                  for f in dataclasses.fields(cls)})  # fmt: skip


def _value(kind: Any, kafka_type: str | None) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is tuple:
        return (_value(typing.get_args(kind)[0], kafka_type),)
    if dataclasses.is_dataclass(kind):
        return _example(kind)
    if kafka_type in ("string",):
        return "c"
    if kafka_type in ("bytes", "records"):
        return b"x" * 70
    if kafka_type == "bool":
        return False
    if kafka_type and kafka_type.startswith("timedelta"):
        return timedelta(milliseconds=1)
    if kafka_type == "error_code":
        return codec.ErrorCode(0)
    if kafka_type == "uuid":
        return uuid.UUID(int=1)
    return 1


def _sample(key: int, version: int) -> bytes:
    """A frame (no size) of every (key, version) kio has, from _example."""
    if (key, version) == (32, 0):  # kio has no v0: one topic, every config
        body = struct.pack(">ibh", 1, 2, 1) + b"c" + struct.pack(">i", -1)
        return codec.frame_request(key, version, 1, body)[4:]
    try:
        cls = codec.request_type(key, version)
    except Exception:  # Produce v0-v2: kio has none, and we close on them
        return codec.frame_request(key, version, 1, b"")[4:]
    return codec.frame_request(key, version, 1, codec.encode(_example(cls)))[4:]


SAMPLES = CAPTURED + [_sample(key, version) for key, version in SPECS]
EXTREMES = [
    struct.pack(">i", 0x7FFFFFFF), struct.pack(">i", -1), struct.pack(">i", 0x40000000),
    struct.pack(">h", 0x7FFF), struct.pack(">h", -2), b"\xff\xff\xff\xff\x0f", b"\x00",
    struct.pack(">q", -1), struct.pack(">q", 1 << 62),
]  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """No auto-creation, and the smallest rings: fuzzed admin requests may create
    topics of thousands of partitions."""
    prefix = f"{shm.NAME_PREFIX}t{os.getpid()}.{uuid.uuid4().hex[:10]}."
    embedded = EmbeddedBroker(
        tmp_path_factory.mktemp("fuzz") / "data", shm_prefix=prefix,
        auto_create_topics=False, topic_defaults={"ring.bytes": 4096}, remove=True,
    )  # fmt: skip
    with embedded:
        with Admin(str(embedded.data_dir)) as admin:
            admin.create_topic("c", 2)
        with Producer(str(embedded.data_dir)) as producer:
            producer.send_batch("c", [b"x" * 10] * 20, partition=0)
        yield embedded
    leaked = list(shm.list_names(prefix))
    for name in leaked:
        shm.unlink(name)
    assert not leaked


# a PLAIN login with v1 requests, before the fuzzed frames of the logged-in variant
LOGIN = codec.frame_request(
    SASL_HANDSHAKE, 1, 2_000_000_001, struct.pack(">h", 5) + b"PLAIN"
) + codec.frame_request(
    SASL_AUTHENTICATE, 1, 2_000_000_002, struct.pack(">i", 15) + b"\0fuzz\0fuzz-pw-1"
)
Fuzzed = tuple[asyncio.AbstractEventLoop, Gateway, bytes]


@pytest.fixture(
    scope="module", params=["PLAINTEXT", "SASL_PLAINTEXT", "SASL_PLAINTEXT login"]
)
def gateway(request: pytest.FixtureRequest, broker: EmbeddedBroker) -> Iterator[Fuzzed]:
    """A gateway, and what each connection sends before the fuzzed bytes."""
    loop = asyncio.new_event_loop()
    if request.param == "PLAINTEXT":
        gw = make_gateway(str(broker.data_dir))
    else:
        users.add(broker.data_dir, "fuzz", "fuzz-pw-1", mechanisms=["SCRAM-SHA-256"])
        gw = Gateway(
            BrokerConfig(
                data_dir=str(broker.data_dir),
                listeners="SASL_PLAINTEXT://127.0.0.1:0",
                sasl_enabled_mechanisms="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            ),
            Listener("127.0.0.1", 9),
        )
    yield loop, gw, LOGIN if request.param.endswith("login") else b""
    gw.close()
    loop.close()


def exchange(gateway: Fuzzed, pieces: list[bytes]) -> None:
    loop, gw, login = gateway
    loop.run_until_complete(_exchange(gw, [login, *pieces] if login else pieces))


async def _exchange(gw: Gateway, pieces: list[bytes]) -> None:
    wire = Wire(gw)
    session = wire.protocol.session
    assert session is not None
    sent = _correlation_ids(b"".join(pieces))
    for piece in pieces:
        wire.protocol.data_received(piece)  # raises if anything escapes
    deadline = time.monotonic() + SETTLE
    while not wire.transport.closed and (session._pending or session._slots):
        if time.monotonic() > deadline:
            break  # still waiting (a parked fetch): closing must end it
        await asyncio.sleep(0.005)
    answered = _answers(bytes(wire.transport.written))
    assert answered == sent[: len(answered)], "answers out of order or unasked"
    session.close()
    deadline = time.monotonic() + 5
    while session._tasks:
        assert time.monotonic() < deadline, (
            f"requests outlived their connection: {session._tasks}"
        )
        await asyncio.sleep(0.005)
    healthy = Wire(gw)
    response = await healthy.call(18, 0, b"")
    assert response.error_code == 0, "the gateway no longer answers"
    healthy.protocol.session.close()


def _correlation_ids(stream: bytes) -> list[int]:
    """The correlation ids of the whole frames of a byte stream, in order."""
    out, at = [], 0
    while len(stream) - at >= 12:
        size, _, _, cid = struct.unpack_from(">ihhi", stream, at)
        if size < 8 or len(stream) - at - 4 < size:
            break
        out.append(cid)
        at += 4 + size
    return out


def _answers(stream: bytes) -> list[int]:
    """The correlation ids of the response frames; every byte must be in one."""
    out, at = [], 0
    while at < len(stream):
        assert len(stream) - at >= 8, "a response cut short"
        size, cid = struct.unpack_from(">ii", stream, at)
        assert 4 <= size <= len(stream) - at - 4, "a response frame's size is wrong"
        out.append(cid)
        at += 4 + size
    return out


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [data]


def _mutate(frame: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(frame)
    for op, at, value in edits:
        at %= len(out) + 1
        if op == 0 and at < len(out):
            out[at] ^= 1 << (value % 8)
        elif op == 1:
            out[at:at] = EXTREMES[value % len(EXTREMES)]
        elif op == 2:
            del out[at : at + 1 + value % 8]
        elif op == 3:
            out[at : at + 4] = EXTREMES[value % len(EXTREMES)]
        else:
            del out[at:]
    return bytes(out)


def _framed(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


@FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_random_bytes(gateway, data: bytes, cuts: list[int]) -> None:
    exchange(gateway, _pieces(data, cuts))


@FUZZ
@given(
    spec=st.sampled_from(SPECS),
    body=st.binary(max_size=200),
    correlation=st.integers(-(2**31), 2**31 - 1),
    cuts=st.lists(st.integers(0, 400), max_size=3),
)
def test_every_api_and_version_with_a_random_body(
    gateway, spec: tuple[int, int], body: bytes, correlation: int, cuts: list[int]
) -> None:
    key, version = spec
    header = struct.pack(">hhih", key, version, correlation, 4) + b"fuzz"
    if codec.is_flexible(key, version):  # header v2: a tagged-field count
        header += b"\x00"
    exchange(gateway, _pieces(_framed(header + body), cuts))


@FUZZ
@given(
    frames=st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255)),
        max_size=4,
    ),
    cuts=st.lists(st.integers(0, 4000), max_size=3),
)
def test_mutated_frames_of_real_clients_and_of_every_api(
    gateway, frames: list[bytes], edits: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    """Pipelined frames (captured from clients, or one of each API and version),
    the last one mutated."""
    stream = b"".join(_framed(f) for f in frames[:-1])
    stream += _framed(_mutate(frames[-1], edits))
    exchange(gateway, _pieces(stream, cuts))


def test_the_captured_frames_cover_the_hot_apis() -> None:
    kinds = {struct.unpack_from(">h", f)[0] for f in CAPTURED}
    assert {0, 1, 2, 3, 18, 19, 20, 22} <= kinds


def test_unmutated_frames_are_answered(gateway) -> None:
    """Every sample is answered, but Produce v0-v2 and, on a SASL listener before
    a login, every request but ApiVersions and the SASL ones: those close."""
    loop, gw, login = gateway
    before_login = gw.config.security_protocol.startswith("SASL_") and not login
    for frame in SAMPLES:

        async def one(frame: bytes = frame) -> None:
            wire = Wire(gw)
            if login:
                wire.feed(LOGIN)
                for _ in range(2):
                    await wire.response(timeout=30)
            wire.feed(_framed(frame))
            key, version, cid = struct.unpack_from(">hhi", frame)
            if (key == 0 and version < 3) or (  # message format v0/v1: not served
                before_login and key not in (18, SASL_HANDSHAKE, SASL_AUTHENTICATE)
            ):
                await wire.closed()
                return
            got, _ = await wire.response(timeout=30)
            assert got == cid, (key, version)
            wire.protocol.session.close()

        loop.run_until_complete(one())


SWEEP = """
import struct, sys
from shmbroker import errors
from shmbroker.kafka import codec
from tests.gateway.test_fuzz import EXTREMES, SAMPLES
decoded = refused = 0
for frame in SAMPLES:
    key, version = struct.unpack_from(">hh", frame)
    try:
        flexible = codec.is_flexible(key, version)
        header = codec.parse_header(frame, flexible)
        codec.request_type(key, version)
    except Exception:
        continue
    start = header.body_offset
    for at in range(start, len(frame) + 1):
        for value in EXTREMES:
            for mutated in (frame[:at] + value + frame[at:],
                            frame[:at] + value + frame[at + len(value):]):
                try:
                    codec.decode_request(key, version, mutated, start)
                    decoded += 1
                except errors.ProtocolError:
                    refused += 1
print(decoded, refused)
"""


def test_every_length_field_claiming_too_much_is_refused() -> None:
    """Each sample with an extreme value written over or into every position of its
    body: decoding refuses it or reads it, and never takes the process down (kio
    reserves a compact array's claimed length: 2^32 elements abort on OOM). In a
    child process, so that an abort is a failure with its output, not a dead run."""
    result = subprocess.run(
        [sys.executable, "-c", SWEEP],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, refused = map(int, result.stdout.split())
    assert refused > 1000  # the sweep did reach the parsers
