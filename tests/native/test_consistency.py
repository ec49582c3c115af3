"""Source lint for the C/Python boundary (like msgspec's C-source tests).

shmb.h is the C API, shmb.cdef.h is what Python may call, and _native.py is the only
module that touches the compiled module. These tests keep the three in step, so a
function added to one and forgotten in another fails here by name, not at a distance.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "csrc" / "shmb.h"
CDEF = ROOT / "csrc" / "shmb.cdef.h"
PACKAGE = ROOT / "shmbroker"
NATIVE = PACKAGE / "_native.py"

_DECLARATION = re.compile(
    r"(?P<returns>(?:const )?\w+(?: ?\*)*) ?(?P<name>shmb_\w+) ?\((?P<params>[^()]*)\)"
)


def _code(path: Path) -> str:
    """C source without comments and preprocessor lines, whitespace collapsed."""
    text = re.sub(r"/\*.*?\*/", " ", path.read_text(), flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    return re.sub(r"\s+", " ", text)


def _normalise(declaration: str) -> str:
    d = re.sub(r"\s+", " ", declaration).strip()
    # "uint8_t *p", "uint8_t* p" and "uint8_t * p" are the same declaration
    return re.sub(r" ?([*(),]) ?", r"\1", d).replace("*", " *").replace("* *", "**")


def functions(path: Path) -> dict[str, str]:
    """Each shmb_* function declared in a C header -> its normalised declaration."""
    found: dict[str, str] = {}
    for statement in _code(path).split(";"):
        # drop anything up to the last brace: struct bodies and typedef enum bodies
        statement = re.split(r"[{}]", statement)[-1].strip()
        m = _DECLARATION.fullmatch(statement)
        if m:
            assert m["name"] not in found, f"{path.name} declares {m['name']} twice"
            found[m["name"]] = _normalise(statement)
    return found


def defines(path: Path) -> set[str]:
    return set(re.findall(r"^\s*#define\s+(SHMB_\w+)", path.read_text(), flags=re.M))


def test_declaration_parser_finds_every_function_in_the_header() -> None:
    """If the header names shmb_x( outside a comment, then the parser saw x."""
    called = set(re.findall(r"\b(shmb_\w+) ?\(", _code(HEADER)))
    assert called, "no shmb_* functions found in shmb.h"
    assert called == set(functions(HEADER))


def test_every_header_function_is_in_the_cdef_with_the_same_declaration() -> None:
    header, cdef = functions(HEADER), functions(CDEF)
    missing = sorted(set(header) - set(cdef))
    assert not missing, f"declared in shmb.h but not in shmb.cdef.h: {missing}"
    differ = {
        name: (header[name], cdef[name])
        for name in header
        if header[name] != cdef[name]
    }
    assert not differ, f"shmb.h and shmb.cdef.h disagree (header, cdef): {differ}"


def test_cdef_declares_no_function_the_header_lacks() -> None:
    extra = sorted(set(functions(CDEF)) - set(functions(HEADER)))
    assert not extra, f"in shmb.cdef.h but not in shmb.h: {extra}"


def test_cdef_defines_only_constants_the_header_defines() -> None:
    extra = sorted(defines(CDEF) - defines(HEADER))
    assert not extra, f"#define in shmb.cdef.h but not in shmb.h: {extra}"


def test_cdef_has_no_includes_or_conditionals() -> None:
    directives = re.findall(r"^\s*#\s*(\w+)", CDEF.read_text(), flags=re.M)
    assert set(directives) <= {"define"}, f"shmb.cdef.h directives: {directives}"


def test_every_cdef_function_is_wrapped_in_native() -> None:
    tree = ast.parse(NATIVE.read_text(), filename=str(NATIVE))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "lib"
    }
    # or called per record from the CPython extension, which _native re-exports
    used |= set(re.findall(r"\b(shmb_\w+) ?\(", _code(ROOT / "csrc" / "shmb_py.c")))
    unwrapped = sorted(set(functions(CDEF)) - used)
    assert not unwrapped, (
        f"in shmb.cdef.h but never called as lib.<name> in _native.py (nor from "
        f"csrc/shmb_py.c): {unwrapped}"
    )


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != NATIVE)


def _boundary_crossings(source: str, filename: str) -> list[str]:
    """Lines of a module that import the compiled module or touch its ffi/lib."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        what = None
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[-1] == "_shmb" for a in node.names):
                what = "imports _shmb"
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")
            if "_shmb" in module or any(a.name == "_shmb" for a in node.names):
                what = "imports _shmb"
            elif any(a.name in ("ffi", "lib") for a in node.names):
                what = f"imports ffi/lib from {node.module}"
        elif (isinstance(node, ast.Name) and node.id in ("ffi", "lib")) or (
            isinstance(node, ast.Attribute) and node.attr in ("ffi", "lib")
        ):
            what = "references ffi/lib"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"(shmbroker)?\._shmb", node.value)
        ):
            what = "names _shmb in a string (importlib?)"
        if what:
            found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")
    return found


def test_package_has_modules_to_check() -> None:
    assert NATIVE.exists()
    assert _modules(), "no modules under shmbroker/ besides _native.py"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_native_touches_the_compiled_module(path: Path) -> None:
    crossings = _boundary_crossings(path.read_text(), str(path.relative_to(ROOT)))
    assert not crossings, f"only shmbroker/_native.py may use _shmb: {crossings}"


@pytest.mark.parametrize(
    "source",
    [
        "from shmbroker._shmb import ffi",
        "from ._shmb import lib",
        "from shmbroker import _shmb",
        "from . import _shmb",
        "import shmbroker._shmb",
        "from shmbroker._native import ffi",
        "from shmbroker import _native\nx = _native.lib.shmb_crc32c",
        "x = lib.shmb_crc32c",
        "import importlib\nm = importlib.import_module('shmbroker._shmb')",
    ],
)
def test_boundary_check_catches_each_way_of_crossing(source: str) -> None:
    """If a module reaches the compiled module in any of these ways, the check reports
    it: guards the checker itself against passing everything."""
    assert _boundary_crossings(source, "probe.py")


def test_boundary_check_passes_a_module_that_uses_the_wrappers() -> None:
    source = "from shmbroker import _native\nx = _native.crc32c(b'')\n"
    assert _boundary_crossings(source, "probe.py") == []
