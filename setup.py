"""The cffi module (csrc/build_ffi.py), and the producer's batch builder: a CPython
extension type, because its per-record call must cost less than a cffi call
(csrc/shmb_builder.c says why)."""

import sys

from setuptools import Extension, setup

sys.path.insert(0, "csrc")
from build_ffi import SOURCES, flags, link  # noqa: E402  (the same flags and knobs)

setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    ext_modules=[
        Extension(
            "shmbroker._shmb_builder",
            # the codec's seal and CRC32C compiled in: the builder calls them
            sources=["csrc/shmb_builder.c"]
            + [f"csrc/{name}" for name in SOURCES if name in ("shmb_batch.c", "shmb_crc32c.c")],
            include_dirs=["csrc"],
            extra_compile_args=flags,
            extra_link_args=link,
        )
    ],
)
