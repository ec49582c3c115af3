"""Committed offsets of consumer groups, kept durably by the group coordinator:
an append log of commits and tombstones, compacted now and then into a snapshot.

`<directory>/offsets.log` and `<directory>/offsets.snapshot` both hold frames:

    | bytes | field                                                              |
    |-------|--------------------------------------------------------------------|
    | 4     | body length, u32 big-endian                                        |
    | 4     | CRC32C of the body, u32 big-endian                                 |
    | n     | body, msgpack (msgspec), an array whose first element is its tag:  |
    |       |   0 commit        [0, generation, group, [entry, ...]]             |
    |       |   1 group delete  [1, generation, group]                           |
    |       |   2 topic delete  [2, generation, topic]   (from every group)      |
    |       |   3 snapshot      [3, format version, generation, [[group,         |
    |       |                    [entry, ...]], ...]]                            |
    |       |   4 offset delete [4, generation, group, [[topic, partition], ..]] |
    |       | entry = [topic, partition, offset, metadata, commit ts ms, epoch]  |

The log holds only tags 0-2 and 4 (older versions do not read 4); the snapshot is
one tag-3 frame, written atomically.
Invariant: the snapshot of generation S holds the effect of every log frame of
generation <= S, so recovery replays only frames above S, wherever they sit in the
log. Compaction writes the snapshot of the current generation G, then moves to
generation G + 1, then empties the log. A crash between those steps leaves frames of
generation G that replay skips; a failed snapshot write leaves them to be replayed.

Durability: each commit is one write() to the page cache, so a killed process loses
nothing; fsync runs at most every fsync_interval_ms (and on flush and close), so a
machine crash may lose the commits of the last interval, as Kafka's offsets with
acks=1 and no flush would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from shmbroker import _native
from shmbroker.errors import ClosedError, InvalidArgument, NoSpace
from shmbroker.log.checkpoint import write_atomically
from shmbroker.records import TopicPartition

log = logging.getLogger(__name__)

LOG_NAME = "offsets.log"
SNAPSHOT_NAME = "offsets.snapshot"
SNAPSHOT_VERSION = 1
FRAME_HEADER = struct.Struct(">II")  # body length, CRC32C of the body

# topic, partition, offset, metadata, commit_timestamp_ms, leader_epoch
Entry = tuple[str, int, int, str, int, int]


class OffsetAndMetadata(msgspec.Struct, frozen=True):
    """One partition's committed position (Kafka's OffsetAndMetadata)."""

    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = 0
    leader_epoch: int = -1


class Commit(msgspec.Struct, tag=0, array_like=True, frozen=True):
    generation: int
    group: str
    entries: list[Entry]


class GroupDelete(msgspec.Struct, tag=1, array_like=True, frozen=True):
    generation: int
    group: str


class TopicDelete(msgspec.Struct, tag=2, array_like=True, frozen=True):
    generation: int
    topic: str


class OffsetDelete(msgspec.Struct, tag=4, array_like=True, frozen=True):
    generation: int
    group: str
    partitions: list[tuple[str, int]]


class Snapshot(msgspec.Struct, tag=3, array_like=True, frozen=True):
    version: int
    generation: int
    groups: list[tuple[str, list[Entry]]]


LogRecord = Commit | GroupDelete | TopicDelete | OffsetDelete
Table = dict[str, dict[TopicPartition, OffsetAndMetadata]]
RawTable = dict[str, dict[tuple[str, int], Entry]]  # recovery's: objects made once
K = TypeVar("K", bound=tuple[str, int])
V = TypeVar("V")

_encoder = msgspec.msgpack.Encoder()
_log_decoder = msgspec.msgpack.Decoder(LogRecord)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode_frame(record: LogRecord | Snapshot) -> bytes:
    body = _encoder.encode(record)
    return FRAME_HEADER.pack(len(body), _native.crc32c(body)) + body


def _read_frame(data: bytes, pos: int) -> tuple[bytes | None, str]:
    """The body of the frame at pos, or None and why it is not a whole, valid one."""
    if len(data) - pos < FRAME_HEADER.size:
        return None, "a partial frame header"
    length, crc = FRAME_HEADER.unpack_from(data, pos)
    end = pos + FRAME_HEADER.size + length
    if end > len(data):
        return None, f"a frame of {length} bytes cut short"
    body = data[pos + FRAME_HEADER.size : end]
    if _native.crc32c(body) != crc:
        return None, "a CRC mismatch"
    return body, ""


def _check_entry(group: str, tp: tuple[str, int], om: OffsetAndMetadata) -> Entry:
    """The log entry of one partition; raises InvalidArgument for what would not
    decode at recovery (a wrong type there would cut the log from that frame on)."""
    topic, partition = tp
    offset = om.offset
    if type(offset) is not int or offset < 0:
        raise InvalidArgument(
            f"commit of group {group!r}: offset {offset!r} for {topic}-{partition} "
            f"must be an int >= 0"
        )
    if type(topic) is not str or type(partition) is not int or partition < 0:
        raise InvalidArgument(
            f"commit of group {group!r}: partition ({topic!r}, {partition!r}) must "
            f"be a topic name and an int >= 0"
        )
    metadata, ts, epoch = om.metadata, om.commit_timestamp_ms, om.leader_epoch
    if type(metadata) is not str or type(ts) is not int or type(epoch) is not int:
        raise InvalidArgument(
            f"commit of group {group!r} for {topic}-{partition}: metadata must be a "
            f"str, commit_timestamp_ms and leader_epoch ints; got {om!r}"
        )
    return (topic, partition, offset, metadata, ts, epoch)


def _entry_of(tp: TopicPartition, om: OffsetAndMetadata) -> Entry:
    return (
        tp[0],
        tp[1],
        om.offset,
        om.metadata,
        om.commit_timestamp_ms,
        om.leader_epoch,
    )


def _offset_of(entry: Entry) -> tuple[TopicPartition, OffsetAndMetadata]:
    topic, partition, offset, metadata, ts, epoch = entry
    return TopicPartition(topic, partition), OffsetAndMetadata(
        offset, metadata, ts, epoch
    )


def _drop_topic(table: dict[str, dict[K, V]], topic: str) -> None:
    """Remove topic's partitions from every group, and groups left with none."""
    for group in list(table):
        offsets = table[group]
        for tp in [tp for tp in offsets if tp[0] == topic]:
            del offsets[tp]
        if not offsets:
            del table[group]


