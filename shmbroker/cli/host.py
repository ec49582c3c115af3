"""Commands that run or check the broker on this host: `serve` (the
supervisor), `gateway`, `gc`, `doctor`."""

from __future__ import annotations

import logging
import os
import sys

import click
import msgspec

from shmbroker import shm
from shmbroker.cli.options import (
    F,
    data_dir_option,
    echo_json,
    format_option,
    key_values,
    resolve_data_dir,
)
from shmbroker.config import BrokerConfig

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level_option(f: F) -> F:
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
        callback=lambda ctx, param, value: value.upper(),
        help="the least severe messages logged on stderr",
    )(f)


@click.command()
@click.option("--data-dir", help="[default: ./shmbroker-data or $SHMBROKER_DATA_DIR]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file: data.dir, num.partitions, auto.create.topics.enable, "
              "shm.prefix, listeners, advertised.listeners, gateway.processes, "
              "metrics.listener, [topic] defaults (tools/deploy/"
              "shmbroker.toml.example has every key)")  # fmt: skip
@click.option("--shm-prefix", help="start of every shared-memory name [shmb.]")
@click.option("--num-partitions", type=int, help="of auto-created topics [1]")
@click.option("--auto-create-topics/--no-auto-create-topics", default=None,
              help="create a topic on its first produce [on]")  # fmt: skip
@click.option("--topic-config", multiple=True, metavar="KEY=VALUE",
              help="default topic config, e.g. ring.bytes=4194304")  # fmt: skip
@click.option("--gateway-listen", metavar="HOST:PORT",
              help="where the Kafka protocol gateway listens (port 0: any free "
              "one) [127.0.0.1:9092]")  # fmt: skip
@click.option("--no-gateway", is_flag=True, help="run no Kafka protocol gateway")
@click.option("--advertised-listener", metavar="HOST:PORT",
              help="the address Metadata gives clients [the bound one]")  # fmt: skip
@click.option("--gateway-processes", type=click.IntRange(min=1),
              help="gateway processes sharing the port (SO_REUSEPORT) [1]")  # fmt: skip
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="where /metrics is served (port 0: any free one) "
              "[127.0.0.1:9644]")  # fmt: skip
@click.option("--no-metrics", is_flag=True, help="serve no Prometheus metrics")
@click.option("--group", "access_group", metavar="NAME",
              help="a Unix group whose users may use the broker too: data directory "
              "0750, control socket and shared memory 0660, owned by it "
              "(access.group) [the owner only]")  # fmt: skip
@log_level_option
def serve(
    data_dir: str | None,
    config_file: str | None,
    shm_prefix: str | None,
    num_partitions: int | None,
    auto_create_topics: bool | None,
    topic_config: tuple[str, ...],
    gateway_listen: str | None,
    no_gateway: bool,
    advertised_listener: str | None,
    gateway_processes: int | None,
    metrics_listen: str | None,
    no_metrics: bool,
    access_group: str | None,
    log_level: str,
) -> None:
    """Run the broker supervisor on a data directory until SIGTERM or Ctrl-C,
    with the Kafka protocol gateway (a process of its own, restarted if it dies)."""
    from shmbroker.broker.supervisor import serve as run

    if no_gateway and gateway_listen:
        raise click.BadParameter("--no-gateway and --gateway-listen contradict")
    if no_metrics and metrics_listen:
        raise click.BadParameter("--no-metrics and --metrics-listen contradict")
    config = BrokerConfig.load(
        config_file,
        data_dir=data_dir,
        shm_prefix=shm_prefix,
        num_partitions=num_partitions,
        auto_create_topics_enable=auto_create_topics,
        topic_defaults=key_values(topic_config, "--topic-config") or None,
        listeners="" if no_gateway else gateway_listen,
        advertised_listeners=advertised_listener,
        gateway_processes=gateway_processes,
        metrics_listener="" if no_metrics else metrics_listen,
        access_group=access_group,
    )
    _refuse_unusable_data_dir(config.data_dir)
    if config.listener is not None:  # bad PEM files: said now, not by each restart
        from shmbroker.gateway.server import ssl_context

        ssl_context(config)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)  # the gateway's too
    run(config)


def _refuse_unusable_data_dir(data_dir: str) -> None:
    """A data directory serve cannot make or write: one line, as doctor says it."""
    from shmbroker.broker.doctor import check_data_dir

    path = os.path.abspath(data_dir)
    for finding in check_data_dir(path, os.geteuid()):
        if finding.status == "error":
            raise click.ClickException(f"cannot serve {path}: {finding.message}")


