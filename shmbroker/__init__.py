"""shmbroker: Kafka's model (topics, partitions, dense offsets) on one host, at
shared-memory speed."""

from shmbroker.client.admin import Admin, NewTopic
from shmbroker.client.consumer import Consumer
from shmbroker.client.producer import Producer, RecordFuture
from shmbroker.embedded import EmbeddedBroker
from shmbroker.errors import (
    BrokenError,
    BrokerBusy,
    BrokerUnavailable,
    ClosedError,
    ConfigError,
    CorruptError,
    GroupError,
    GroupIdNotFound,
    GroupNotEmpty,
    IllegalGeneration,
    InconsistentGroupProtocol,
    InvalidArgument,
    Lapped,
    LockTimeout,
    NoSpace,
    NotFound,
    OffsetOutOfRange,
    ProtocolError,
    RebalanceInProgress,
    RecordTooLarge,
    RingFull,
    ShmbrokerError,
    TopicExists,
    UnknownMemberId,
    UnknownTopic,
    WouldBlock,
)
from shmbroker.records import Record, RecordMetadata, TopicPartition
from shmbroker.ring import Ring, RingReader, RingStat

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "BrokenError",
    "BrokerBusy",
    "BrokerUnavailable",
    "ClosedError",
    "ConfigError",
    "Consumer",
    "CorruptError",
    "EmbeddedBroker",
    "GroupError",
    "GroupIdNotFound",
    "GroupNotEmpty",
    "IllegalGeneration",
    "InconsistentGroupProtocol",
    "InvalidArgument",
    "Lapped",
    "LockTimeout",
    "NewTopic",
    "NoSpace",
    "NotFound",
    "OffsetOutOfRange",
    "Producer",
    "ProtocolError",
    "RebalanceInProgress",
    "Record",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLarge",
    "Ring",
    "RingFull",
    "RingReader",
    "RingStat",
    "ShmbrokerError",
    "TopicExists",
    "TopicPartition",
    "UnknownMemberId",
    "UnknownTopic",
    "WouldBlock",
    "__version__",
]
