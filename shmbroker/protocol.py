"""What the supervisor and its clients agree on: the control-socket messages, and the
files a client reads when the supervisor is not there (the topic registry).

Control socket framing: a 4-byte big-endian length, then one msgpack-encoded message
(a tagged msgspec Struct). A connection opens with Hello, which carries the protocol
version; every request gets exactly one reply, in order. Data never goes through the
socket: clients map the rings and read the segment files themselves.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from pathlib import Path

import msgspec

from shmbroker import errors

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 << 20
_LENGTH = struct.Struct(">I")


# ---- requests ----------------------------------------------------------------------


class Hello(msgspec.Struct, tag=True, frozen=True):
    version: int
    client_id: str
    pid: int


class Metadata(msgspec.Struct, tag=True, frozen=True):
    topics: list[str] | None = None  # None: every topic
    auto_create: bool = False  # create unknown topics if the broker allows it


class CreateTopic(msgspec.Struct, tag=True, frozen=True):
    name: str
    partitions: int = 1
    configs: dict[str, str] = {}
    validate_only: bool = False


class DeleteTopic(msgspec.Struct, tag=True, frozen=True):
    name: str


class AlterConfigs(msgspec.Struct, tag=True, frozen=True):
    name: str
    set: dict[str, str] = {}
    delete: list[str] = []  # back to the broker's default


class CreatePartitions(msgspec.Struct, tag=True, frozen=True):
    name: str
    total: int  # the new partition count (Kafka's CreatePartitions)


class DescribeTopics(msgspec.Struct, tag=True, frozen=True):
    names: list[str] | None = None


class JoinGroup(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    member_id: str  # "" on the first join
    protocol_type: str  # "consumer"
    protocols: list[tuple[str, bytes]]  # (assignor name, subscription), by preference
    session_timeout_ms: int
    rebalance_timeout_ms: int  # the consumer's max.poll.interval.ms
    group_instance_id: str | None = None  # static membership
    client_id: str = ""
    client_host: str = ""  # a Kafka client's address ("" : the process's pid)
    # a Kafka client's (through the gateway): it lives by session.timeout.ms and
    # heartbeats, not by this control connection, which is the gateway's
    remote: bool = False
    # JoinGroup v4+ (KIP-394): a first join gets a member id to rejoin with
    require_member_id: bool = False


class SyncGroup(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    generation: int
    member_id: str
    assignments: dict[str, bytes] | None = None  # from the leader: member -> bytes


class Heartbeat(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    generation: int
    member_id: str
    wait_ms: int = 0  # > 0: return early only when the member must rejoin


class LeaveGroup(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    member_id: str


class CommittedOffset(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = 0


class OffsetCommit(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    generation: int  # -1 with member_id "" for a group without members
    member_id: str
    offsets: list[CommittedOffset]


class OffsetFetch(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    partitions: list[tuple[str, int]] | None = None  # None: all the group has


class ListGroups(msgspec.Struct, tag=True, frozen=True):
    pass


class DescribeGroup(msgspec.Struct, tag=True, frozen=True):
    group_id: str


class DeleteGroup(msgspec.Struct, tag=True, frozen=True):
    group_id: str


class DeleteGroupOffsets(msgspec.Struct, tag=True, frozen=True):
    """Kafka's OffsetDelete: refused for the topics a live member subscribes to."""

    group_id: str
    partitions: list[tuple[str, int]]


class AlterGroupOffsets(msgspec.Struct, tag=True, frozen=True):
    """Set a group's offsets: refused while it has live members, as in Kafka."""

    group_id: str
    offsets: list[CommittedOffset]


Request = (
    Hello
    | Metadata
    | CreateTopic
    | DeleteTopic
    | AlterConfigs
    | CreatePartitions
    | DescribeTopics
    | JoinGroup
    | SyncGroup
    | Heartbeat
    | LeaveGroup
    | OffsetCommit
    | OffsetFetch
    | ListGroups
    | DescribeGroup
    | DeleteGroup
    | DeleteGroupOffsets
    | AlterGroupOffsets
)


# ---- replies -----------------------------------------------------------------------


class HelloReply(msgspec.Struct, tag=True, frozen=True):
    version: int
    broker_id: str
    shm_base: str  # every ring name starts with it
    data_dir: str
    pid: int


