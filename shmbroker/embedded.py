"""A broker for tests and scripts: `with EmbeddedBroker() as broker:` starts
`shmbroker serve` as a subprocess on a temporary data directory, waits until it answers,
and on exit stops it gracefully and removes its directory and shared memory.

    with EmbeddedBroker() as broker, Producer(broker.data_dir) as producer:
        producer.send("events", b"hello")

With gateway=True it runs the Kafka protocol gateway too, on a free port of
127.0.0.1: `broker.bootstrap_servers` ("127.0.0.1:PORT") waits until it listens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from shmbroker import errors, protocol, shm
from shmbroker.client.connection import Connection

LOG_FILE = "supervisor.log"


class EmbeddedBroker:
    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        shm_prefix: str = shm.NAME_PREFIX,
        num_partitions: int = 1,
        auto_create_topics: bool = True,
        topic_defaults: Mapping[str, str | int] | None = None,
        startup_timeout: float = 30.0,
        remove: bool | None = None,
        gateway: bool = False,
        gateway_options: Mapping[str, str] | None = None,
        metrics_listener: str | None = "127.0.0.1:0",
    ) -> None:
        """remove: delete the data directory and the rings on stop (default: only
        when the directory is a temporary one made here). gateway: run the Kafka
        protocol gateway on a free port; gateway_options: more `serve` flags for it
        (e.g. {"--gateway-processes": "2"}). metrics_listener: where /metrics is
        served (default any free port, so that embedded brokers run side by side;
        `metrics_url()` says where), None for none."""
        self._temporary = data_dir is None
        self.data_dir = Path(
            tempfile.mkdtemp(prefix="shmbroker-") if data_dir is None else data_dir
        )
        self.remove = self._temporary if remove is None else remove
        self.shm_base = shm.broker_base(shm_prefix, shm.broker_id(self.data_dir))
        self.startup_timeout = startup_timeout
        self.args = [
            sys.executable, "-m", "shmbroker", "serve",
            "--data-dir", str(self.data_dir),
            "--shm-prefix", shm_prefix,
            "--num-partitions", str(num_partitions),
            "--auto-create-topics" if auto_create_topics else "--no-auto-create-topics",
        ]  # fmt: skip
        self.args += (
            ["--no-metrics"]
            if metrics_listener is None
            else ["--metrics-listen", metrics_listener]
        )
        for key, value in (topic_defaults or {}).items():
            self.args += ["--topic-config", f"{key}={value}"]
        self.gateway = gateway
        if gateway:
            self.args += ["--gateway-listen", "127.0.0.1:0"]
            for flag, value in (gateway_options or {}).items():
                self.args += [flag, value]
        else:
            self.args.append("--no-gateway")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> EmbeddedBroker:
        """Start the supervisor and wait until its control socket answers."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + self.startup_timeout
        with Connection(self.data_dir, client_id="embedded") as connection:
            while True:
                try:
                    # any cheap request proves the supervisor is up, if it is ours:
                    # another one serving this directory makes ours exit
                    connection.request(protocol.Metadata([]), protocol.MetadataReply)
                    hello = connection.hello
                    if hello is not None and hello.pid == self.process.pid:
                        return self
                except errors.BrokerUnavailable:
                    pass
                if self.process.poll() is not None:
                    raise errors.BrokenError(
                        f"the supervisor exited with {self.process.returncode} while "
                        f"starting: {self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise errors.BrokenError(
                        f"the supervisor did not answer within "
                        f"{self.startup_timeout}s: {self.log_tail()}"
                    )
                time.sleep(0.01)

    def gateway_address(self, timeout: float | None = None) -> tuple[str, int]:
        """(host, port) of the live gateway process, once it listens (a restarted
        one listens on the same port)."""
        from shmbroker.gateway.server import read_state, state_path

        if not self.gateway:
            raise errors.InvalidArgument("this EmbeddedBroker runs no gateway")
        deadline = time.monotonic() + (
            self.startup_timeout if timeout is None else timeout
        )
        while True:
            state = read_state(state_path(self.data_dir))
            if state is not None:
                return state["host"], state["port"]
            if self.process is not None and self.process.poll() is not None:
                raise errors.BrokenError(
                    f"the supervisor exited with {self.process.returncode}: "
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise errors.BrokenError(
                    f"no gateway listened within {self.startup_timeout}s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.01)

    def metrics_url(self, timeout: float | None = None) -> str:
        """http://HOST:PORT/metrics of the supervisor, once it serves it."""
        deadline = time.monotonic() + (
            self.startup_timeout if timeout is None else timeout
        )
        while True:
            state = protocol.load_metrics_state(self.data_dir)
            process = self.process
            if state is not None and process is not None and state.pid == process.pid:
                return state.url
            if time.monotonic() > deadline:
                raise errors.BrokenError(
                    f"no metrics served within {self.startup_timeout}s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.01)

    @property
    def gateway_port(self) -> int:
        return self.gateway_address()[1]

    @property
    def bootstrap_servers(self) -> str:
        """For Kafka clients: "HOST:PORT" of the gateway."""
        host, port = self.gateway_address()
        return f"{host}:{port}"

    def gateway_pid(self) -> int | None:
        from shmbroker.gateway.server import read_state, state_path

        state = read_state(state_path(self.data_dir))
        return None if state is None else int(state["pid"])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: it spills and fsyncs everything. Returns its exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: the rings survive, the next start recovers."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> EmbeddedBroker:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Remove the broker's shared memory and, if temporary, its directory. A
        gateway a killed supervisor left serving is stopped first."""
        if self.gateway:
            pid = self.gateway_pid()
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    gateway = psutil.Process(pid)
                    gateway.terminate()
                    gateway.wait(10)
        for name in shm.list_names(self.shm_base.removeprefix("/")):
            shm.unlink(name)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        try:
            return self.start()
        except BaseException:  # no __exit__ follows: leave nothing behind now
            self.kill()
            if self._temporary:  # made here: no other supervisor can be serving it
                self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        tail = self.log_tail() if code != 0 else ""  # before cleanup removes it
        if self.remove:
            self.cleanup()
        if code != 0 and exc[0] is None:
            raise errors.BrokenError(
                f"the supervisor exited with {code} on stop: {tail}"
            )
