"""Progress bars of long commands: on stderr when it is a terminal (a real pty),
never in a pipe; the command's output and effect are the same either way."""

from __future__ import annotations

import errno
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from shmbroker import Admin, Consumer, EmbeddedBroker, TopicPartition
from tests.cli.test_top import ANSI


def run(args: list[str], *, stdin: Path | None = None,
        tty: bool = True) -> tuple[int, str, str]:  # fmt: skip
    """Run shmbroker with stderr on a pseudo-terminal (or a pipe): (status,
    stdout, what stderr showed, escapes stripped)."""
    master, slave = pty.openpty() if tty else os.pipe()
    with open(stdin or os.devnull, "rb") as source:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shmbroker", *args],
            stdin=source, stdout=subprocess.PIPE, stderr=slave,
            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
        )  # fmt: skip
    os.close(slave)
    assert proc.stdout is not None
    err, out = b"", b""
    streams = [master, proc.stdout.fileno()]
    while streams:  # both, as they come: a full pty would stop the command
        for fd in select.select(streams, [], [], 60)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:  # EIO: the pty's other side closed
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                streams.remove(fd)
            elif fd == master:
                err += chunk
            else:
                out += chunk
    os.close(master)
    proc.stdout.close()
    status = proc.wait(timeout=60)
    return status, out.decode(), ANSI.sub(b"", err).decode(errors="replace")


def test_produce_from_a_file_shows_a_bar_on_a_terminal_only(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    lines = tmp_path / "records.txt"
    lines.write_bytes(b"".join(b"record %d\n" % i for i in range(20_000)))
    target = ["--data-dir", str(broker.data_dir)]
    status, _, shown = run(["produce", "--topic", "bar", *target], stdin=lines)
    assert status == 0, shown
    assert "producing to bar" in shown
    assert re.search(r"100%", shown), shown
    status, _, shown = run(["produce", "--topic", "bar", *target], stdin=lines,
                           tty=False)  # fmt: skip
    assert status == 0
    assert shown == ""
    with Admin(str(broker.data_dir)) as admin:
        ends = admin.list_offsets({TopicPartition("bar", 0): "latest"})
    assert ends[TopicPartition("bar", 0)] == 40_000  # both runs sent every line


def test_perf_produce_shows_a_bar_and_prints_its_summary(
    broker: EmbeddedBroker,
) -> None:
    status, out, shown = run(["perf", "produce", "--data-dir", str(broker.data_dir),
                              "--topic", "perfbar", "--num-records", "50000",
                              "--record-size", "10"])  # fmt: skip
    assert status == 0, shown
    assert "producing to perfbar" in shown
    assert "50000 records sent" in out


def test_reset_offsets_execute_shows_a_bar_over_partitions(
    broker: EmbeddedBroker,
) -> None:
    partitions = 300
    with Admin(str(broker.data_dir)) as admin:
        admin.create_topic("many", partitions, {"ring.bytes": "65536"})
    with Consumer(str(broker.data_dir), group_id="resetter") as consumer:
        consumer.commit({TopicPartition("many", p): 0 for p in range(partitions)})
    status, out, shown = run(["consumer-groups", "--data-dir", str(broker.data_dir),
                              "--group", "resetter", "--reset-offsets", "--to-latest",
                              "--topic", "many", "--execute"])  # fmt: skip
    assert status == 0, shown
    assert "offsets of resetter" in shown
    assert f"{partitions}/{partitions}" in shown
    assert len([line for line in out.splitlines() if line.startswith("resetter")]) == (
        partitions
    )
