"""`consumer-groups`: list, describe, reset and delete consumer groups
(kafka-consumer-groups)."""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from shmbroker import InvalidArgument, TopicPartition, UnknownTopic
from shmbroker.cli.options import echo_json, format_option
from shmbroker.cli.progress import progress_bar
from shmbroker.cli.target import Target, target_options

if TYPE_CHECKING:
    from shmbroker.cli.target import AnyAdmin
from shmbroker.client.admin import GroupInfo
from shmbroker.errors import GroupError, GroupIdNotFound, GroupNotEmpty

MISSING = "-"  # Kafka's MISSING_COLUMN_VALUE
RESET_SLICE = 256  # partitions looked up per request while a reset shows progress
# Kafka's ConsumerGroupState names, in its order (for the --list --state error)
GROUP_STATES = ("PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty")
REBALANCING = ("PreparingRebalance", "CompletingRebalance")
GROUP_ACTIONS = ("do_list", "describe", "delete", "reset_offsets", "delete_offsets")
RESET_SPECS = (
    "from_file",
    "to_earliest",
    "to_latest",
    "to_offset",
    "shift_by",
    "to_datetime",
    "by_duration",
)
GROUP_OPTIONS = {  # what each action takes besides --data-dir and --format
    "do_list": ("state",),
    "describe": ("groups", "all_groups", "members", "offsets", "state", "verbose"),
    "delete": ("groups", "all_groups"),
    "reset_offsets": (
        "groups",
        "all_groups",
        "topics",
        "all_topics",
        "dry_run",
        "execute",
        "export",
        *RESET_SPECS,
    ),
    "delete_offsets": ("groups", "topics"),
}


@dataclass(frozen=True)
class _GroupsCommand:
    """What `consumer-groups` was asked, as click parsed it."""

    target: Target
    do_list: bool
    describe: bool
    reset_offsets: bool
    delete: bool
    delete_offsets: bool
    groups: tuple[str, ...]
    all_groups: bool
    members: bool
    offsets: bool
    state: str | None  # None: no --state; "": --state without a value
    verbose: bool
    topics: tuple[str, ...]
    all_topics: bool
    to_earliest: bool
    to_latest: bool
    to_offset: int | None
    shift_by: int | None
    to_datetime: str | None
    by_duration: str | None
    from_file: str | None
    dry_run: bool
    execute: bool
    export: bool
    fmt: str

    def given(self, name: str) -> bool:
        value = getattr(self, name)
        return value is not None and value is not False and value != ()


def _flag_name(name: str) -> str:
    plural = {"do_list": "list", "groups": "group", "topics": "topic"}
    return "--" + plural.get(name, name).replace("_", "-")


@click.command("consumer-groups")
@target_options
@click.option("--list", "do_list", is_flag=True, help="list the consumer groups")
@click.option("--describe", is_flag=True,
              help="a group's committed offsets and lag [--offsets], its members "
              "(--members), or its state (--state)")  # fmt: skip
@click.option("--reset-offsets", is_flag=True,
              help="set an inactive group's offsets (one reset spec, a scope, "
              "--dry-run or --execute)")  # fmt: skip
@click.option("--delete", is_flag=True, help="delete inactive groups and their offsets")
@click.option("--delete-offsets", is_flag=True,
              help="delete a group's offsets of --topic (not of topics a live member "
              "subscribes to)")  # fmt: skip
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="the group to act on; repeatable")  # fmt: skip
@click.option("--all-groups", is_flag=True,
              help="--describe, --delete, --reset-offsets: every group")  # fmt: skip
@click.option("--members", is_flag=True, help="--describe: one row per member")
@click.option("--offsets", is_flag=True,
              help="--describe: one row per partition (the default)")  # fmt: skip
@click.option("--state", is_flag=False, flag_value="", default=None,
              metavar="[STATE,...]",
              help="--describe: the group's state; --list: each group's state, "
              "or only groups in these states (e.g. stable,empty)")  # fmt: skip
