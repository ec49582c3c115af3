"""Control-socket messages: every message survives the framing, errors come back as
the exception the supervisor raised, and bad frames are refused, not trusted."""

from __future__ import annotations

import socket
import struct

import pytest

from shmbroker import errors, protocol


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


@pytest.mark.parametrize(
    "request_",
    [
        protocol.Hello(protocol.PROTOCOL_VERSION, "me", 42),
        protocol.Metadata(["a", "b"], auto_create=True),
        protocol.Metadata(),
        protocol.CreateTopic("t", 3, {"retention.ms": "5"}, validate_only=True),
        protocol.DeleteTopic("t"),
        protocol.AlterConfigs("t", {"retention.ms": "1"}, ["segment.ms"]),
        protocol.CreatePartitions("t", 8),
        protocol.DescribeTopics(None),
    ],
)
def test_requests_survive_the_framing(request_: protocol.Request) -> None:
    a, b = pair()
    with a, b:
        protocol.send(a, request_)
        body = protocol.receive(b)
        assert body is not None
        assert protocol.request_decoder.decode(body) == request_


def test_an_error_reply_raises_the_supervisors_exception() -> None:
    reply = protocol.error_reply(errors.UnknownTopic("topic 'x' does not exist"))
    a, b = pair()
    with a, b:
        protocol.send(a, reply)
        body = protocol.receive(b)
        assert body is not None
        decoded = protocol.reply_decoder.decode(body)
    assert isinstance(decoded, protocol.ErrorReply)
    with pytest.raises(errors.UnknownTopic, match="'x' does not exist"):
        protocol.raise_error(decoded)
    with pytest.raises(errors.ShmbrokerError, match="odd"):
        protocol.raise_error(protocol.ErrorReply("NoSuchClass", "odd"))


def test_oversized_and_cut_frames_are_protocol_errors() -> None:
    a, b = pair()
    with a, b:
        a.sendall(struct.pack(">I", protocol.MAX_FRAME_BYTES + 1))
        with pytest.raises(errors.ProtocolError, match="too large"):
            protocol.receive(b)
    a, b = pair()
    with a, b:
        a.sendall(struct.pack(">I", 10) + b"abc")
        a.close()
        with pytest.raises(errors.ProtocolError, match="inside a frame"):
            protocol.receive(b)


def test_a_closed_connection_between_frames_is_none() -> None:
    a, b = pair()
    with b:
        a.close()
        assert protocol.receive(b) is None