class TopicMetadata(msgspec.Struct, tag=True, frozen=True):
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str]  # every config, effective values, Kafka's names


class MetadataReply(msgspec.Struct, tag=True, frozen=True):
    topics: list[TopicMetadata]


class PartitionDescription(msgspec.Struct, tag=True, frozen=True):
    partition: int
    log_start_offset: int
    high_watermark: int  # one past the last record appended
    log_end_offset: int  # one past the last record spilled to segments
    recovery_point: int  # one past the last record fsynced
    ring_capacity_bytes: int
    ring_unspilled_bytes: int
    disk_bytes: int
    segments: int
    spill_error: str | None = None


class TopicDescription(msgspec.Struct, tag=True, frozen=True):
    name: str
    topic_id: str
    partitions: list[PartitionDescription]
    configs: dict[str, str]  # only those that differ from the defaults


class DescribeReply(msgspec.Struct, tag=True, frozen=True):
    topics: list[TopicDescription]


class MemberMetadata(msgspec.Struct, frozen=True):
    member_id: str
    group_instance_id: str | None
    metadata: bytes  # the member's subscription for the chosen protocol


class JoinResult(msgspec.Struct, tag=True, frozen=True):
    generation: int
    protocol_name: str
    leader: str
    member_id: str
    members: list[MemberMetadata]  # for the leader only: everyone's subscription
    # JoinGroup v4+: no join yet; rejoin with member_id (Kafka's MEMBER_ID_REQUIRED)
    member_id_required: bool = False


class SyncResult(msgspec.Struct, tag=True, frozen=True):
    assignment: bytes


class OffsetFetchReply(msgspec.Struct, tag=True, frozen=True):
    offsets: list[CommittedOffset]


class DeleteGroupOffsetsReply(msgspec.Struct, tag=True, frozen=True):
    subscribed: list[tuple[str, int]]  # kept: a live member subscribes to the topic


class GroupListing(msgspec.Struct, frozen=True):
    group_id: str
    state: str
    protocol_type: str


class ListGroupsReply(msgspec.Struct, tag=True, frozen=True):
    groups: list[GroupListing]


class MemberDescription(msgspec.Struct, frozen=True):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


class GroupDescription(msgspec.Struct, tag=True, frozen=True):
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    generation: int
    leader: str
    members: list[MemberDescription]


class Done(msgspec.Struct, tag=True, frozen=True):
    pass


class ErrorReply(msgspec.Struct, tag=True, frozen=True):
    kind: str  # the name of a class in shmbroker.errors
    message: str


Reply = (
    HelloReply
    | MetadataReply
    | DescribeReply
    | TopicMetadata
    | JoinResult
    | SyncResult
    | OffsetFetchReply
    | DeleteGroupOffsetsReply
    | ListGroupsReply
    | GroupDescription
    | Done
    | ErrorReply
)

_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)


def error_reply(exc: errors.ShmbrokerError) -> ErrorReply:
    return ErrorReply(type(exc).__name__, str(exc))


def raise_error(reply: ErrorReply) -> None:
    """Raise the exception an ErrorReply stands for, as the supervisor raised it."""
    cls = getattr(errors, reply.kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ShmbrokerError)):
        cls = errors.ShmbrokerError
    raise cls(reply.message)


SPIN = 200e-6  # seconds a receive retries before sleeping in poll(): a request
# and its reply usually come within it, and a sleeping thread on another CPU costs a
# wake-up (an IPI on a VM) each way: ~90 us round trips instead of ~20 (Aeron spins
# before it parks for the same reason)


def send(
    sock: socket.socket, message: Request | Reply, timeout: float | None = None
) -> None:
    """Send one frame on a non-blocking socket (waits in poll while it is full)."""
    body = _encoder.encode(message)
    view = memoryview(_LENGTH.pack(len(body)) + body)
    deadline = None if timeout is None else time.monotonic() + timeout
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            _wait(sock, select.POLLOUT, deadline)


