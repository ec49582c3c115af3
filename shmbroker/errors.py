"""The one exception hierarchy of shmbroker.

Where a builtin fits, an error inherits from it too, so `except ValueError` or
`except TimeoutError` keeps working. Messages name the action, the object, the numbers,
and the next step when there is one.
"""


class ShmbrokerError(Exception):
    """Base of every error shmbroker raises on purpose."""


class ConfigError(ShmbrokerError, ValueError):
    """A configuration key or value is wrong; names the key and where it came from."""


class InvalidArgument(ShmbrokerError, ValueError):
    """The caller passed something unusable: a size, a type, a name."""


class RecordTooLarge(InvalidArgument):
    """A record whose batch alone, or a batch, is larger than the topic's
    max.message.bytes (Kafka's RecordTooLargeException, error MESSAGE_TOO_LARGE)."""


class NotFound(ShmbrokerError, FileNotFoundError):
    """A ring, topic or file that should exist does not."""


class UnknownTopic(NotFound):
    """A topic or partition that does not exist, or was deleted while in use
    (Kafka's UNKNOWN_TOPIC_OR_PARTITION)."""


class TopicExists(ShmbrokerError):
    """Creating a topic that exists (Kafka's TOPIC_ALREADY_EXISTS)."""


class NoSpace(ShmbrokerError, OSError):
    """Shared memory or disk has too little free space for the request."""


class WouldBlock(ShmbrokerError):
    """A ring was full (append) or empty (read) and the caller asked not to wait."""


class RingFull(WouldBlock, TimeoutError):
    """An append found no room above the spill position before its timeout."""


class Lapped(ShmbrokerError):
    """The writer overwrote a reader's position in the ring: read it from segments."""


class ClosedError(ShmbrokerError):
    """The object was closed by its owner."""


class BrokenError(ShmbrokerError):
    """The peer (process, supervisor, ring) died or went away."""


class BrokerUnavailable(BrokenError, ConnectionError):
    """The supervisor's control socket does not answer: no broker runs on that data
    directory, or it is restarting."""


class BrokerBusy(BrokerUnavailable):
    """The supervisor is up but did not take the request: too many connections, or
    still busy with a long one; names which, and what to try."""


class LockTimeout(ShmbrokerError, TimeoutError):
    """A lock was not acquired in time; names the lock, its holder and the wait."""


class CorruptError(ShmbrokerError):
    """Bad magic, layout version, length or checksum; names the object and position."""


class OffsetOutOfRange(ShmbrokerError, IndexError):
    """An offset outside [log start, high watermark); names both ends."""


class ProtocolError(ShmbrokerError):
    """A malformed Kafka request."""


# ---- consumer groups: Kafka's error codes, one class each, so that the gateway maps
# them back one to one and a client can catch exactly the one it handles --------------


class GroupError(ShmbrokerError):
    """A consumer-group request the coordinator refused."""


class RebalanceInProgress(GroupError):
    """The group is rebalancing: rejoin (Kafka's REBALANCE_IN_PROGRESS)."""


class IllegalGeneration(GroupError):
    """The member's generation is not the group's (Kafka's ILLEGAL_GENERATION): a
    commit from an old generation is refused, so no partition has two owners."""


class UnknownMemberId(GroupError):
    """The group does not know this member (Kafka's UNKNOWN_MEMBER_ID): it was
    removed (session timeout, max.poll.interval.ms, its connection closed)."""


class InconsistentGroupProtocol(GroupError):
    """The member's protocol type or assignors match none of the group's."""


class GroupNotEmpty(GroupError):
    """The group has live members (Kafka's NON_EMPTY_GROUP): stop them first."""


class GroupIdNotFound(GroupError):
    """No such group (Kafka's GROUP_ID_NOT_FOUND)."""


class InvalidSessionTimeout(GroupError, InvalidArgument):
    """A join's session.timeout.ms outside the broker's group.min.session.timeout.ms
    and group.max.session.timeout.ms (Kafka's INVALID_SESSION_TIMEOUT)."""
