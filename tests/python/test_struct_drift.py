"""The ctypes structs of the Python bindings against capi/mevbackup.h, as the C compiler lays it out.

Every ctypes.Structure (or Union) the mevbackup package defines is found by introspection and
mapped to its C struct: `_c_name_` when the class sets it, else mevb_ + its name in snake case
(_PgBackupOpts -> mevb_pg_backup_opts). The field names of each struct with a body in the
header are parsed from it; a generated C program prints sizeof and, for every such field,
offsetof and the member's size, so a parse that invents a name fails to compile instead of
passing. Both sides must then agree on the size, on the field names in order, and on each
field's offset and size; and every struct of the header must have a ctypes twin.
"""

from __future__ import annotations

import ctypes
import importlib
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import mevbackup

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "capi" / "mevbackup.h"

# C structs with a body in the header that deliberately have no ctypes twin (none today).
NO_TWIN: set = set()

Layout = Dict[str, Tuple[int, Dict[str, Tuple[int, int]]]]  # struct -> (sizeof, field -> (offset, size))


# ---- the C side -----------------------------------------------------------------


def header_structs(text: str) -> Dict[str, List[str]]:
    """{struct name: its field names in order} for every `typedef struct [tag] { ... } name;`."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.M)
    structs: Dict[str, List[str]] = {}
    for m in re.finditer(r"typedef\s+struct\s*(\w*)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        tag, body, name = m.group(1), m.group(2), m.group(3)
        assert tag in ("", name), f"typedef struct {tag} {{...}} {name}: the tag and the name differ"
        assert "{" not in body, f"{name}: a nested struct or union, which this parse does not read"
        fields: List[str] = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)  # function pointer: int (*name)(...)
            if fp:
                fields.append(fp.group(1))
                continue
            decl = re.sub(r"\[[^\]]*\]", "", decl)  # arrays
            decl = re.sub(r":\s*\d+", "", decl)  # bit-fields
            parts = decl.split(",")
            first = re.findall(r"\w+", parts[0])
            assert len(first) >= 2, f"{name}: cannot read the declaration {decl!r}"
            fields.append(first[-1])
            for extra in parts[1:]:  # int a, *b;
                fields.append(re.findall(r"\w+", extra)[-1])
        structs[name] = fields
    return structs


def c_layout(header: Path, structs: Dict[str, List[str]], workdir: Path) -> Layout:
    """Compiles and runs a program printing what the C compiler makes of `structs`."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) to compare the ctypes structs with")
    lines = ["#include <stddef.h>", "#include <stdio.h>", f'#include "{header.name}"', "int main(void) {"]
    for name, fields in structs.items():
        lines.append(f'  printf("S %s %zu\\n", "{name}", sizeof({name}));')
        for f in fields:
            lines.append(f'  printf("F %s %s %zu %zu\\n", "{name}", "{f}", offsetof({name}, {f}), '
                         f'sizeof((({name} *)0)->{f}));')
    lines += ["  return 0;", "}", ""]
    src = workdir / "layout.c"
    exe = workdir / "layout"
    src.write_text("\n".join(lines))
    r = subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-I", str(header.parent), "-o", str(exe), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"the layout program does not compile:\n{r.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=60).stdout
    layout: Layout = {}
    for line in out.splitlines():
        kind, name, *rest = line.split()
        if kind == "S":
            layout[name] = (int(rest[0]), {})
        else:
            layout[name][1][rest[0]] = (int(rest[1]), int(rest[2]))
    return layout


# ---- the Python side ------------------------------------------------------------


def c_name_of(cls: type) -> str:
    explicit = cls.__dict__.get("_c_name_")
    if explicit:
        return str(explicit)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__.lstrip("_")).lower()
    return "mevb_" + snake