@click.option("--verbose", is_flag=True, help="--describe --members: ASSIGNMENT too")
@click.option("--topic", "topics", multiple=True, metavar="TOPIC[:P,P...]",
              help="--reset-offsets scope: a topic, or some of its partitions; "
              "repeatable")  # fmt: skip
@click.option("--all-topics", is_flag=True,
              help="--reset-offsets scope: every partition with an offset")  # fmt: skip
@click.option("--to-earliest", is_flag=True, help="reset to the log start offset")
@click.option("--to-latest", is_flag=True, help="reset to the log end offset")
@click.option("--to-offset", type=int, metavar="N",
              help="reset to N (within [log start, log end])")  # fmt: skip
@click.option("--shift-by", type=int, metavar="N",
              help="move the committed offset by N, + or -")  # fmt: skip
@click.option("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss",
              help="reset to the first record at or after this time (UTC unless "
              "it ends in Z, +hh, +hhmm or +hh:mm)")  # fmt: skip
@click.option("--by-duration", metavar="PnDTnHnMnS",
              help="reset to the first record at or after this long ago")  # fmt: skip
@click.option("--from-file", metavar="CSV",
              help="reset to the offsets of a file as --export writes it: "
              "topic,partition,offset lines (group,topic,partition,offset for "
              "several groups)")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="only show the new offsets (the default)")
@click.option("--execute", is_flag=True, help="commit the new offsets")
@click.option("--export", is_flag=True,
              help="--reset-offsets: print the new offsets as CSV, for "
              "--from-file")  # fmt: skip
@format_option
def consumer_groups(**options: Any) -> None:
    """List, describe, reset and delete consumer groups (kafka-consumer-groups), in
    Kafka's layouts; `-` marks a missing value. Offsets can only be reset, and
    groups deleted, while they have no live member."""
    cmd = _GroupsCommand(**options)
    _check_groups_command(cmd)
    with cmd.target.admin() as admin:
        if cmd.all_groups:
            listed = tuple(g.group_id for g in admin.list_groups())
            cmd = dataclasses.replace(cmd, groups=listed)
        if cmd.do_list:
            _list_groups(admin, cmd)
        elif cmd.describe:
            _describe_groups(admin, cmd)
        elif cmd.reset_offsets:
            _reset_offsets(admin, cmd)
        elif cmd.delete_offsets:
            _delete_offsets(admin, cmd)
        else:
            _delete_groups(admin, cmd)


