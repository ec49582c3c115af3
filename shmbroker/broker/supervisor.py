"""The supervisor (`shmbroker serve`): one per data directory. It owns the topic
registry, creates and deletes rings and partition directories, runs every partition's
spill and retention, and answers the control socket. The data plane does not need it:
producers and consumers keep their rings mapped while it restarts.

Order of changes, so that a crash at any point leaves nothing another process would
misread: a topic enters the registry before its rings exist, and leaves it before its
rings are marked deleted and unlinked (`shmbroker gc` removes rings no registry owns).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from shmbroker import errors, protocol, shm
from shmbroker.broker import gc, handlers, registry, systemd
from shmbroker.broker.control import ControlConnection, ControlServer
from shmbroker.broker.coordinator import GroupCoordinator
from shmbroker.broker.metrics import MetricsServer
from shmbroker.broker.offsets import OffsetStore
from shmbroker.broker.progress import StartProgress
from shmbroker.config import BrokerConfig, Listener, TopicConfig, validate_topic_name
from shmbroker.log.partition import PartitionLog
from shmbroker.records import TopicPartition

log = logging.getLogger(__name__)

LOCK_FILE = "supervisor.lock"
OFFSETS_DIR = "__consumer_offsets"  # Kafka's name; no topic directory looks like it
MAX_PARTITIONS = 10_000


class Supervisor:
    """`start()` then `serve_forever()` (until SIGTERM/SIGINT or `request_stop()`),
    or use it as a context manager in tests. run_gateway: start the Kafka protocol
    gateway too (`shmbroker serve` does), if config.listeners names an address."""

    def __init__(self, config: BrokerConfig, *, run_gateway: bool = False) -> None:
        self.config = config
        self.gateways: GatewayProcesses | None = None
        if run_gateway and config.listener is not None:
            self.gateways = GatewayProcesses(config)
        self.data_dir = Path(config.data_dir)
        self.broker_id = ""
        self.shm_base = ""
        self.topics: dict[str, registry.TopicEntry] = {}
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self._lock = threading.RLock()  # admin changes, one at a time
        # topics whose partitions are being opened, outside the lock (a topic of
        # thousands takes seconds): not shown until done; stop() waits for them
        self._creating: dict[str, int] = {}  # name -> partitions opened so far
        self._created = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._server: ControlServer | None = None
        self._gid: int | None = None  # access.group's: it may use the broker too
        self.coordinator: GroupCoordinator | None = None
        self.metrics: MetricsServer | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._gid = self.config.access_gid()
            if self._gid is not None:
                _share(self.data_dir, self._gid, 0o750)
            self.broker_id = shm.broker_id(self.data_dir)
            self.shm_base = shm.broker_base(self.config.shm_prefix, self.broker_id)
            registry.write_broker_info(
                shm.broker_info_name(self.shm_base),
                registry.BrokerInfo(
                    str(self.data_dir.resolve()), os.getpid(), int(time.time() * 1000)
                ),
            )
            _share(shm.path_of(shm.broker_info_name(self.shm_base)), self._gid)
            self.topics = registry.load(self.data_dir)
            self._save_registry()  # records this broker's shm prefix for clients
            for doomed in self.data_dir.glob("*-delete"):
                log.warning("finishing the deletion of %s", doomed)
                shutil.rmtree(doomed)  # a delete the last supervisor did not finish
            for removal in gc.orphans(self.shm_base, self.topics):
                log.warning("removing ring %s: %s", removal.name, removal.reason)
                shm.unlink(removal.name)
            progress = StartProgress(
                "recovery", sum(e.partitions for e in self.topics.values())
            )
            for name, entry in self.topics.items():
                for p in range(entry.partitions):
                    self._open_partition(name, entry, p)
                    progress.step(f"{name}-{p}")
            progress.finish()
            self.coordinator = GroupCoordinator(
                OffsetStore(self.data_dir / OFFSETS_DIR),
                self._high_watermark,
                min_session_timeout_ms=self.config.group_min_session_timeout_ms,
                max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            )
            # before the control socket: a port taken fails the start, not a
            # broker clients have already found
            if self.config.metrics_address is not None:
                self.metrics = MetricsServer(self, self.config.metrics_address)
                self.metrics.start()
            self._server = ControlServer(
                self.config.control_socket,
                self.handle,
                self._connection_closed,
                max_connections=self.config.control_max_connections,
            )
            if self._gid is not None:  # created 0600: then opened to the group
                _share(self.config.control_socket, self._gid, 0o660)
            if self.gateways is not None:  # it asks the control socket first
                self.gateways.start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "supervisor %d serving %s (%d topics, %d partitions) on %s",
            os.getpid(),
            self.data_dir,
            len(self.topics),
            len(self.logs),
            self.config.control_socket,
        )

    def _take_lock(self) -> None:
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise errors.LockTimeout(
                    f"another supervisor (pid {holder}) is serving {self.data_dir}: "
                    f"stop it first, or use another --data-dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def serve_forever(
        self, start: bool = False, ready: Callable[[], object] | None = None
    ) -> None:
        """Serve until SIGTERM/SIGINT (or request_stop), then stop gracefully.
        start: start() first, with the signals already taken: the control socket
        answers before start() returns, and a stop sent then must be graceful too.
        ready: called once serving (systemd's READY=1)."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            if start:
                self.start()
            if ready is not None:
                ready()
            while not self._stop.wait(1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("supervisor: %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop serving, spill and fsync every partition, release the data directory.
        The rings stay: attached clients keep working, and the next start finds them."""
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.gateways is not None:  # first: its requests in flight still get answers
            self.gateways.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.coordinator is not None:
            self.coordinator.close()
            self.coordinator.store.close()
            self.coordinator = None
        self._stop.set()  # creations in progress stop at their next partition
        with self._lock:
            while self._creating:
                self._created.wait()
            for partition_log in self.logs.values():
                partition_log.request_stop()  # all at once, then each closes
            for partition_log in self.logs.values():
                partition_log.close()
            self.logs.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            log.info("supervisor %d stopped", os.getpid())

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- partitions -----------------------------------------------------------------

    def _topic_config(self, entry: registry.TopicEntry) -> TopicConfig:
        return self.config.topic_config(entry.configs)

    def _open_partition(self, topic: str, entry: registry.TopicEntry, p: int) -> None:
        partition_log = PartitionLog.open(
            self.data_dir / f"{topic}-{p}",
            shm.ring_name(self.shm_base, entry.topic_id, p),
            self._topic_config(entry),
            topic=topic,
            partition=p,
        )
        if self._gid is not None:  # its segment files, for the group's consumers
            _share(partition_log.directory, self._gid, 0o2750)  # setgid: new files too
            for path in partition_log.directory.iterdir():
                _share(path, self._gid, 0o640)
        partition_log.start()
        self.logs[topic, p] = partition_log
        _share(shm.path_of(partition_log.ring.name), self._gid)

    def _save_registry(self) -> None:
        registry.save(
            self.data_dir,
            self.topics,
            shm_prefix=self.config.shm_prefix,
            topic_defaults=self.config.topic_defaults,
        )

    def _entry(self, name: str) -> registry.TopicEntry:
        entry = self.topics.get(name)
        if entry is None:
            raise errors.UnknownTopic(f"topic {name!r} does not exist")
        if name in self._creating:
            raise errors.UnknownTopic(
                f"topic {name!r} is being created ({self._creating[name]} of "
                f"{entry.partitions} partitions so far): retry shortly"
            )
        return entry

    # ---- admin ----------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: dict[str, str] | None = None,
        validate_only: bool = False,
    ) -> protocol.TopicMetadata:
        validate_topic_name(name)
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise errors.InvalidArgument(
                f"topic {name!r}: partitions must be 1..{MAX_PARTITIONS}, "
                f"not {partitions}"
            )
        configs = {k: str(v) for k, v in (configs or {}).items()}
        config = self.config.topic_config(configs)  # names a bad key or value
        shm.check_space(partitions * (config.ring_bytes + 4096))
        with self._lock:
            if name in self.topics:
                raise errors.TopicExists(f"topic {name!r} already exists")
            if self._stop.is_set():
                raise errors.BrokerUnavailable("the broker is stopping")
            entry = registry.TopicEntry(registry.new_topic_id(), partitions, configs)
            if validate_only:
                return self._metadata(name, entry)
            # in the registry first: a crash half-way opens the rest at the next start
            self.topics[name] = entry
            self._save_registry()
            self._creating[name] = 0
        try:
            for p in range(partitions):  # without the lock: others are served
                if self._stop.is_set():
                    raise errors.BrokerUnavailable(
                        f"the broker is stopping: topic {name!r} has {p} of "
                        f"{partitions} partitions; its next start opens the rest"
                    )
                self._open_partition(name, entry, p)
                self._creating[name] = p + 1
        except errors.BrokerUnavailable:
            raise
        except BaseException:
            with self._lock:  # a full /dev/shm half-way: leave nothing behind
                self._creating.pop(name)
                self._delete(name)
            raise
        finally:
            with self._lock:
                self._creating.pop(name, None)
                self._created.notify_all()
        log.info("created topic %s: %d partitions, %s", name, partitions, configs)
        return self._metadata(name, entry)

    def delete_topic(self, name: str) -> None:
        with self._lock:
            self._entry(name)
            self._delete(name)
        log.info("deleted topic %s", name)

    def _delete(self, name: str) -> None:
        entry = self.topics.pop(name)
        self._save_registry()
        if self.coordinator is not None:  # as Kafka: the topic's offsets go with it
            self.coordinator.store.delete_partitions(name)
        for p in range(entry.partitions):
            partition_log = self.logs.pop((name, p), None)
            ring_name = shm.ring_name(self.shm_base, entry.topic_id, p)
            if partition_log is not None:
                partition_log.ring.mark_deleted()  # attached clients fail, not lose
                partition_log.close()
            shm.unlink(ring_name)
            directory = self.data_dir / f"{name}-{p}"
            if directory.exists():
                # as Kafka: rename first, so a crash never leaves a half-deleted
                # partition directory under the live name. The topic name is cut
                # (as Kafka does): a 249-character one would pass NAME_MAX (255)
                doomed = directory.with_name(
                    f"{name[:200]}-{p}.{entry.topic_id}-delete"
                )
                directory.rename(doomed)
                shutil.rmtree(doomed)

    def alter_configs(
        self, name: str, set_: dict[str, str], delete: list[str]
    ) -> protocol.TopicMetadata:
        with self._lock:
            entry = self._entry(name)
            configs = {k: v for k, v in entry.configs.items() if k not in delete}
            configs.update({k: str(v) for k, v in set_.items()})
            known = TopicConfig().to_kafka()
            for key in delete:
                if key not in known:
                    raise errors.ConfigError(
                        f"unknown topic config {key!r}; known: {', '.join(known)}"
                    )
            config = self.config.topic_config(configs)
            old = self._topic_config(entry)
            if config.ring_bytes != old.ring_bytes:
                raise errors.ConfigError(
                    f"ring.bytes of topic {name!r} cannot change: its rings exist "
                    f"(delete and re-create the topic)"
                )
            entry = registry.TopicEntry(entry.topic_id, entry.partitions, configs)
            self.topics[name] = entry
            self._save_registry()
            for p in range(entry.partitions):
                self.logs[name, p].reconfigure(config)
        log.info("altered configs of topic %s: %s", name, configs)
        return self._metadata(name, entry)

    def create_partitions(self, name: str, total: int) -> protocol.TopicMetadata:
        with self._lock:
            entry = self._entry(name)
            if not entry.partitions < total <= MAX_PARTITIONS:
                raise errors.InvalidArgument(
                    f"topic {name!r} has {entry.partitions} partitions: the new count "
                    f"must be more than that and at most {MAX_PARTITIONS}, not {total}"
                )
            config = self._topic_config(entry)
            shm.check_space((total - entry.partitions) * (config.ring_bytes + 4096))
            old = entry.partitions
            entry = registry.TopicEntry(entry.topic_id, total, entry.configs)
            self.topics[name] = entry
            self._save_registry()
            for p in range(old, total):
                self._open_partition(name, entry, p)
        log.info("topic %s now has %d partitions", name, total)
        return self._metadata(name, entry)

    def metadata(
        self, names: list[str] | None, auto_create: bool
    ) -> protocol.MetadataReply:
        with self._lock:
            if names is None:
                names = sorted(set(self.topics) - set(self._creating))
            missing = [name for name in names if name not in self.topics]
        if missing and not (auto_create and self.config.auto_create_topics_enable):
            raise errors.UnknownTopic(
                f"topic {missing[0]!r} does not exist"
                + (
                    ""
                    if self.config.auto_create_topics_enable
                    else " (auto.create.topics.enable is false)"
                )
            )
        for name in missing:  # outside the lock, as any create
            with contextlib.suppress(errors.TopicExists):  # another client's
                self.create_topic(name, self.config.num_partitions)
        with self._lock:
            return protocol.MetadataReply(
                [self._metadata(name, self._entry(name)) for name in names]
            )

    def _metadata(
        self, name: str, entry: registry.TopicEntry
    ) -> protocol.TopicMetadata:
        return protocol.TopicMetadata(
            name,
            entry.topic_id,
            entry.partitions,
            self._topic_config(entry).to_kafka(),
        )

    def describe(self, names: list[str] | None) -> protocol.DescribeReply:
        with self._lock:
            out = []
            every = sorted(set(self.topics) - set(self._creating))
            for name in every if names is None else names:
                entry = self._entry(name)
                partitions = []
                for p in range(entry.partitions):
                    plog = self.logs[name, p]
                    stat = plog.ring.stat()
                    partitions.append(
                        protocol.PartitionDescription(
                            partition=p,
                            log_start_offset=plog.log_start_offset,
                            high_watermark=stat.next_offset,
                            log_end_offset=plog.log_end_offset,
                            recovery_point=plog.recovery_point,
                            ring_capacity_bytes=stat.capacity_bytes,
                            ring_unspilled_bytes=stat.tail_position
                            - stat.spill_position,
                            disk_bytes=plog.disk_usage(),
                            segments=len(plog.segments()),
                            spill_error=None
                            if plog.spill_error is None
                            else str(plog.spill_error),
                        )
                    )
                out.append(
                    protocol.TopicDescription(
                        name,
                        entry.topic_id,
                        partitions,
                        self._topic_config(entry).to_kafka(only_changed=True),
                    )
                )
        return protocol.DescribeReply(out)

    # ---- the control socket ---------------------------------------------------------

    def handle(
        self, request: protocol.Request, conn: ControlConnection
    ) -> protocol.Reply:
        """Answer a control request through the handler its type is registered
        with (broker/handlers.py)."""
        handler = handlers.HANDLERS.get(type(request))
        if handler is None:
            raise errors.ProtocolError(
                f"unknown control request {type(request).__name__}"
            )
        return handler(self, request, conn)

    def group_coordinator(self) -> GroupCoordinator:
        """The coordinator, or BrokerUnavailable while the supervisor stops."""
        c = self.coordinator
        if c is None:
            raise errors.BrokerUnavailable("the supervisor is stopping")
        return c

    def _high_watermark(self, tp: TopicPartition) -> int:
        partition_log = self.logs.get((tp.topic, tp.partition))
        if partition_log is None:
            raise errors.UnknownTopic(
                f"topic {tp.topic!r} has no partition {tp.partition}"
            )
        return partition_log.ring.high_watermark()

    def _connection_closed(self, conn: ControlConnection) -> None:
        if self.coordinator is not None:
            self.coordinator.connection_closed(conn.conn_id)


def _share(path: Path | str, gid: int | None, mode: int | None = None) -> None:
    """Give path to access.group with mode (default: 0660, or 0600 without a
    group: a ring or the broker info object)."""
    if mode is None:
        mode = 0o600 if gid is None else 0o660
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except PermissionError as exc:
        raise errors.ConfigError(
            f"access.group (gid {gid}): cannot give {path} to it: the broker's user "
            f"(uid {os.getuid()}) must be a member of that group: {exc.strerror}"
        ) from exc


def serve(config: BrokerConfig) -> None:
    """`shmbroker serve`: log to stderr, start (with the gateway), tell systemd if
    it started us, serve until a signal, stop."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    supervisor = Supervisor(config, run_gateway=True)
    supervisor.serve_forever(
        start=True,
        ready=lambda: systemd.notify(f"READY=1\nSTATUS=serving {config.data_dir}"),
    )


# ---- the gateway processes --------------------------------------------------------

GATEWAY_STATE = "gateway.json"  # written by the gateway (gateway/server.py) once it
# listens: {"pid", "create_time", "host", "port", ...}; process i > 0 writes
# gateway-<i>.json
WATCH_INTERVAL = 0.2  # seconds between looks at the gateway processes
GATEWAY_START_TIMEOUT = 30.0
GATEWAY_STOP_TIMEOUT = 10.0


def gateway_state(path: Path) -> dict[str, Any] | None:
    """A gateway state file whose process is alive (not a reused pid), or None."""
    try:
        document: dict[str, Any] = json.loads(path.read_text())
        process = psutil.Process(document["pid"])
        if abs(process.create_time() - document["create_time"]) > 0.01:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return document


class _Slot:
    """One gateway process: ours (a child), or one a previous supervisor left
    serving (adopted: a supervisor crash does not cut Kafka clients off)."""

    def __init__(self, index: int, state: Path) -> None:
        self.index = index
        self.state = state
        self.child: subprocess.Popen[bytes] | None = None
        self.process: psutil.Process | None = None
        self.started = 0.0
        self.failures = 0  # quick deaths in a row: back off before the next start
        self.next_start = 0.0

    def alive(self) -> bool:
        if self.child is not None:
            return self.child.poll() is None
        if self.process is not None:
            try:
                return bool(self.process.status() != psutil.STATUS_ZOMBIE)
            except psutil.Error:
                return False
        return False


class GatewayProcesses:
    """Starts `gateway.processes` gateway processes on the configured listener,
    restarts one that dies (on the port the first one bound, so clients reconnect
    to the same address), and stops them with the supervisor."""

    def __init__(self, config: BrokerConfig) -> None:
        listener = config.listener
        assert listener is not None
        self.config = config
        self.listener = listener
        self.port = listener.port  # 0 until the first process bound one
        data_dir = Path(config.data_dir)
        self.slots = [
            _Slot(i, data_dir / (GATEWAY_STATE if i == 0 else f"gateway-{i}.json"))
            for i in range(config.gateway_processes)
        ]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for slot in self.slots:
            self._adopt(slot)
        self._thread = threading.Thread(
            target=self._watch, name="gateway-watch", daemon=True
        )
        self._thread.start()

    def _adopt(self, slot: _Slot) -> None:
        """Keep a gateway a previous supervisor of this directory left running, if
        it serves what we would start."""
        state = gateway_state(slot.state)
        if state is None:
            return
        wanted = Listener(self.listener.host, self.port or state["port"])
        if (state["host"], state["port"]) != wanted:
            log.info("stopping gateway %d on %s:%s: the config says %s:%d",
                     state["pid"], state["host"], state["port"], *wanted)  # fmt: skip
            self._terminate(psutil.Process(state["pid"]))
            return
        slot.process = psutil.Process(state["pid"])
        self.port = state["port"]
        log.info("gateway %d still serves %s:%d: kept", state["pid"], *wanted)

    def _command(self, slot: _Slot) -> list[str]:
        c = self.config
        command = [
            sys.executable, "-m", "shmbroker", "gateway",
            "--data-dir", str(c.data_dir),
            "--listen", f"{c.listener_name}://{self.listener.host}:{self.port}",
            "--state-file", slot.state.name,
            "--num-partitions", str(c.num_partitions),
            "--max-connections", str(c.max_connections),
            "--socket-request-max-bytes", str(c.socket_request_max_bytes),
            "--acks-all-fsync" if c.gateway_acks_all_fsync else "--acks-all-at-append",
            # the gateway logs at the supervisor's level (serve --log-level)
            "--log-level", logging.getLevelName(logging.root.getEffectiveLevel()),
        ]  # fmt: skip
        if c.advertised_listeners:
            advertised = c.advertised_listener
            assert advertised is not None
            command += ["--advertised-listener", f"{advertised.host}:{advertised.port}"]
        if len(self.slots) > 1:
            command.append("--reuse-port")
        return command

    def _spawn(self, slot: _Slot) -> bool:
        """Start the slot's process and wait until it listens; False if it died."""
        slot.state.unlink(missing_ok=True)
        slot.child = subprocess.Popen(
            self._command(slot),
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.config.security_environment()},
        )
        slot.process = None
        slot.started = time.monotonic()
        deadline = slot.started + GATEWAY_START_TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:  # its port even if it died since: the restart must reuse it
                state = json.loads(slot.state.read_text())
            except (OSError, ValueError):
                state = None
            if isinstance(state, dict) and state.get("pid") == slot.child.pid:
                self.port = int(state["port"])
                return slot.child.poll() is None
            if slot.child.poll() is not None:
                return False
            self._stop.wait(0.01)
        return False

    def _watch(self) -> None:
        while not self._stop.is_set():
            for slot in self.slots:
                if self._stop.is_set() or slot.alive():
                    continue
                now = time.monotonic()
                if slot.child is not None or slot.process is not None:
                    code = slot.child.returncode if slot.child is not None else "?"
                    quick = now - slot.started < 5.0
                    slot.failures = slot.failures + 1 if quick else 0
                    slot.next_start = now + min(10.0, 0.5 * slot.failures)
                    log.warning(
                        "gateway process %d exited (%s); restarting%s",
                        (slot.child or slot.process).pid, code,  # type: ignore[union-attr]
                        f" in {slot.next_start - now:.1f}s" if slot.failures else "",
                    )  # fmt: skip
                    slot.child = slot.process = None
                if now < slot.next_start:
                    continue
                if not self._spawn(slot) and not self._stop.is_set():
                    slot.failures += 1
                    slot.next_start = time.monotonic() + min(10.0, 0.5 * slot.failures)
                    log.error("gateway process did not start on %s:%d",
                              self.listener.host, self.port)  # fmt: skip
            self._stop.wait(WATCH_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for slot in self.slots:
            if slot.child is not None:
                if slot.child.poll() is None:
                    slot.child.terminate()
                try:
                    slot.child.wait(GATEWAY_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log.error("gateway %d did not stop: killing it", slot.child.pid)
                    slot.child.kill()
                    slot.child.wait()
            elif slot.process is not None:
                self._terminate(slot.process)
            slot.state.unlink(missing_ok=True)

    @staticmethod
    def _terminate(process: psutil.Process) -> None:
        try:
            process.terminate()
            process.wait(GATEWAY_STOP_TIMEOUT)
        except psutil.TimeoutExpired:
            log.error("gateway %d did not stop: killing it", process.pid)
            process.kill()
        except psutil.Error:
            pass
