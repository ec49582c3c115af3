"""What the log tests share: a PartitionLog opener that closes what it opened and
unlinks the ring."""

from __future__ import annotations

import pytest

from shmbroker import shm
from shmbroker.config import TopicConfig
from shmbroker.log.partition import PartitionLog

SMALL = TopicConfig(
    ring_bytes=1 << 16, segment_bytes=1 << 17, index_interval_bytes=1024
)


@pytest.fixture
def open_log(tmp_path, ring_name):
    """open_log(config=SMALL, directory=tmp_path / "t-0") -> an open PartitionLog."""
    opened = []

    def opener(config=SMALL, directory=None):
        log = PartitionLog.open(
            directory or tmp_path / "t-0", ring_name, config, topic="t", partition=0
        )
        opened.append(log)
        return log

    try:
        yield opener
    finally:
        try:
            for log in opened:
                log.close()
        finally:
            shm.unlink(ring_name)
