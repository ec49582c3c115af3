"""Regenerate csrc/shmb.cdef.h (the cffi view) from csrc/shmb.h.

The cdef holds what Python may call: shmb.h without comments, includes and guards,
with every #define turned into `#define NAME ...` so cffi takes the value from the
compiler. tests/native/test_consistency.py fails when the two disagree."""

import re
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
HEADER = (
    "/* What Python may call: the cffi view of shmb.h, made by tools/gen_cdef.py.\n"
    " * Plain declarations only; set_source() compiles shmb.h against these, so any\n"
    " * line that disagrees with it fails the build. */\n"
)


def cdef(header: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    lines = []
    for line in text.splitlines():
        if line.startswith(("#include", "#ifndef", "#endif", "#define SHMB_H")):
            continue
        if line.startswith("#define"):
            line = f"#define {line.split()[1]} ..."
        lines.append(line.rstrip())
    return HEADER + re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


if __name__ == "__main__":
    (CSRC / "shmb.cdef.h").write_text(cdef((CSRC / "shmb.h").read_text()))