def receive(
    sock: socket.socket,
    timeout: float | None = None,
    spin: float = SPIN,
    frame_timeout: float | None = None,
) -> bytes | None:
    """One frame's body, or None if the peer closed the connection. On a
    non-blocking socket, spins for `spin` seconds, then waits in poll (TimeoutError
    after timeout; once a frame's first byte came, after frame_timeout too: a peer
    that stops inside a frame holds nothing for long); a blocking socket just
    blocks."""
    now = time.monotonic()
    deadline = None if timeout is None else now + timeout
    head = _receive_exactly(sock, _LENGTH.size, deadline, now + spin, frame_timeout)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise errors.ProtocolError(f"control frame of {length} bytes: too large")
    if frame_timeout is not None:
        frame_end = time.monotonic() + frame_timeout
        deadline = frame_end if deadline is None else min(deadline, frame_end)
    body = _receive_exactly(sock, length, deadline, now + spin)
    if body is None:
        raise errors.ProtocolError("control connection closed inside a frame")
    return body


def _receive_exactly(
    sock: socket.socket,
    n: int,
    deadline: float | None,
    spin_end: float,
    frame_timeout: float | None = None,
) -> bytes | None:
    chunks, have = [], 0
    while have < n:
        try:
            chunk = sock.recv(n - have)
        except BlockingIOError:
            if time.monotonic() >= spin_end:
                _wait(sock, select.POLLIN, deadline)
            else:  # the peer may be waiting for this CPU: let it run first
                os.sched_yield()
            continue
        if not chunk:
            if have:
                raise errors.ProtocolError("control connection closed inside a frame")
            return None
        if not have and frame_timeout is not None:  # the frame has begun
            frame_end = time.monotonic() + frame_timeout
            deadline = frame_end if deadline is None else min(deadline, frame_end)
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def _wait(sock: socket.socket, events: int, deadline: float | None) -> None:
    poller = select.poll()
    poller.register(sock, events)
    left = None if deadline is None else deadline - time.monotonic()
    if (left is not None and left <= 0) or not poller.poll(
        None if left is None else left * 1000
    ):
        raise TimeoutError("no answer on the control socket in time")


# ---- the topic registry file -------------------------------------------------------

REGISTRY_FILE = "topics.json"
REGISTRY_VERSION = 1


class TopicEntry(msgspec.Struct, frozen=True):
    topic_id: str  # 32 hex digits, new for every creation (Kafka's topic id)
    partitions: int
    configs: dict[str, str] = {}  # Kafka-named overrides of the broker's defaults


class RegistryFile(msgspec.Struct):
    version: int = REGISTRY_VERSION
    shm_prefix: str = "shmb."  # the broker's: clients derive ring names from it
    topic_defaults: dict[str, str] = {}  # the broker's topic config defaults
    topics: dict[str, TopicEntry] = {}


def load_registry(data_dir: str | os.PathLike[str]) -> RegistryFile:
    """The registry of a data directory (empty if it has none yet)."""
    path = Path(data_dir) / REGISTRY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RegistryFile()
    except PermissionError as exc:  # another user's broker
        raise PermissionError(
            exc.errno,
            f"no access to the broker of {data_dir} for uid {os.getuid()}: "
            f"{exc.strerror} reading {path}; its owner may open it to a group of "
            f"this user with `shmbroker serve --group NAME` (access.group)",
        ) from exc
    try:
        registry = msgspec.json.decode(raw, type=RegistryFile)
    except msgspec.DecodeError as exc:
        raise errors.CorruptError(f"topic registry {path}: {exc}") from exc
    if registry.version != REGISTRY_VERSION:
        raise errors.ConfigError(
            f"topic registry {path} has version {registry.version}; this shmbroker "
            f"reads version {REGISTRY_VERSION}"
        )
    return registry


# ---- where the supervisor serves /metrics (broker/metrics.py writes it) ------------

METRICS_FILE = "metrics.json"


class MetricsState(msgspec.Struct, frozen=True):
    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def load_metrics_state(data_dir: str | os.PathLike[str]) -> MetricsState | None:
    """Where the supervisor of data_dir serves metrics; None if it serves none (or
    is not running: the file goes when it stops)."""
    try:
        return msgspec.json.decode(
            (Path(data_dir) / METRICS_FILE).read_bytes(), type=MetricsState
        )
    except (OSError, msgspec.DecodeError):
        return None