def _drop_offsets(
    table: dict[str, Any],
    group: str,
    partitions: Iterable[tuple[str, int]],
) -> None:
    """Remove the group's partitions, and the group if it is left with none."""
    offsets = table.get(group)
    if offsets is None:
        return
    for tp in partitions:
        offsets.pop(tp, None)  # a TopicPartition equals its plain tuple
    if not offsets:
        del table[group]


class OffsetStore:
    """The committed offsets of every group, in memory and in `directory`.

    Thread safe: one lock guards the table and the log, so commit and fetch may run
    on many threads; fsync runs on a timer thread, outside that lock. One store per
    directory (the supervisor's data-directory lock ensures it)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync_interval_ms: int = 1000,
        snapshot_bytes: int = 64 << 20,
    ) -> None:
        if fsync_interval_ms < 0 or snapshot_bytes <= 0:
            raise InvalidArgument(
                f"offset store {directory}: fsync_interval_ms must be >= 0 and "
                f"snapshot_bytes > 0, got {fsync_interval_ms} and {snapshot_bytes}"
            )
        self.directory = Path(directory)
        self.log_path = self.directory / LOG_NAME
        self.snapshot_path = self.directory / SNAPSHOT_NAME
        self.fsync_interval_ms = fsync_interval_ms
        self.snapshot_bytes = snapshot_bytes
        self._lock = threading.Lock()  # the table, the log's size and generation
        self._sync_lock = threading.Lock()  # fsync against close of the fd
        self._table: Table = {}
        self._generation = 1  # of the frames written now; a snapshot covers <= its
        self._log_bytes = 0
        self._compact_at_bytes = snapshot_bytes  # raised after a failed compaction
        self._is_dirty = False  # written since the last fsync
        self._fd = -1
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        try:
            self._open()
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            raise
        if fsync_interval_ms > 0:
            self._flusher = threading.Thread(
                target=self._flush_periodically,
                name=f"offsets-fsync {self.directory}",
                daemon=True,
            )
            self._flusher.start()

    # ---- API ------------------------------------------------------------------------

    def commit(
        self, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Store offsets of group: one frame appended (all of them or, on an error,
        none), then the table. Returns once the frame is in the page cache; the
        commit that takes the log past snapshot_bytes also compacts it."""
        if type(group) is not str:
            raise InvalidArgument(f"commit: group must be a str, got {group!r}")
        entries = [_check_entry(group, tp, om) for tp, om in offsets.items()]
        if not entries:
            return
        with self._lock:
            self._append(encode_frame(Commit(self._generation, group, entries)))
            table = self._table.get(group)
            if table is None:
                table = self._table[group] = {}
            for tp, om in offsets.items():
                table[tp if type(tp) is TopicPartition else TopicPartition(*tp)] = om
            if self._log_bytes > self._compact_at_bytes:
                self._compact()

    def fetch(
        self, group: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (a copy): all of them, or those of
        `partitions` that have one (the others are left out)."""
        with self._lock:
            self._check_open()
            table = self._table.get(group)
            if table is None:
                return {}
            if partitions is None:
                return dict(table)
            return {TopicPartition(*tp): table[tp] for tp in partitions if tp in table}

    def groups(self) -> list[str]:
        """Groups that have at least one committed offset, sorted."""
        with self._lock:
            self._check_open()
            return sorted(self._table)

    def delete_group(self, group: str) -> None:
        """Forget all of group's offsets (a tombstone frame); no-op if it has none."""
        with self._lock:
            self._check_open()
            if group in self._table:
                self._append(encode_frame(GroupDelete(self._generation, group)))
                del self._table[group]

    def delete_offsets(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        """Forget group's offsets of partitions (one tombstone frame; Kafka's
        OffsetDelete); those it has none for are ignored."""
        with self._lock:
            self._check_open()
            table = self._table.get(group, {})
            doomed = [(tp[0], tp[1]) for tp in partitions if tp in table]
            if not doomed:
                return
            self._append(encode_frame(OffsetDelete(self._generation, group, doomed)))
            _drop_offsets(self._table, group, doomed)

    def delete_partitions(self, topic: str) -> None:
        """Forget topic's offsets in every group (one tombstone frame), as when the
        topic is deleted; later commits for a topic of that name count again."""
        with self._lock:
            self._check_open()
            if any(tp.topic == topic for t in self._table.values() for tp in t):
                self._append(encode_frame(TopicDelete(self._generation, topic)))
                _drop_topic(self._table, topic)

    def compact(self) -> None:
        """Snapshot the table and empty the log now (commit does it by itself once
        the log exceeds snapshot_bytes). Blocks commits while it writes."""
        with self._lock:
            self._check_open()
            self._compact()

    def flush(self) -> None:
        """fsync the log now."""
        with self._sync_lock:
            with self._lock:
                self._check_open()
                fd, self._is_dirty = self._fd, False
            try:
                os.fsync(fd)
            except OSError:
                with self._lock:
                    self._is_dirty = True
                raise

    def close(self) -> None:
        """Stop the fsync timer, fsync and close the log; idempotent."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._sync_lock, self._lock:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> OffsetStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- writing (under self._lock) -------------------------------------------------

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ClosedError(f"offset store {self.directory} is closed")

    def _append(self, frame: bytes) -> None:
        """Write one frame at the end of the log; on an error cut the log back to
        where it was, so a failed commit leaves neither bytes nor table changes."""
        self._check_open()
        start = self._log_bytes
        try:
            written = os.write(self._fd, frame)
            while written < len(frame):  # a short write: the disk filled up mid-way
                written += os.write(self._fd, frame[written:])
            if self.fsync_interval_ms == 0:  # durable before the commit returns
                os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            if exc.errno == errno.ENOSPC:
                raise NoSpace(
                    errno.ENOSPC,
                    f"committing offsets to {self.log_path}: no space left on the "
                    f"device for a {len(frame)}-byte frame; nothing was committed. "
                    f"Free space in {self.directory}, then retry",
                ) from exc
            raise
        self._log_bytes = start + len(frame)
        self._is_dirty = self.fsync_interval_ms > 0

    def _compact(self) -> None:
        try:
            self._write_snapshot()
        except OSError as exc:
            # a later attempt, after another snapshot_bytes of log: the log still
            # holds everything, so nothing is lost but disk space
            self._compact_at_bytes = self._log_bytes + self.snapshot_bytes
            with contextlib.suppress(OSError):
                self.snapshot_path.with_name(SNAPSHOT_NAME + ".tmp").unlink()
            log.warning(
                "compaction of %s failed writing %s (%s); the log keeps growing, "
                "next attempt at %d bytes",
                self.log_path,
                self.snapshot_path,
                exc,
                self._compact_at_bytes,
            )
            return
        try:
            self._restart_log()
        except OSError as exc:
            # the snapshot holds the log's frames, and replay skips them: nothing
            # is lost, the log just keeps its bytes until the next attempt
            self._compact_at_bytes = self._log_bytes + self.snapshot_bytes
            log.warning("compaction could not empty %s: %s", self.log_path, exc)

    def _write_snapshot(self) -> None:
        """Step 1 of compaction: the table as the snapshot of the current generation,
        then on to the next generation. Frames after this belong to the next one even
        if the snapshot write failed half-way (it may have been renamed into place:
        then the frames of its generation are covered, and the ones after are not)."""
        groups = [
            (group, [_entry_of(tp, om) for tp, om in table.items()])
            for group, table in self._table.items()
        ]
        covered = self._generation
        self._generation += 1
        write_atomically(
            self.snapshot_path,
            encode_frame(Snapshot(SNAPSHOT_VERSION, covered, groups)),
        )

    def _restart_log(self) -> None:
        """Step 2 of compaction: empty the log, whose frames the snapshot now holds.
        The fsync makes the cut durable before frames of the new generation follow."""
        os.ftruncate(self._fd, 0)
        self._log_bytes = 0
        self._compact_at_bytes = self.snapshot_bytes
        os.fsync(self._fd)
        self._is_dirty = False
        log.info(
            "compacted %s into %s (now generation %d, %d groups)",
            self.log_path,
            self.snapshot_path,
            self._generation,
            len(self._table),
        )

    # ---- fsync ----------------------------------------------------------------------

    def _flush_periodically(self) -> None:
        interval = self.fsync_interval_ms / 1000
        while not self._stop.wait(interval):
            with self._sync_lock:
                with self._lock:
                    if self._fd < 0 or not self._is_dirty:
                        continue
                    fd, self._is_dirty = self._fd, False
                try:
                    os.fsync(fd)
                except OSError as exc:
                    with self._lock:
                        self._is_dirty = True
                    log.error("fsync of %s failed: %s", self.log_path, exc)

    # ---- recovery -------------------------------------------------------------------

    def _open(self) -> None:
        """Create or recover the store: the snapshot, then the log's frames above its
        generation; a torn or corrupt log tail is cut off."""
        started = time.monotonic()
        if not self.directory.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in (SNAPSHOT_NAME + ".tmp",):  # a snapshot write that died
            with contextlib.suppress(FileNotFoundError):
                (self.directory / leftover).unlink()
        raw: RawTable = {}
        covered = self._load_snapshot(raw)
        is_new = not self.log_path.exists()
        self._fd = os.open(
            self.log_path,
            os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        if is_new:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)  # so the log's name survives a machine crash
            finally:
                os.close(dfd)
        replayed, skipped = self._replay(covered, raw)
        self._table = {
            group: dict(map(_offset_of, entries.values()))
            for group, entries in raw.items()
            if entries
        }
        log.info(
            "opened %s: %d groups, snapshot generation %d, %d frames replayed, "
            "%d already in the snapshot, in %.1f ms",
            self.directory,
            len(self._table),
            covered,
            replayed,
            skipped,
            (time.monotonic() - started) * 1000,
        )
        if skipped or self._log_bytes > self.snapshot_bytes:
            self._compact()  # a crash left covered frames: drop them now

    def _load_snapshot(self, raw: RawTable) -> int:
        """Load the snapshot into raw; returns the generation it covers (0 when there
        is none or it is unusable, so that all of the log is replayed)."""
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return 0
        body, why = _read_frame(data, 0)
        snapshot: Snapshot | None = None
        if body is not None and len(data) != FRAME_HEADER.size + len(body):
            why = f"{len(data) - FRAME_HEADER.size - len(body)} bytes after the frame"
        elif body is not None:
            try:
                snapshot = _snapshot_decoder.decode(body)
            except msgspec.DecodeError as exc:
                why = f"an undecodable body ({exc})"
            else:
                if snapshot.version != SNAPSHOT_VERSION:
                    why = f"format version {snapshot.version}, not {SNAPSHOT_VERSION}"
                    snapshot = None
        if snapshot is None:
            log.error(
                "snapshot %s is unusable (%s, %d bytes): replaying %s alone; offsets "
                "that only the snapshot held are lost, and those groups restart from "
                "auto.offset.reset",
                self.snapshot_path,
                why,
                len(data),
                self.log_path,
            )
            return 0
        for group, entries in snapshot.groups:
            raw[group] = {(e[0], e[1]): e for e in entries}
        self._generation = snapshot.generation + 1
        return snapshot.generation

    def _replay(self, covered: int, raw: RawTable) -> tuple[int, int]:
        """Apply the log's frames of generations above `covered` to raw; cut the log
        at the first frame that is torn, fails its CRC or does not decode. Returns
        the counts of frames applied and skipped. One inlined loop over raw tuples:
        a 64 MiB log holds about two million frames."""
        chunks, size = [], 0
        while chunk := os.pread(self._fd, 1 << 24, size):  # pread stops at 2 GiB
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        unpack, crc32c, decode = (
            FRAME_HEADER.unpack_from,
            _native.crc32c,
            (_log_decoder.decode),
        )
        pos, replayed, skipped, why = 0, 0, 0, ""
        newest = self._generation
        while pos < size:
            if size - pos < FRAME_HEADER.size:
                why = "a partial frame header"
                break
            length, crc = unpack(data, pos)
            start = pos + FRAME_HEADER.size
            if start + length > size:
                why = f"a frame of {length} bytes cut short"
                break
            body = data[start : start + length]
            if crc32c(body) != crc:
                why = "a CRC mismatch"
                break
            try:
                record = decode(body)
            except msgspec.DecodeError as exc:
                why = f"an undecodable frame ({exc})"
                break
            pos = start + length
            if record.generation <= covered:
                skipped += 1
                continue
            if record.generation > newest:
                newest = record.generation
            replayed += 1
            if type(record) is Commit:
                table = raw.get(record.group)
                if table is None:
                    table = raw[record.group] = {}
                for entry in record.entries:
                    table[entry[0], entry[1]] = entry
            elif type(record) is GroupDelete:
                raw.pop(record.group, None)
            elif type(record) is TopicDelete:
                _drop_topic(raw, record.topic)
            elif type(record) is OffsetDelete:
                _drop_offsets(raw, record.group, record.partitions)
        if pos < size:
            log.warning(
                "recovery of %s: %s at position %d, dropping %d bytes",
                self.log_path,
                why,
                pos,
                size - pos,
            )
            os.ftruncate(self._fd, pos)
        self._generation = newest
        self._log_bytes = pos
        return replayed, skipped