def package_structs() -> List[type]:
    """Every ctypes Structure / Union subclass defined in the mevbackup package."""
    for mod in pkgutil.walk_packages(mevbackup.__path__, "mevbackup."):
        importlib.import_module(mod.name)
    found: List[type] = []
    todo: List[type] = [ctypes.Structure, ctypes.Union]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__ == "mevbackup" or sub.__module__.startswith("mevbackup."):
                found.append(sub)
    return found


def twins(classes: List[type]) -> Tuple[Dict[str, type], List[str]]:
    by_name: Dict[str, type] = {}
    problems: List[str] = []
    for cls in classes:
        name = c_name_of(cls)
        if name in by_name:
            problems.append(f"{cls.__qualname__} and {by_name[name].__qualname__} both map to {name}")
        by_name[name] = cls
    return by_name, problems


# ---- the comparison -------------------------------------------------------------


def drift(header_fields: Dict[str, List[str]], layout: Layout, by_name: Dict[str, type]) -> List[str]:
    """Every difference between the ctypes twins and the C structs, one message each."""
    problems: List[str] = []
    for name in sorted(set(header_fields) - set(by_name) - NO_TWIN):
        problems.append(f"{name} (capi/mevbackup.h) has no ctypes twin in bindings/python/mevbackup "
                        f"(name a class after it or set _c_name_ = \"{name}\")")
    for name, cls in sorted(by_name.items()):
        where = f"{cls.__module__}.{cls.__qualname__} (C {name})"
        if name not in header_fields:
            problems.append(f"{where}: no struct {name} with a body in capi/mevbackup.h")
            continue
        c_size, c_fields = layout[name]
        py_names = [f[0] for f in cls._fields_]  # type: ignore[attr-defined]
        c_names = header_fields[name]
        for f in c_names:
            if f not in py_names:
                problems.append(f"{where}: misses the C field {f}")
        for f in py_names:
            if f not in c_names:
                problems.append(f"{where}: has a field {f} the C struct lacks")
        common_c = [f for f in c_names if f in py_names]
        common_py = [f for f in py_names if f in c_names]
        if common_c != common_py:
            problems.append(f"{where}: fields in another order than C's: {common_py} vs {common_c}")
        for f in common_c:
            descr = getattr(cls, f)
            c_off, c_fsize = c_fields[f]
            if descr.offset != c_off:
                problems.append(f"{where}: {f} at offset {descr.offset}, C has it at {c_off}")
            if descr.size != c_fsize:
                problems.append(f"{where}: {f} is {descr.size} bytes, C's is {c_fsize}")
        if ctypes.sizeof(cls) != c_size:
            problems.append(f"{where}: sizeof is {ctypes.sizeof(cls)}, C's is {c_size}")
    return problems


@pytest.fixture(scope="module")
def c_side(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Dict[str, List[str]], Layout]:
    fields = header_structs(HEADER.read_text())
    return fields, c_layout(HEADER, fields, tmp_path_factory.mktemp("layout"))


# ---- the tests --------------------------------------------------------------------


def test_the_header_parse_finds_the_options_structs(c_side):
    fields, layout = c_side
    # The parse is what the rest relies on: it must see the structs and every field the
    # compiler knows (a bogus name would not have compiled; a missed one shows here).
    assert "mevb_repo_opts" in fields and "mevb_pitr_restore_opts" in fields
    assert fields["mevb_repo_opts"][:3] == ["struct_size", "log", "log_user"]
    for name, names in fields.items():
        size, offsets = layout[name]
        last = names[-1]
        end = offsets[last][0] + offsets[last][1]
        assert end <= size and size - end < 8, f"{name}: fields end at {end} of {size}: a field is missing"
        if name.endswith("_opts"):
            assert names[0] == "struct_size", f"{name} does not start with struct_size"


def test_every_ctypes_struct_matches_its_c_struct(c_side):
    fields, layout = c_side
    classes = package_structs()
    assert len(classes) >= len(fields) - len(NO_TWIN)
    by_name, problems = twins(classes)
    problems += drift(fields, layout, by_name)
    assert not problems, "the ctypes structs drifted from capi/mevbackup.h:\n  " + "\n  ".join(problems)


