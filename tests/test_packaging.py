"""Packaging facts that users and the release depend on.

The version has one source, ``Cargo.toml``: the installed metadata (what pip, PyPI and
``__version__`` show) must say the same, and the changelog's top section must be that
version (or "Unreleased"). Under ``make wheel-test`` (``FBS_WHEEL_TEST=1``) the suite runs
against an installed wheel: the package and its native module must then come from the
venv's site-packages, not from the source tree, and the module must be stripped.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from importlib.metadata import metadata, version
from pathlib import Path

import flask_beaker_session
import pytest
from flask_beaker_session import _core

ROOT = Path(__file__).resolve().parent.parent


def cargo_version() -> str:
    text = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', package, re.MULTILINE)
    assert found, "no version in Cargo.toml's [package]"
    return found[1]


def test_version_comes_from_cargo_toml() -> None:
    """pip's metadata and ``__version__`` are Cargo.toml's version (dynamic = version)."""
    assert version("flask-beaker-session") == cargo_version()
    assert flask_beaker_session.__version__ == cargo_version()


def test_changelog_top_section_is_this_version() -> None:
    """The newest CHANGELOG section names this version and a date, or is Unreleased."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    top = re.search(r"^## (.+)$", text, re.MULTILINE)
    assert top is not None
    heading = top[1]
    if heading != "Unreleased":
        assert re.fullmatch(rf"{re.escape(cargo_version())} — \d{{4}}-\d{{2}}-\d{{2}}", heading)


def test_metadata_names_license_urls_and_python() -> None:
    """What an index shows: license, project URLs, Python floor, the Flask classifier."""
    meta = metadata("flask-beaker-session")
    assert meta["License-Expression"] == "MIT" or meta["License"] == "MIT"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Documentation", "Source", "Changes"} <= set(urls)
    assert meta["Requires-Python"] == ">=3.9"
    assert "Framework :: Flask" in (meta.get_all("Classifier") or [])


def _section_names(elf: bytes) -> list[str]:
    """Section names of a little-endian ELF64 file (enough for x86_64 and aarch64)."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1
    shoff = int.from_bytes(elf[0x28:0x30], "little")
    entsize = int.from_bytes(elf[0x3A:0x3C], "little")
    count = int.from_bytes(elf[0x3C:0x3E], "little")
    strndx = int.from_bytes(elf[0x3E:0x40], "little")

    def header(i: int) -> tuple[int, int]:
        start = shoff + i * entsize
        name = int.from_bytes(elf[start : start + 4], "little")
        offset = int.from_bytes(elf[start + 0x18 : start + 0x20], "little")
        return name, offset

    strtab = header(strndx)[1]
    names = []
    for i in range(count):
        name = header(i)[0]
        names.append(elf[strtab + name : elf.index(b"\0", strtab + name)].decode())
    return names


@pytest.mark.skipif(not os.environ.get("FBS_WHEEL_TEST"), reason="only under make wheel-test")
def test_suite_runs_against_the_installed_wheel() -> None:
    """The package and ``_core`` are the wheel's, in site-packages; the module is stripped
    and was built for an index tag (its dist-info says manylinux/musllinux)."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for module in (flask_beaker_session, _core):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
    assert not any(Path(p).resolve() == ROOT / "python" for p in sys.path if p)
    sections = _section_names(Path(_core.__file__ or "").read_bytes())
    assert ".symtab" not in sections and not any(s.startswith(".debug_") for s in sections)
    wheel_file = next(site.glob("flask_beaker_session-*.dist-info")) / "WHEEL"
    tags = [line for line in wheel_file.read_text().splitlines() if line.startswith("Tag:")]
    index_tag = r"-abi3-(manylinux2014|(many|musl)linux_\d+_\d+)_"
    assert tags and all(re.search(index_tag, t) for t in tags), tags
