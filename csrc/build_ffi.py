"""cffi builder (API mode, out of line) for shmbroker._shmb.

Knobs: SHMB_DEBUG=1 builds -O0 -g; SHMB_SANITIZE=1 adds ASan and UBSan.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["shmb_ring.c", "shmb_batch.c", "shmb_crc32c.c", "shmb_murmur2.c"]

flags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
link: list[str] = []
if os.environ.get("SHMB_DEBUG") == "1":
    flags += ["-O0", "-g"]
else:
    flags += ["-O2"]
if os.environ.get("SHMB_SANITIZE") == "1":
    flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link += ["-fsanitize=address,undefined"]

ffibuilder = FFI()
ffibuilder.set_source(
    "shmbroker._shmb",
    '#include "shmb.h"',
    # relative paths: setuptools refuses absolute source paths in a build
    sources=[f"csrc/{name}" for name in SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=flags,
    extra_link_args=link,
    libraries=["pthread"],
)
ffibuilder.cdef((HERE / "shmb.cdef.h").read_text())

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
