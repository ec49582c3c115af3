"""shmbroker: Kafka's model (topics, partitions, dense offsets) on one host, at
shared-memory speed."""

from shmbroker.errors import (
    BrokenError,
    BrokerUnavailable,
    ClosedError,
    ConfigError,
    CorruptError,
    InvalidArgument,
    Lapped,
    LockTimeout,
    NoSpace,
    NotFound,
    OffsetOutOfRange,
    ProtocolError,
    RingFull,
    ShmbrokerError,
    TopicExists,
    UnknownTopic,
    WouldBlock,
)
from shmbroker.records import Record
from shmbroker.ring import Ring, RingReader, RingStat

__version__ = "0.1.0"

__all__ = [
    "BrokenError",
    "BrokerUnavailable",
    "ClosedError",
    "ConfigError",
    "CorruptError",
    "InvalidArgument",
    "Lapped",
    "LockTimeout",
    "NoSpace",
    "NotFound",
    "OffsetOutOfRange",
    "ProtocolError",
    "Record",
    "Ring",
    "RingFull",
    "RingReader",
    "RingStat",
    "ShmbrokerError",
    "TopicExists",
    "UnknownTopic",
    "WouldBlock",
    "__version__",
]
