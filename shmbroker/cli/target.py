"""Where a command's clients go: the broker of a data directory, over shared memory
(`--data-dir`), or a broker at HOST:PORT over the Kafka protocol
(`--bootstrap-server`, with Kafka client properties from `--command-config`). Every
client command takes its target through `target_options` and gets a `Target`, which
makes the Admin, Producer or Consumer to use; the command's code is the same both
ways."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shmbroker import Admin, Consumer, Producer
from shmbroker.cli.options import F, resolve_data_dir

if TYPE_CHECKING:
    from typing import TypeAlias

    from shmbroker.client import remote

    AnyAdmin: TypeAlias = Admin | remote.RemoteAdmin
    AnyProducer: TypeAlias = Producer | remote.RemoteProducer
    AnyConsumer: TypeAlias = Consumer | remote.RemoteConsumer


@dataclass(frozen=True)
class Target:
    """The broker a command talks to: data_dir (local) or bootstrap_server."""

    data_dir: str | None = None
    bootstrap_server: str | None = None
    properties: dict[str, str] = field(default_factory=dict)  # Kafka client's

    @property
    def local(self) -> bool:
        return self.bootstrap_server is None

    def admin(self) -> AnyAdmin:
        if self.bootstrap_server is None:
            return Admin(self.data_dir)
        with _needs_kafka_client():
            from shmbroker.client.remote import RemoteAdmin
        return RemoteAdmin(self.bootstrap_server, self.properties)

    def producer(self, **options: Any) -> AnyProducer:
        if self.bootstrap_server is None:
            return Producer(self.data_dir, **options)
        with _needs_kafka_client():
            from shmbroker.client.remote import RemoteProducer
        return RemoteProducer(self.bootstrap_server, self.properties, **options)

    def consumer(self, **options: Any) -> AnyConsumer:
        if self.bootstrap_server is None:
            return Consumer(self.data_dir, **options)
        with _needs_kafka_client():
            from shmbroker.client.remote import RemoteConsumer
        return RemoteConsumer(self.bootstrap_server, self.properties, **options)


@contextlib.contextmanager
def _needs_kafka_client() -> Iterator[None]:
    """The Kafka-protocol clients are imported only when asked for: they need
    confluent-kafka, which local use does not."""
    try:
        yield
    except ImportError as exc:
        raise click.ClickException(
            f"--bootstrap-server needs confluent-kafka ({exc}): "
            f"pip install 'shmbroker[kafka]'"
        ) from None


def read_properties(path: str) -> dict[str, str]:
    """A Java .properties file as Kafka's --command-config takes it: key=value or
    key: value lines; # and ! start comments; a trailing backslash continues a
    line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--command-config"
        ) from None
    out: dict[str, str] = {}
    logical = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = logical + raw.strip()
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical = line[:-1]
            continue
        logical = ""
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise click.BadParameter(
                f"{path} line {number}: {raw.strip()!r} is not key=value",
                param_hint="--command-config",
            )
        out[line[:cut].strip()] = line[cut + 1 :].strip()
    return out


def target_options(f: F) -> F:
    """--data-dir, or --bootstrap-server and --command-config, given to the command
    as `target`."""

    @functools.wraps(f)
    def with_target(
        *args: Any,
        data_dir: str | None,
        bootstrap_server: str | None,
        command_config: str | None,
        **kwargs: Any,
    ) -> Any:
        if bootstrap_server is None:
            if command_config is not None:
                raise click.UsageError(
                    "--command-config holds Kafka client properties: it goes with "
                    "--bootstrap-server"
                )
            target = Target(data_dir=resolve_data_dir(data_dir))
        else:
            if data_dir is not None:
                raise click.UsageError(
                    "--data-dir and --bootstrap-server both name the broker: give one"
                )
            properties = (
                {} if command_config is None else read_properties(command_config)
            )
            target = Target(bootstrap_server=bootstrap_server, properties=properties)
        return f(*args, target=target, **kwargs)

    for option in (
        click.option(
            "--command-config",
            metavar="FILE",
            help="Kafka client properties (key=value lines) for --bootstrap-server",
        ),
        click.option(
            "--bootstrap-server",
            metavar="HOST:PORT",
            help="reach the broker over the Kafka protocol, not shared memory",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            help="the broker's data directory [$SHMBROKER_DATA_DIR or "
            "./shmbroker-data]",
        ),
    ):
        with_target = option(with_target)
    return with_target  # type: ignore[return-value]
