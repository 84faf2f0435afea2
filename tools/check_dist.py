"""Checks release artefacts before they are uploaded (``make release-check``).

For every wheel in the given directory: its platform tag is one an index accepts and its
native module is stripped (no ``.symtab``, no DWARF). A manylinux wheel's tag must be one
``auditwheel show`` confirms (no newer glibc symbol than the tag allows, no library outside
the policy). A musllinux wheel is checked with musl's own dynamic loader instead
(``apt-get install musl``): auditwheel only recognises Alpine's name for the C library
(``libc.musl-x86_64.so.1``), while a zig-linked module names it ``libc.so``, which musl's
loader maps to itself; the loader then resolves every symbol the module imports, so one
that only glibc has fails the check (CPython's own ``Py*`` symbols are left for the
interpreter). maturin's built-in policy check has already passed at build time.
A manylinux module must take its unwinder from libgcc_s, as glibc does (``_Unwind_*``
imported from ``libgcc_s.so.1``, not bundled): glibc's ``pthread_exit`` unwinds through
our frames with libgcc's unwinder when CPython ends a thread at shutdown, and a bundled
one (zig links LLVM's libunwind) crashes the process there.
For the sdist: it holds what a build with only Rust needs, plus the tests.
``--list`` only prints each artefact's name, tags and size.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

#: What the sdist must contain to build (maturin reads these) and to be tested.
SDIST_NEEDS = (
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "src/lib.rs",
    "python/flask_beaker_session/__init__.py",
    "python/flask_beaker_session/py.typed",
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "tests/conftest.py",
)
#: Platform tags an index accepts for our targets: ``manylinux_X_Y_arch`` (and its legacy
#: ``manylinux2014_arch`` alias) or ``musllinux_X_Y_arch``; never ``linux_arch``.
_POLICY = re.compile(r"^(manylinux|musllinux)_(\d+)_(\d+)_(\w+)$")
_LEGACY = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}


def wheel_tags(name: str) -> tuple[str, str, list[str]]:
    """(python tag, abi tag, platform tags) from a wheel's file name."""
    parts = name[: -len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1].split(".")


def policy(tag: str) -> tuple[str, tuple[int, int], str] | None:
    """``manylinux_2_17_x86_64`` → ("manylinux", (2, 17), "x86_64"); None if no policy."""
    for legacy, version in _LEGACY.items():
        if tag.startswith(legacy + "_"):
            return "manylinux", version, tag[len(legacy) + 1 :]
    match = _POLICY.match(tag)
    if match is None:
        return None
    return match[1], (int(match[2]), int(match[3])), match[4]


def unstripped_sections(data: bytes) -> list[str]:
    """Names of symbol-table and debug sections left in an ELF file."""
    from elftools.elf.elffile import ELFFile  # installed with auditwheel

    elf = ELFFile(io.BytesIO(data))
    return [
        s.name for s in elf.iter_sections() if s.name == ".symtab" or s.name.startswith(".debug_")
    ]


#: musl's dynamic loader per architecture (Debian's ``musl`` package, x86_64 only here).
MUSL_LOADERS = {"x86_64": Path("/lib/ld-musl-x86_64.so.1")}
#: Libraries musl's loader provides itself (it serves these names from libc).
_MUSL_SELF = {"libc.so", "libpthread.so", "librt.so", "libm.so", "libdl.so", "libutil.so"}


