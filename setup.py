"""The cffi module (csrc/build_ffi.py), and the C core's CPython-API half (csrc/shmb_py.c):
the calls made once per record, which must cost less than a cffi call."""

import sys

from setuptools import Extension, setup

sys.path.insert(0, "csrc")
from build_ffi import SOURCES, flags, link  # noqa: E402  (the same flags and knobs)

setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    ext_modules=[
        Extension(
            "shmbroker._shmb_py",
            # the codec's seal and CRC32C compiled in: the builder calls them
            sources=["csrc/shmb_py.c"]
            + [f"csrc/{name}" for name in SOURCES if name in ("shmb_batch.c", "shmb_crc32c.c")],
            include_dirs=["csrc"],
            extra_compile_args=flags,
            extra_link_args=link,
        )
    ],
)
