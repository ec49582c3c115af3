"""kafka-python, the independent codec these tests check ours against, imported once.

kafka-python 3.0 calls importlib.resources' legacy read_text/open_text at import,
which warn on Python 3.11; pytest turns warnings into errors, so import it with that
one warning silenced here, rather than loosening the project-wide filter.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", r"(read_text|open_text) is deprecated", DeprecationWarning
    )
    # kafka-python ships no type information
    from kafka.partitioner.default import (  # type: ignore[import-untyped]
        DefaultPartitioner,
        murmur2,
    )
    from kafka.record._crc32c import crc, crc_update  # type: ignore[import-untyped]
    from kafka.record.default_records import (  # type: ignore[import-untyped]
        DefaultRecordBatch,
        DefaultRecordBatchBuilder,
    )

__all__ = [
    "DefaultPartitioner",
    "DefaultRecordBatch",
    "DefaultRecordBatchBuilder",
    "crc",
    "crc_update",
    "murmur2",
]