def _check_groups_command(cmd: _GroupsCommand) -> None:
    """Kafka's ConsumerGroupCommandOptions.checkArgs, as usage errors (exit 2)."""
    actions = [a for a in GROUP_ACTIONS if cmd.given(a)]
    if len(actions) != 1:
        raise click.UsageError(
            "Command must include exactly one action: --list, --describe, --delete, "
            "--reset-offsets, --delete-offsets"
        )
    action = actions[0]
    for field in fields(cmd):
        name = field.name
        if name in ("target", "fmt", *GROUP_ACTIONS, *GROUP_OPTIONS[action]):
            continue
        if not cmd.given(name):
            continue
        if action == "delete" and name == "topics":
            raise click.UsageError(
                "The consumer does not support topic-specific offset deletion from a "
                "consumer group."
            )
        raise click.UsageError(
            f"Option {_flag_name(name)} can't be used with option {_flag_name(action)}"
        )
    if cmd.groups and cmd.all_groups:
        raise click.UsageError("Option --all-groups can't be used with option --group")
    if action != "do_list" and not cmd.groups and not cmd.all_groups:
        takes = "--all-groups, --group" if "all_groups" in GROUP_OPTIONS[action] else ""
        raise click.UsageError(
            f"Option {_flag_name(action)} takes one of these options: {takes}"
            if takes
            else f"Option {_flag_name(action)} takes the option --group"
        )
    if action == "delete_offsets" and (len(cmd.groups) != 1 or not cmd.topics):
        raise click.UsageError(
            "Option --delete-offsets takes the options --group (one) and --topic"
        )
    if action == "describe":
        if sum([cmd.members, cmd.offsets, cmd.state is not None]) > 1:
            raise click.UsageError(
                "Option --describe takes at most one of these options: --members, "
                "--offsets, --state"
            )
        if cmd.state:
            raise click.UsageError(
                "Option --describe does not take a value for --state"
            )
    if action == "reset_offsets":
        if cmd.dry_run and cmd.execute:
            raise click.UsageError(
                "Option --reset-offsets only accepts one of --execute and --dry-run"
            )
        specs = [s for s in RESET_SPECS if cmd.given(s)]
        if not specs:
            raise click.UsageError(
                "Option --reset-offsets requires one of the following scenarios: "
                + ", ".join(_flag_name(s) for s in RESET_SPECS)
            )
        if len(specs) > 1:
            raise click.UsageError(
                f"Option {_flag_name(specs[0])} can't be used with option "
                f"{_flag_name(specs[1])}"
            )
        if cmd.to_datetime is not None:  # a bad spec fails before any work
            _datetime_ms(cmd.to_datetime)
        if cmd.by_duration is not None:
            _duration_ms(cmd.by_duration)
        if cmd.export and cmd.fmt == "json":
            raise click.UsageError("Option --export can't be used with --format json")
        if cmd.from_file is None and not cmd.topics and not cmd.all_topics:
            raise click.UsageError(
                "One of the reset scopes should be defined: --all-topics, --topic."
            )
        if cmd.topics and cmd.all_topics:
            raise click.UsageError(
                "Option --topic can't be used with option --all-topics"
            )


def _columns(values: Sequence[object], widths: Sequence[int | None]) -> str:
    """Kafka's "%-Ns %-Ns ... %s": each value padded to its width (None: not
    padded), one space between; None values print as `-`."""
    cells = [MISSING if v is None else str(v) for v in values]
    return " ".join(
        c if w is None else c.ljust(w) for c, w in zip(cells, widths, strict=True)
    )


def _state_notice(group: str, state: str) -> None:
    """What Kafka prints on stderr before describing a group that is not Stable."""
    if state == "Empty":
        click.echo(f"\nConsumer group '{group}' has no active members.", err=True)
    elif state in REBALANCING:
        click.echo(f"\nWarning: Consumer group '{group}' is rebalancing.", err=True)


# ---- --list


def _group_states(value: str) -> set[str]:
    """Kafka's --state list: comma-separated, any case; empty: every state."""
    if not value.strip():
        return set()
    by_lower = {s.lower(): s for s in GROUP_STATES}
    states = {by_lower.get(s.strip().lower(), "") for s in value.split(",")}
    if "" in states:
        raise click.BadParameter(
            f"Invalid state list '{value}'. Valid states are: "
            f"{', '.join(GROUP_STATES)}",
            param_hint="--state",
        )
    return states


def _list_groups(admin: AnyAdmin, cmd: _GroupsCommand) -> None:
    listings = admin.list_groups()
    if cmd.state is not None:
        wanted = _group_states(cmd.state)
        listings = [g for g in listings if not wanted or g.state in wanted]
    if cmd.fmt == "json":
        echo_json(
            [
                {
                    "group": g.group_id,
                    "state": g.state,
                    "protocol_type": g.protocol_type,
                }
                for g in listings
            ]
        )
        return
    if cmd.state is None:
        for g in listings:
            click.echo(g.group_id)
        return
    widths = [max([15, *(len(g.group_id) for g in listings)]) + 10, 20]
    click.echo(_columns(["GROUP", "STATE"], widths))
    for g in listings:
        click.echo(_columns([g.group_id, g.state], widths))


# ---- --describe


