"""The supervisor's control-request registry: every request type of the control
protocol has exactly one handler, and a second registration fails at once."""

from __future__ import annotations

import typing

import pytest

from shmbroker import protocol
from shmbroker.broker import handlers


def test_every_control_request_has_a_handler() -> None:
    requests = set(typing.get_args(protocol.Request))
    assert set(handlers.HANDLERS) == requests


def test_a_second_handler_for_a_request_type_is_refused() -> None:
    with pytest.raises(RuntimeError, match="Heartbeat registered twice"):

        @handlers.handles(protocol.Heartbeat)
        def again(s, request, conn):  # type: ignore[no-untyped-def]
            return protocol.Done()

    assert handlers.HANDLERS[protocol.Heartbeat] is handlers.heartbeat