def _replace(by_name: Dict[str, type], name: str, fields: list) -> Dict[str, type]:
    fake = type("_Fake", (ctypes.Structure,), {"_fields_": fields})
    return {**by_name, name: fake}


def test_the_check_reports_each_kind_of_drift(c_side):
    """The comparison above is only worth something if it fails on drift: feed it twins
    broken the ways a merge breaks them, against the real header."""
    fields, layout = c_side
    by_name, _ = twins(package_structs())
    real = by_name["mevb_pg_restore_opts"]._fields_  # type: ignore[attr-defined]

    # The last two: the last alone may sit in what was padding, and leave sizeof as it was.
    missing_last = drift(fields, layout, _replace(by_name, "mevb_pg_restore_opts", real[:-2]))
    assert any(f"misses the C field {real[-1][0]}" in p for p in missing_last), missing_last
    assert any("sizeof is" in p for p in missing_last), missing_last

    extra = drift(fields, layout, _replace(by_name, "mevb_pg_restore_opts", real + [("extra", ctypes.c_int)]))
    assert any("has a field extra the C struct lacks" in p for p in extra), extra

    swapped = real[:2] + [real[3], real[2]] + real[4:]
    order = drift(fields, layout, _replace(by_name, "mevb_pg_restore_opts", swapped))
    assert any("another order" in p for p in order), order

    repo = by_name["mevb_repo_opts"]._fields_  # type: ignore[attr-defined]
    narrow = [("stall_timeout_seconds", ctypes.c_int) if f[0] == "stall_timeout_seconds" else f for f in repo]
    wrong_type = drift(fields, layout, _replace(by_name, "mevb_repo_opts", narrow))
    assert any("stall_timeout_seconds is 4 bytes, C's is 8" in p for p in wrong_type), wrong_type

    inserted = [repo[0], ("log", ctypes.c_void_p), ("pad", ctypes.c_uint64)] + repo[2:]
    shifted = drift(fields, layout, _replace(by_name, "mevb_repo_opts", inserted))
    assert any("log_user" in p and "offset" in p for p in shifted), shifted

    no_twin = {k: v for k, v in by_name.items() if k != "mevb_sync_opts"}
    lost = drift(fields, layout, no_twin)
    assert any(p.startswith("mevb_sync_opts (capi/mevbackup.h) has no ctypes twin") for p in lost), lost

    stray = drift(fields, layout, _replace(by_name, "mevb_no_such_opts", [("struct_size", ctypes.c_uint32)]))
    assert any("no struct mevb_no_such_opts" in p for p in stray), stray

    assert not drift(fields, layout, by_name)


def test_the_header_parse_reads_every_declaration_form(tmp_path):
    header = tmp_path / "forms.h"
    header.write_text("""#include <stdint.h>
typedef struct mevb_forms {
  uint32_t struct_size; /* a comment; with a semicolon */
  int (*cb)(const char *a, void *b); // a line comment
  const char *const *list;
  int a, *b;
  char name[16];
  unsigned flag : 1;
} mevb_forms;
typedef struct {
  int anonymous;
} mevb_untagged;
""")
    fields = header_structs(header.read_text())
    assert fields == {"mevb_forms": ["struct_size", "cb", "list", "a", "b", "name", "flag"],
                      "mevb_untagged": ["anonymous"]}
    # Bit-fields have no offsetof: the real header must not grow any (this one is not compiled).
    del fields["mevb_forms"][-1]
    layout = c_layout(header, fields, tmp_path)
    assert layout["mevb_forms"][1]["name"][1] == 16


def test_the_naming_convention():
    assert c_name_of(mevbackup._PgBackupOpts) == "mevb_pg_backup_opts"
    assert c_name_of(mevbackup._RepoOpts) == "mevb_repo_opts"
    assert c_name_of(mevbackup._BaseBackupOpts) == "mevb_basebackup_opts"  # by its _c_name_
