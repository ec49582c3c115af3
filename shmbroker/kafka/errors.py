"""Kafka's error codes and the one two-way table between them and our exceptions.

`code_for(exc)` is what the gateway answers for an exception (the nearest class in
its MRO that the table names; UNKNOWN_SERVER_ERROR for anything else), and
`error_for(code, message)` is the exception a Kafka-protocol client raises for a
code (the first class listed for it). Classes left out of the table are in
`UNMAPPED`, each with the reason: a test checks that every class in
`shmbroker.errors` is in one or the other.
"""

from __future__ import annotations

from enum import IntEnum

from shmbroker import errors


class Code(IntEnum):
    """Kafka's error codes (the ones the gateway answers), under Kafka's names."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    KAFKA_STORAGE_ERROR = 56
    SASL_AUTHENTICATION_FAILED = 58
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    MEMBER_ID_REQUIRED = 79
    GROUP_SUBSCRIBED_TO_TOPIC = 86
    GROUP_ID_NOT_FOUND = 69
    INVALID_RECORD = 87


# (our class, Kafka's code). A code's first class is what error_for raises for it.
TABLE: tuple[tuple[type[errors.ShmbrokerError], Code], ...] = (
    (errors.ShmbrokerError, Code.UNKNOWN_SERVER_ERROR),
    (errors.UnknownTopic, Code.UNKNOWN_TOPIC_OR_PARTITION),
    (errors.NotFound, Code.UNKNOWN_TOPIC_OR_PARTITION),  # a ring or directory gone
    (errors.TopicExists, Code.TOPIC_ALREADY_EXISTS),
    (errors.OffsetOutOfRange, Code.OFFSET_OUT_OF_RANGE),
    (errors.CorruptError, Code.CORRUPT_MESSAGE),
    (errors.ConfigError, Code.INVALID_CONFIG),
    (errors.RecordTooLarge, Code.MESSAGE_TOO_LARGE),
    (errors.InvalidArgument, Code.INVALID_REQUEST),
    (errors.ProtocolError, Code.INVALID_REQUEST),
    (errors.RingFull, Code.REQUEST_TIMED_OUT),  # the spill did not make room in time
    (errors.WouldBlock, Code.REQUEST_TIMED_OUT),
    (errors.LockTimeout, Code.REQUEST_TIMED_OUT),
    (errors.NoSpace, Code.KAFKA_STORAGE_ERROR),
    # the supervisor is restarting: retriable, so clients try again
    (errors.BrokerUnavailable, Code.LEADER_NOT_AVAILABLE),
    # too many clients, or a long create under way: retriable too
    (errors.BrokerBusy, Code.LEADER_NOT_AVAILABLE),
    (errors.RebalanceInProgress, Code.REBALANCE_IN_PROGRESS),
    (errors.IllegalGeneration, Code.ILLEGAL_GENERATION),
    (errors.UnknownMemberId, Code.UNKNOWN_MEMBER_ID),
    (errors.InconsistentGroupProtocol, Code.INCONSISTENT_GROUP_PROTOCOL),
    (errors.GroupNotEmpty, Code.NON_EMPTY_GROUP),
    (errors.GroupIdNotFound, Code.GROUP_ID_NOT_FOUND),
    (errors.InvalidSessionTimeout, Code.INVALID_SESSION_TIMEOUT),
)

UNMAPPED: dict[type[errors.ShmbrokerError], str] = {
    errors.Lapped: "internal to readers: they go on from the segment files",
    errors.ClosedError: "our own object was closed: a gateway bug, so "
    "UNKNOWN_SERVER_ERROR through ShmbrokerError",
    errors.BrokenError: "a peer died; its subclass BrokerUnavailable is mapped, the "
    "rest are UNKNOWN_SERVER_ERROR through ShmbrokerError",
    errors.GroupError: "only its subclasses are answers; itself is never raised",
}

_CODES: dict[type[errors.ShmbrokerError], Code] = dict(TABLE)
_CLASSES: dict[Code, type[errors.ShmbrokerError]] = {}
for _cls, _code in TABLE:
    _CLASSES.setdefault(_code, _cls)


def code_for(exc: BaseException) -> Code:
    """The Kafka error code to answer for exc."""
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return Code.UNKNOWN_SERVER_ERROR


def error_for(code: int, message: str | None = None) -> errors.ShmbrokerError:
    """The exception for a Kafka error code (a client's side of the table)."""
    try:
        known = Code(code)
    except ValueError:
        return errors.ShmbrokerError(f"Kafka error {code}: {message or 'no message'}")
    cls = _CLASSES.get(known, errors.ShmbrokerError)
    return cls(f"{known.name}: {message}" if message else known.name)
