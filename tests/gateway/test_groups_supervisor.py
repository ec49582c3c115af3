"""A remote consumer group across crashes: kill -9 the supervisor (the group
coordinator) under two Kafka-client members: the gateway keeps serving, the next
supervisor's coordinator has the committed offsets, the members rejoin it, and
every record is consumed once; kill -9 the gateway: the members reconnect to the
restarted one and keep their generation. A module of its own: it kills its
broker's processes."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from shmbroker import Admin, EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_groups import Member, create, members, produce, stable

pytestmark = pytest.mark.system

__all__ = ["members"]  # the fixture, shared


def committed_total(admin: Admin, group: str) -> int:
    return sum(o.offset for o in admin.list_group_offsets(group).values())


def test_a_remote_group_rejoins_a_restarted_supervisor_with_its_offsets(
    broker: EmbeddedBroker, topic: str, members: list[Member]
) -> None:
    partitions, first, group = 4, 200, f"crash-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    members += [Member(c, broker, topic, group) for c in ("confluent", "kafka-python")]
    produce(broker, topic, range(first), partitions)
    with Admin(str(broker.data_dir)) as admin:
        wait_until(lambda: committed_total(admin, group) == first, 60, "all commits")
        before = admin.list_group_offsets(group)
    gateway = broker.gateway_pid()
    broker.kill()  # SIGKILL: no goodbye to anyone
    broker.start()
    assert broker.gateway_pid() == gateway, "the gateway was not kept serving"
    with Admin(str(broker.data_dir)) as admin:
        assert admin.list_group_offsets(group) == before
        wait_until(
            lambda: stable(admin, group, 2, assigned=True),
            60,
            "both members back in the new coordinator's group",
        )
    produce(broker, topic, range(first, 2 * first), partitions)

    def values() -> list[int]:
        return sorted(int(v) for m in members for _, _, v in m.records)

    wait_until(lambda: len(values()) >= 2 * first, 60, f"{2 * first} records")
    assert values() == list(range(2 * first)), "a record lost or read twice"


def test_a_gateway_kill_does_not_rebalance_a_remote_group(
    broker: EmbeddedBroker, topic: str, members: list[Member]
) -> None:
    """Remote members live by heartbeats, not by the gateway's control connection:
    if the gateway dies and the supervisor restarts it within their
    session.timeout.ms, they reconnect as the same members of the same
    generation, and every record is consumed once."""
    partitions, first, group = 2, 100, f"gwkill-{uuid.uuid4().hex[:6]}"
    create(broker, topic, partitions)
    members += [
        Member("confluent", broker, topic, group, session_ms=20_000) for _ in range(2)
    ]
    with Admin(str(broker.data_dir)) as admin:
        wait_until(lambda: stable(admin, group, 2, assigned=True), 60, "the group")
        before = admin.describe_group(group)
        gateway = broker.gateway_pid()
        assert gateway is not None
        os.kill(gateway, signal.SIGKILL)
        wait_until(
            lambda: broker.gateway_pid() not in (None, gateway),
            30,
            "the supervisor to restart the gateway",
        )
        produce(broker, topic, range(first), partitions)

        def values() -> list[int]:
            return sorted(int(v) for m in members for _, _, v in m.records)

        wait_until(lambda: len(values()) >= first, 60, f"{first} records")
        after = admin.describe_group(group)
    assert values() == list(range(first))
    assert (after.generation, after.state) == (before.generation, "Stable")
    assert {m.member_id for m in after.members} == {m.member_id for m in before.members}
