"""kafkajs (Node.js, its own protocol code) against the gateway: admin, an idempotent
producer with keys and headers, offsets; the records read back by the local Consumer
where Java's partitioner puts their keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from shmbroker import Consumer, EmbeddedBroker, _native

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
CLIENT = Path(__file__).with_name("kafkajs_client.js")


def kafkajs(broker: EmbeddedBroker, topic: str, count: int) -> dict:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "kafkajs").is_dir():
        pytest.fail("node or kafkajs is missing: `make test` installs them")
    result = subprocess.run(
        [node, str(CLIENT), broker.bootstrap_servers, topic, str(count)],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kafkajs failed: {result.stderr}"
    return json.loads(result.stdout)


def test_kafkajs_admin_and_idempotent_producer(
    broker: EmbeddedBroker, topic: str
) -> None:
    count = 300
    out = kafkajs(broker, topic, count)
    assert out["created"] is True
    assert out["listed"] is True
    with Consumer(str(broker.data_dir), auto_offset_reset="earliest") as local:
        local.assign([(topic, p) for p in range(3)])
        records = []
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            records += local.poll_batch(1000, timeout=1)
    assert len(records) == count
    for record in records:
        i = int(record.value[1:])
        assert record.key == b"k%d" % i
        assert record.headers == (("n", b"%d" % i),)
        # kafkajs's default partitioner is Java's murmur2, as ours
        assert record.partition == _native.partition_for_key(record.key, 3)
    per_partition = {p: sorted(r.offset for r in records if r.partition == p)
                     for p in range(3)}  # fmt: skip
    assert all(offsets == list(range(len(offsets)))
               for offsets in per_partition.values())  # fmt: skip
    assert out["ends"] == [[p, 0, len(per_partition[p])] for p in range(3)]
