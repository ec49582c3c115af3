"""What the benchmarks share: the machine they ran on and who else used it.

Imported by the bench_*.py scripts from their own directory (they run as scripts)."""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPUs busy over the next `seconds`: other work skews results."""

    def sample() -> tuple[int, int]:
        fields = [
            int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ]
        return sum(fields[:8]), fields[3] + fields[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1 - (i1 - i0) / max(t1 - t0, 1)


@functools.cache
def before_env(directory: str) -> dict[str, str]:
    """The environment that runs the shmbroker package exported to directory (the
    `--before` baseline), after checking that its compiled modules are its own: a
    module the export lacks would silently come from this tree's editable install.
    """
    env = dict(os.environ, PYTHONPATH=str(Path(directory).resolve()))
    names = ("shmbroker", "shmbroker._shmb", "shmbroker._shmb_py")
    probe = (
        "import importlib; print(*(importlib.import_module(n).__file__ for n in %r))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe % (names,)],  # -P: no working directory
        env=env,
        capture_output=True,
        text=True,
    )
    root = Path(directory).resolve()
    files = done.stdout.split()
    if done.returncode != 0 or not all(Path(f).is_relative_to(root) for f in files):
        raise RuntimeError(
            f"--before {directory}: {' '.join(names)} import from {files or '?'} "
            f"{done.stderr[-500:]}; build the export's C core in it: "
            f"pip wheel --no-deps -w {directory}/wheel {directory}, then unzip the "
            f"wheel's shmbroker/*.so into {directory}/shmbroker/"
        )
    return env


def run_child(script: str, args: list[str], directory: str | None = None) -> Any:
    """script --child args in a fresh interpreter, with this tree's shmbroker or,
    with directory, the package exported there (before_env): the JSON it prints."""
    env = None if directory is None else before_env(directory)
    done = subprocess.run(
        [sys.executable, script, "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the run against {directory or 'this tree'} failed:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout)


def alternate(
    rounds: int,
    here: Callable[[], dict[str, float]],
    before: Callable[[], dict[str, float]] | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """here() and before() (the --before baseline, if any) once a round, who goes
    first alternating, so that drift hits both alike: their rows' medians, and the
    runs themselves."""
    after: list[dict[str, float]] = []
    old: list[dict[str, float]] = []
    for k in range(rounds):
        if before is not None and k % 2:
            old.append(before())
        after.append(here())
        if before is not None and not k % 2:
            old.append(before())

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return (
            {k: statistics.median(r[k] for r in runs) for k in runs[0]} if runs else {}
        )

    return medians(after), medians(old), {"after": after, "before": old}


def fmt_size(size: int) -> str:
    return f"{size // KiB} KiB" if size >= KiB and size % KiB == 0 else f"{size} B"


def others_cpu_seconds() -> dict[int, float]:
    """CPU-seconds so far of every user-space process but this one and its children
    (kernel threads, such as writeback, are left out: they work for us)."""
    me, out = os.getpid(), {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info["ppid"]
        if proc.pid in (me, 2) or ppid in (me, 2):
            continue
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return out


def publish(
    name: str,
    result: dict[str, Any],
    *,
    smoke: bool,
    as_json: bool,
    print_report: Callable[[], None],
) -> None:
    """Save a full run's raw result to benchmarks/results/<name>-<time>.json, then
    print it as JSON or as the human report."""
    if not smoke:
        out = ROOT / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        (out / f"{name}-{stamp}.json").write_text(json.dumps(result, indent=1))
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print_report()
        if smoke:
            print("\n(smoke run: sizes too small for the figures to mean anything)")