class _OffsetRow(NamedTuple):
    """One row of kafka-consumer-groups --describe --offsets (None prints `-`)."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None
    consumer_id: str | None
    host: str | None
    client_id: str | None


def _describe_groups(admin: AnyAdmin, cmd: _GroupsCommand) -> None:
    """Each group in turn (sorted, as Kafka's TreeMap); an unknown one is an error
    after the others are shown."""
    documents: list[dict[str, Any]] = []
    missing = []
    for group in sorted(set(cmd.groups)):
        try:
            info = admin.describe_group(group)
        except GroupIdNotFound:
            click.echo(f"Error: Consumer group '{group}' does not exist.", err=True)
            missing.append(group)
            continue
        if cmd.members:
            document = _describe_members(info, cmd)
        elif cmd.state is not None:
            document = _describe_state(info, cmd)
        else:
            document = _describe_offsets(admin, info, cmd)
        documents.append(document)
    if cmd.fmt == "json":
        echo_json(documents)
    if missing:
        sys.exit(1)


def _describe_offsets(
    admin: AnyAdmin, info: GroupInfo, cmd: _GroupsCommand
) -> dict[str, Any]:
    """Kafka's rows: members with partitions (most partitions first), each's
    partitions in order, then the partitions with an offset and no owner."""
    lag = {TopicPartition(r.topic, r.partition): r for r in admin.lag(info.group_id)}
    order = [
        tp
        for m in sorted(info.members, key=lambda m: -len(m.assignment))
        for tp in sorted(set(m.assignment))
        if tp in lag
    ]
    order += [tp for tp, r in sorted(lag.items()) if r.member_id is None]
    rows = [
        _OffsetRow(
            info.group_id,
            tp.topic,
            tp.partition,
            lag[tp].committed,
            lag[tp].log_end_offset,
            lag[tp].lag,
            lag[tp].member_id,
            lag[tp].host,
            lag[tp].client_id,
        )
        for tp in order
    ]
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        if rows:
            widths = [
                max(15, len(info.group_id)),
                max([15, *(len(r.topic) for r in rows)]),
                10,
                15,
                15,
                15,
                max([15, *(len(r.consumer_id or MISSING) for r in rows)]),
                max([15, *(len(r.host or MISSING) for r in rows)]),
                None,
            ]
            click.echo(
                "\n"
                + _columns(
                    [
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "CURRENT-OFFSET",
                        "LOG-END-OFFSET",
                        "LAG",
                        "CONSUMER-ID",
                        "HOST",
                        "CLIENT-ID",
                    ],
                    widths,
                )
            )
            for row in rows:
                click.echo(_columns(row, widths))
    return {
        "group": info.group_id,
        "state": info.state,
        "offsets": [row._asdict() for row in rows],
    }


def _assignment_text(assignment: Sequence[TopicPartition]) -> str:
    """Kafka's ASSIGNMENT cell: `orders(0,2), audit(1)`, topics sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in assignment:
        by_topic.setdefault(topic, []).append(partition)
    parts = sorted(
        f"{topic}({','.join(str(p) for p in sorted(ps))})"
        for topic, ps in by_topic.items()
    )
    return ", ".join(parts) or MISSING


def _describe_members(info: GroupInfo, cmd: _GroupsCommand) -> dict[str, Any]:
    members = info.members
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        if members:  # Kafka prints nothing more for a group without members
            static = any(m.group_instance_id for m in members)
            widths: list[int | None] = [
                max(15, len(info.group_id)),
                max([15, *(len(m.member_id) for m in members)]),
            ]
            header = ["GROUP", "CONSUMER-ID"]
            if static:
                widths.append(
                    max([17, *(len(m.group_instance_id or "") for m in members)])
                )
                header.append("GROUP-INSTANCE-ID")
            widths += [
                max([15, *(len(m.host) for m in members)]),
                max([15, *(len(m.client_id) for m in members)]),
                15,
            ]
            header += ["HOST", "CLIENT-ID", "#PARTITIONS"]
            # Kafka's format ends "%-15s " and then ASSIGNMENT (if --verbose)
            line = _columns(header, widths) + " "
            click.echo("\n" + line + ("ASSIGNMENT" if cmd.verbose else ""))
            for m in members:
                values: list[object] = [info.group_id, m.member_id]
                if static:
                    values.append(m.group_instance_id or "")
                values += [m.host, m.client_id, len(m.assignment)]
                line = _columns(values, widths) + " "
                click.echo(
                    line + (_assignment_text(m.assignment) if cmd.verbose else "")
                )
    return {
        "group": info.group_id,
        "state": info.state,
        "members": [
            {
                "consumer_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "host": m.host,
                "client_id": m.client_id,
                "partitions": len(m.assignment),
                "assignment": [
                    {"topic": t, "partition": p} for t, p in sorted(m.assignment)
                ],
            }
            for m in members
        ],
    }


def _describe_state(info: GroupInfo, cmd: _GroupsCommand) -> dict[str, Any]:
    node = info.coordinator
    coordinator = f"{node.host}:{node.port} ({node.id})"
    if cmd.fmt == "text":
        _state_notice(info.group_id, info.state)
        widths = [max(15, len(info.group_id)), max(25, len(coordinator)), 20, 20, None]
        header = [
            "GROUP",
            "COORDINATOR (ID)",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "#MEMBERS",
        ]
        row = [
            info.group_id,
            coordinator,
            info.assignor or None,
            info.state,
            len(info.members),
        ]
        click.echo("\n" + _columns(header, widths))
        click.echo(_columns(row, widths))
    return {
        "group": info.group_id,
        "coordinator": {"host": node.host, "port": node.port, "id": node.id},
        "assignment_strategy": info.assignor or None,
        "state": info.state,
        "members": len(info.members),
        "generation": info.generation,
        "protocol_type": info.protocol_type,
    }


# ---- --reset-offsets


def _reset_offsets(admin: AnyAdmin, cmd: _GroupsCommand) -> None:
    """Kafka's resetOffsets: only for a group that is Empty (or unknown: Dead);
    a dry run unless --execute."""
    if not cmd.execute and not cmd.dry_run:
        click.echo(
            "WARN: No action will be performed as the --execute option is missing. "
            "Add --dry-run to say so and not see this warning.",
            err=True,
        )
    planned: dict[str, dict[TopicPartition, int]] = {}
    refused = []
    from_file = {}
    if cmd.from_file is not None:
        from_file = _read_offsets(cmd.from_file, cmd.groups)
    for group in sorted(set(cmd.groups)):
        state = _group_state(admin, group)
        if state not in ("Empty", "Dead"):
            refused.append(_not_inactive(group, state))
            continue
        offsets: dict[TopicPartition, int] = {}
        if cmd.from_file is not None:
            offsets = _within_log(admin, from_file.get(group, {}))
        else:
            partitions = _partitions_to_reset(admin, group, cmd)
            # the lookups in slices, for the bar; the commit below is one, as Kafka's
            with progress_bar(f"offsets of {group}", len(partitions), "partitions",
                              cmd.execute) as looked_up:  # fmt: skip
                for at in range(0, len(partitions), RESET_SLICE):
                    piece = partitions[at : at + RESET_SLICE]
                    offsets.update(_new_offsets(admin, group, piece, cmd))
                    looked_up(len(piece))
        if cmd.execute:
            try:
                # a new dict: Mapping's key type is invariant, so mypy rejects
                # dict[TopicPartition, int] where the keys may also be tuples
                admin.alter_group_offsets(group, {tp: o for tp, o in offsets.items()})
            except GroupNotEmpty:  # a member joined since we looked
                refused.append(_not_inactive(group, _group_state(admin, group)))
                continue
        planned[group] = offsets
    rows = [
        (g, tp.topic, tp.partition, offset)
        for g, offsets in planned.items()
        for tp, offset in sorted(offsets.items())
    ]
    if cmd.fmt == "json":
        echo_json(
            {
                "dry_run": not cmd.execute,
                "offsets": [
                    {"group": g, "topic": t, "partition": p, "new_offset": o}
                    for g, t, p, o in rows
                ],
            }
        )
    elif cmd.export:  # Kafka's CSV: without the group column for one group
        single = len(set(cmd.groups)) == 1
        for g, topic, partition, offset in rows:
            cells = (
                (topic, partition, offset) if single else (g, topic, partition, offset)
            )
            click.echo(",".join(str(v) for v in cells))
    elif planned:
        widths = [
            max([15, *(len(g) for g in planned)]),
            max([15, *(len(t) for _, t, _, _ in rows)]),
            10,
            None,
        ]
        click.echo(
            "\n" + _columns(["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], widths)
        )
        for row in rows:
            click.echo(_columns(row, widths))
    if refused:
        raise click.ClickException("\n".join(refused))


def _read_offsets(
    path: str, groups: Sequence[str]
) -> dict[str, dict[TopicPartition, int]]:
    """--from-file: topic,partition,offset lines for the one group, or
    group,topic,partition,offset lines (what --export writes)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--from-file"
        ) from None
    out: dict[str, dict[TopicPartition, int]] = {}
    for number, line in enumerate(lines, 1):
        cells = [c.strip() for c in line.split(",")]
        if not line.strip():
            continue
        if len(cells) == 3 and len(set(groups)) == 1:
            cells = [groups[0], *cells]
        try:
            group, topic, partition, offset = cells
            tp = TopicPartition(topic, int(partition))
            out.setdefault(group, {})[tp] = int(offset)
        except ValueError:
            columns = "topic" if len(set(groups)) == 1 else "group,topic"
            raise click.BadParameter(
                f"{path} line {number}: {line!r} is not {columns},partition,offset",
                param_hint="--from-file",
            ) from None
    return out


def _group_state(admin: AnyAdmin, group: str) -> str:
    try:
        return admin.describe_group(group).state
    except GroupIdNotFound:
        return "Dead"  # Kafka's state of a group it does not know


def _not_inactive(group: str, state: str) -> str:
    return (
        f"Assignments can only be reset if the group '{group}' is inactive, but the "
        f"current state is {state}."
    )


def _partitions_to_reset(
    admin: AnyAdmin, group: str, cmd: _GroupsCommand
) -> list[TopicPartition]:
    """--all-topics: the partitions the group has offsets for; --topic t: all of
    t's partitions, --topic t:0,2: those."""
    if cmd.all_topics:
        return sorted(admin.list_group_offsets(group))
    topics = admin.list_topics()
    wanted: dict[TopicPartition, None] = {}
    for arg in cmd.topics:
        topic, sep, numbers = arg.partition(":")
        meta = topics.get(topic)
        if meta is None:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        if not sep:
            wanted.update(
                dict.fromkeys(TopicPartition(topic, p) for p in range(meta.partitions))
            )
            continue
        if ":" in numbers:
            raise click.BadParameter(
                f"Invalid topic arg '{arg}', expected topic name and partitions",
                param_hint="--topic",
            )
        for number in numbers.split(","):
            try:
                partition = int(number)
            except ValueError:
                raise click.BadParameter(
                    f"Invalid partition '{number}' specified in topic arg '{arg}'",
                    param_hint="--topic",
                ) from None
            wanted[TopicPartition(topic, partition)] = None
    absent = [f"{t}-{p}" for t, p in wanted if not 0 <= p < topics[t].partitions]
    if absent:
        raise UnknownTopic(f'The partitions "{",".join(absent)}" do not exist')
    return list(wanted)


def _new_offsets(
    admin: AnyAdmin,
    group: str,
    partitions: Sequence[TopicPartition],
    cmd: _GroupsCommand,
) -> dict[TopicPartition, int]:
    """Kafka's prepareOffsetsToReset for the one reset spec given."""
    if not partitions:
        return {}
    if cmd.to_earliest or cmd.to_latest:
        spec = "earliest" if cmd.to_earliest else "latest"
        found = admin.list_offsets(dict.fromkeys(partitions, spec))
        return {tp: offset for tp, offset in found.items() if offset is not None}
    if cmd.to_offset is not None:
        return _within_log(admin, dict.fromkeys(partitions, cmd.to_offset))
    if cmd.shift_by is not None:
        committed = admin.list_group_offsets(group)
        wanted = {}
        for tp in partitions:
            if tp not in committed:
                raise click.ClickException(
                    f"Cannot shift offset for partition {tp.topic}-{tp.partition} "
                    f"since there is no current committed offset"
                )
            wanted[tp] = committed[tp].offset + cmd.shift_by
        return _within_log(admin, wanted)
    if cmd.to_datetime is not None:
        timestamp_ms = _datetime_ms(cmd.to_datetime)
    else:
        assert cmd.by_duration is not None
        timestamp_ms = int(time.time() * 1000) - _duration_ms(cmd.by_duration)
    return _offsets_at(admin, partitions, timestamp_ms)


def _within_log(
    admin: AnyAdmin, wanted: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Kafka's checkOffsetsRange: an offset past the log end becomes the log end,
    one before the log start the log start, each with a warning."""
    starts = admin.list_offsets(dict.fromkeys(wanted, "earliest"))
    ends = admin.list_offsets(dict.fromkeys(wanted, "latest"))
    out = {}
    for tp, offset in wanted.items():
        start, end = starts[tp], ends[tp]
        assert start is not None
        assert end is not None
        name = f"{tp.topic}-{tp.partition}"
        if offset > end:
            click.echo(
                f"WARN: New offset ({offset}) is higher than latest offset for "
                f"topic partition {name}. Value will be set to {end}",
                err=True,
            )
            offset = end
        elif offset < start:
            click.echo(
                f"WARN: New offset ({offset}) is lower than earliest offset for "
                f"topic partition {name}. Value will be set to {start}",
                err=True,
            )
            offset = start
        out[tp] = offset
    return out


def _offsets_at(
    admin: AnyAdmin, partitions: Sequence[TopicPartition], timestamp_ms: int
) -> dict[TopicPartition, int]:
    """The first offset at or after the time; the log end where no record is that
    new (Kafka warns "is empty" then, as here)."""
    # below 0, list_offsets would read -1/-2 as latest/earliest: 0 means the same
    found = admin.list_offsets(dict.fromkeys(partitions, max(0, timestamp_ms)))
    out = {}
    for tp in partitions:
        offset = found[tp]
        if offset is None:
            click.echo(
                f"Warn: Partition {tp.partition} from topic {tp.topic} is "
                f"empty. Falling back to latest known offset.",
                err=True,
            )
            offset = admin.list_offsets({tp: "latest"})[tp]
            assert offset is not None
        out[tp] = offset
    return out


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})(Z|[+-]\d\d(?::?\d\d)?)?"
)


def _datetime_ms(value: str) -> int:
    """Kafka's Utils.getDateTime: yyyy-MM-ddTHH:mm:ss.SSS, then Z, +hh, +hhmm or
    +hh:mm; without a zone it is UTC (Kafka appends "Z")."""
    match = _DATETIME.fullmatch(value.strip())
    try:
        if match is None:
            raise ValueError("not yyyy-MM-ddTHH:mm:ss.SSS[zone]")
        *numbers, zone = match.groups()
        year, month, day, hour, minute, second, millis = map(int, numbers)
        offset = timedelta(0)
        if zone and zone != "Z":
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            offset = -offset if zone[0] == "-" else offset
        moment = datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            millis * 1000,
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise click.BadParameter(
            f"Error parsing timestamp '{value}' ({exc}): the format is "
            f"yyyy-MM-ddTHH:mm:ss.SSS, optionally followed by Z, +hh, +hhmm or "
            f"+hh:mm (no zone: UTC)",
            param_hint="--to-datetime",
        ) from None
    return (moment - EPOCH) // timedelta(milliseconds=1)


_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?"
    r"(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE,
)


def _duration_ms(value: str) -> int:
    """Java's Duration.parse (what Kafka's --by-duration takes): PnDTnHnMn.nS,
    each part optional and signed, e.g. PT15M, P1DT12H, PT0.5S."""
    match = _DURATION.fullmatch(value.strip())
    if match is not None:
        sign, days, time_part, hours, minutes, seconds, fraction = match.groups()
        has_time = hours or minutes or seconds
        if (days or has_time) and (time_part is None or has_time):
            total = timedelta(
                days=int(days or 0),
                hours=int(hours or 0),
                minutes=int(minutes or 0),
                seconds=int(seconds or 0),
            )
            if fraction:
                nanos = int(fraction.ljust(9, "0"))
                negative = (seconds or "").startswith("-")
                total += timedelta(microseconds=(-nanos if negative else nanos) / 1000)
            if sign == "-":
                total = -total
            return total // timedelta(milliseconds=1)
    raise click.BadParameter(
        f"'{value}': Text cannot be parsed to a Duration (the format is PnDTnHnMn.nS, "
        f"e.g. PT15M or P1DT12H)",
        param_hint="--by-duration",
    )


# ---- --delete


def _delete_groups(admin: AnyAdmin, cmd: _GroupsCommand) -> None:
    deleted, failed = [], {}
    for group in dict.fromkeys(cmd.groups):
        try:
            admin.delete_group(group)
            deleted.append(group)
        except (GroupError, InvalidArgument) as exc:
            failed[group] = f"{type(exc).__name__}: {exc}"
    if cmd.fmt == "json":
        echo_json({"deleted": deleted, "failed": failed})
    elif not failed:
        names = ", ".join(f"'{g}'" for g in deleted)
        click.echo(f"Deletion of requested consumer groups ({names}) was successful.")
    elif deleted:
        names = ", ".join(f"'{g}'" for g in deleted)
        click.echo(f"These consumer groups were deleted successfully: {names}")
    if failed:
        raise click.ClickException(
            "Deletion of some consumer groups failed:\n"
            + "\n".join(
                f"* Group '{g}' could not be deleted due to: {why}"
                for g, why in failed.items()
            )
        )


# ---- --delete-offsets

SUBSCRIBED = "Error: The consumer group is subscribed to the topic"  # Kafka's words


def _delete_offsets(admin: AnyAdmin, cmd: _GroupsCommand) -> None:
    """Kafka's deleteOffsets: one row per partition, Successful or the reason (a
    live member subscribes to the topic); exit status 1 if any was kept."""
    (group,) = cmd.groups
    partitions = _partitions_to_reset(admin, group, cmd)
    kept = set(admin.delete_group_offsets(group, partitions))
    rows = [
        (tp.topic, tp.partition, SUBSCRIBED if tp in kept else "Successful")
        for tp in sorted(partitions)
    ]
    if cmd.fmt == "json":
        echo_json([{"topic": t, "partition": p, "status": s} for t, p, s in rows])
    else:
        topics = ", ".join(dict.fromkeys(tp.topic for tp in partitions))
        if kept:
            click.echo(
                "Encounter some partition level error, see the follow-up details:"
            )
        else:
            click.echo(
                f"Request succeed for deleting offsets with topic {topics} group "
                f"{group}"
            )
        click.echo("\n" + _columns(["TOPIC", "PARTITION", "STATUS"], [30, 15, 15]))
        for row in rows:
            click.echo(_columns(row, [30, 15, 15]))
    if kept:
        sys.exit(1)