@click.command()
@click.option("--data-dir", help="[default: ./shmbroker-data or $SHMBROKER_DATA_DIR]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file, as for serve")  # fmt: skip
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="where to listen (port 0: any free one) [the config's listeners]",
)
@click.option("--advertised-listener", metavar="HOST:PORT",
              help="the address Metadata gives clients [the bound one]")  # fmt: skip
@click.option(
    "--reuse-port",
    is_flag=True,
    help="share the port with other gateway processes (SO_REUSEPORT)",
)
@click.option(
    "--state-file",
    default="gateway.json",
    show_default=True,
    help="where in the data directory to say where it listens",
)
@click.option("--num-partitions", type=click.IntRange(min=1),
              help="of topics created without a count [1]")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1))
@click.option("--socket-request-max-bytes", type=click.IntRange(min=1))
@click.option("--acks-all-fsync/--acks-all-at-append", default=None,
              help="acks=all answers once fsynced, or at append [fsynced]")  # fmt: skip
@log_level_option
def gateway(
    data_dir: str | None,
    config_file: str | None,
    listen: str | None,
    advertised_listener: str | None,
    reuse_port: bool,
    state_file: str,
    num_partitions: int | None,
    max_connections: int | None,
    socket_request_max_bytes: int | None,
    acks_all_fsync: bool | None,
    log_level: str,
) -> None:
    """Run one Kafka protocol gateway process for the broker on a data directory
    (`serve` starts and watches one itself) until SIGTERM or Ctrl-C."""
    from shmbroker.gateway.server import serve as run_gateway

    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    config = BrokerConfig.load(
        config_file,
        data_dir=data_dir,
        listeners=listen,
        advertised_listeners=advertised_listener,
        num_partitions=num_partitions,
        max_connections=max_connections,
        socket_request_max_bytes=socket_request_max_bytes,
        gateway_acks_all_fsync=acks_all_fsync,
    )
    listener = config.listener
    if listener is None:
        raise click.BadParameter("no address to listen on", param_hint="--listen")
    run_gateway(
        config,
        listener,
        config.advertised_listener,
        reuse_port=reuse_port,
        state_file=state_file,
    )


@click.command()
@click.option("--dry-run", is_flag=True, help="only list what would be removed")
@click.option("--shm-prefix", default=shm.NAME_PREFIX, show_default=True,
              help="look only at shared-memory names starting /<prefix>")  # fmt: skip
@format_option
def gc(dry_run: bool, shm_prefix: str, fmt: str) -> None:
    """Remove leaked shared memory: rings and broker objects of this host whose
    broker, data directory or topic is gone. Looks at every broker, not one data
    directory; never touches another user's objects or names shmbroker did not
    make."""
    from shmbroker.broker import gc as garbage

    removals = garbage.collect(dry_run=dry_run, prefix=shm_prefix)
    if fmt == "json":
        echo_json(
            {
                "dry_run": dry_run,
                "removed": [msgspec.structs.asdict(r) for r in removals],
                "bytes": sum(r.bytes for r in removals),
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for r in removals:
        click.echo(f"{verb} {r.name} ({r.bytes} bytes): {r.reason}")
    total = sum(r.bytes for r in removals)
    click.echo(
        f"{len(removals)} objects, {total} bytes {'to free' if dry_run else 'freed'}"
    )


@click.command()
@data_dir_option
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="the broker's TOML file, if it has one")  # fmt: skip
@click.option("--shm-prefix",
              help="the broker's shm prefix [from its registry, or shmb.]")  # fmt: skip
@click.option("--group", "access_group", metavar="NAME",
              help="the broker's access.group, if it has one")  # fmt: skip
@format_option
def doctor(
    data_dir: str | None,
    config_file: str | None,
    shm_prefix: str | None,
    access_group: str | None,
    fmt: str,
) -> None:
    """Check this host for what would stop the broker of a data directory or lose its
    data: /dev/shm (tmpfs, size, free space), logind's RemoveIPC, the data directory
    and its disk, the registry, the control socket. Exit status 1 if any check
    finds an error."""
    from shmbroker.broker import doctor as checks

    config = checks.config_for(
        resolve_data_dir(data_dir), config_file, shm_prefix, access_group
    )
    findings = checks.check(config)
    if fmt == "json":
        echo_json([msgspec.structs.asdict(f) for f in findings])
    else:
        for f in findings:
            click.echo(f"{f.status.upper():5}  {f.check}: {f.message}")
    if any(f.status == "error" for f in findings):
        sys.exit(1)