def check_musl(data: bytes, arch: str) -> list[str]:
    """Problems of a musllinux module: needs only musl's libc, and musl resolves every
    symbol it imports (other than CPython's)."""
    import tempfile

    from elftools.elf.elffile import ELFFile

    dynamic = ELFFile(io.BytesIO(data)).get_section_by_name(".dynamic")
    needed = {t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    problems = [f"needs {lib} (not part of musl)" for lib in sorted(needed - _MUSL_SELF)]
    loader = MUSL_LOADERS.get(arch)
    if loader is None or not loader.exists():
        return [*problems, f"cannot check a musllinux {arch} wheel: no musl loader here"]
    with tempfile.NamedTemporaryFile(suffix=".so") as module:
        module.write(data)
        module.flush()
        listed = subprocess.run(
            [str(loader), "--list", module.name], capture_output=True, text=True, check=False
        )
    for line in (listed.stdout + listed.stderr).splitlines():
        missing = re.search(r"Error relocating .*: (\S+): symbol not found", line)
        if missing and not missing[1].startswith(("Py", "_Py")):
            problems.append(f"musl lacks {missing[1]}")
        elif line.startswith("Error") and not missing:
            problems.append(line)
    return problems


def unwinder_problems(data: bytes) -> list[str]:
    """Problems of a glibc module's unwinder: it must import ``_Unwind_RaiseException``
    and need ``libgcc_s.so.1`` (where glibc's forced unwinding comes from)."""
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(data))
    dynamic = elf.get_section_by_name(".dynamic")
    needed = {t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    imported = {
        s.name
        for s in elf.get_section_by_name(".dynsym").iter_symbols()
        if s["st_shndx"] == "SHN_UNDEF"
    }
    if "libgcc_s.so.1" in needed and "_Unwind_RaiseException" in imported:
        return []
    return ["bundles its own unwinder instead of importing libgcc_s's (see make wheels)"]


def check_wheel(path: Path) -> list[str]:
    problems: list[str] = []
    _py, abi, platforms = wheel_tags(path.name)
    if abi != "abi3":
        problems.append(f"abi tag {abi!r}, expected abi3 (one wheel per platform)")
    claimed = [policy(p) for p in platforms]
    if not platforms or any(c is None for c in claimed):
        problems.append(f"platform tag {'.'.join(platforms)!r} is not accepted by an index")
        return problems
    if all(c is not None and c[0] == "musllinux" for c in claimed):
        with zipfile.ZipFile(path) as wheel:
            for name in (n for n in wheel.namelist() if n.endswith(".so")):
                arch = claimed[0][2]  # type: ignore[index]
                problems += check_musl(wheel.read(name), arch)
                left = unstripped_sections(wheel.read(name))
                if left:
                    problems.append(f"{name} is not stripped: {', '.join(left)}")
        return problems
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r'consistent with the\s+following platform tag:\s+"([^"]+)"', shown.stdout)
    if shown.returncode != 0 or found is None:
        problems.append(f"auditwheel show failed: {shown.stdout.strip()} {shown.stderr.strip()}")
    else:
        confirmed = policy(found[1])
        if confirmed is None:
            problems.append(f"auditwheel: only {found[1]!r} (not an index tag)")
        else:
            for tag, c in zip(platforms, claimed):
                assert c is not None
                if c[0] != confirmed[0] or c[2] != confirmed[2] or c[1] < confirmed[1]:
                    problems.append(f"{tag} claimed, auditwheel confirms only {found[1]}")
    with zipfile.ZipFile(path) as wheel:
        modules = [n for n in wheel.namelist() if n.endswith(".so")]
        if not modules:
            problems.append("no native module in the wheel")
        for name in modules:
            left = unstripped_sections(wheel.read(name))
            if left:
                problems.append(f"{name} is not stripped: {', '.join(left)}")
            problems += unwinder_problems(wheel.read(name))
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    return [f"missing {need}" for need in SDIST_NEEDS if need not in names]


def describe(path: Path) -> str:
    size = f"{path.stat().st_size / 1024:,.0f} KiB"
    if path.name.endswith(".whl"):
        py, abi, platforms = wheel_tags(path.name)
        return f"{path.name}  [{py}-{abi}-{'.'.join(platforms)}]  {size}"
    return f"{path.name}  [sdist]  {size}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path)
    parser.add_argument("--list", action="store_true", help="only list the artefacts")
    args = parser.parse_args()
    artefacts = sorted(args.dist.glob("*.whl")) + sorted(args.dist.glob("*.tar.gz"))
    if not artefacts:
        print(f"{args.dist}: no wheel or sdist", file=sys.stderr)
        return 1
    failed = False
    for path in artefacts:
        print(describe(path))
        if args.list:
            continue
        problems = check_wheel(path) if path.name.endswith(".whl") else check_sdist(path)
        for problem in problems:
            print(f"  FAIL {problem}")
        if not problems:
            print("  ok")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
