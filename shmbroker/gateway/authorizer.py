"""Authorization of a connection's requests: the allow lists of the users file
(users.py) for its principal. A user without an allow list may do everything;
so may every connection of a listener without SASL whose principal has no entry
(ANONYMOUS, or a client certificate's CN not in the file). A SASL principal no longer
in the file may do nothing. What each API needs (Kafka's operations, reduced to
read / write / create / delete): Produce write; Fetch and ListOffsets read;
CreateTopics, CreatePartitions, AlterConfigs and a Metadata that auto-creates create;
DeleteTopics delete; Metadata and DescribeConfigs show a topic on any of them; a
consumer group's requests need the group (`group_code`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shmbroker.errors import ConfigError
from shmbroker.kafka.errors import Code
from shmbroker.users import OPERATIONS, User

if TYPE_CHECKING:
    from shmbroker.gateway.session import Session

log = logging.getLogger(__name__)

DESCRIBE = "describe"  # any of OPERATIONS


def _user(session: Session) -> User | bool:
    """The principal's user; True: everything allowed; False: nothing."""
    auth = session.auth
    if not auth.required and auth.principal == "ANONYMOUS":
        return True
    try:
        user = session.gateway.users.get(auth.principal)
    except ConfigError as exc:  # a broken users file allows nothing, loudly
        log.error("gateway: cannot check %s's rights: %s", auth.principal, exc)
        return False
    if user is None:
        return not auth.required
    return user


def topic_allowed(session: Session, topic: str, operation: str) -> bool:
    """Whether the connection may do operation (of OPERATIONS, or DESCRIBE) on
    topic."""
    user = _user(session)
    if isinstance(user, bool):
        return user
    if operation == DESCRIBE:
        return any(user.allows_topic(topic, op) for op in OPERATIONS)
    return user.allows_topic(topic, operation)


def denied_topics(session: Session, names: Iterable[str], operation: str) -> set[str]:
    """The names of topics the connection may not do operation on."""
    return {n for n in names if not topic_allowed(session, n, operation)}


def topic_code(session: Session, topic: str, operation: str) -> Code:
    """NONE, or TOPIC_AUTHORIZATION_FAILED."""
    if topic_allowed(session, topic, operation):
        return Code.NONE
    return Code.TOPIC_AUTHORIZATION_FAILED


def group_code(session: Session, group: str) -> Code:
    """NONE, or GROUP_AUTHORIZATION_FAILED: what every request naming a consumer
    group (FindCoordinator of a group, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
    OffsetCommit, OffsetFetch, DescribeGroups, DeleteGroups) checks first."""
    user = _user(session)
    allowed = user if isinstance(user, bool) else user.allows_group(group)
    return Code.NONE if allowed else Code.GROUP_AUTHORIZATION_FAILED
