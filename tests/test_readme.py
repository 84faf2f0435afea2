"""The Python code blocks of the README and of the documentation pages run.

Every fenced ```` ```python ```` block of ``README.md`` and of ``docs/*.md`` is executed on
its own, as a fresh
module, with a temporary working directory (so relative ``SESSION_DATA_DIR`` values land
in it). A block that is not meant to run (a fragment, or one that starts a server) is
marked by the HTML comment ``<!-- no-test -->`` on the line(s) before its fence (blank
lines may come between). When a block leaves a Flask ``app`` behind whose sessions are
stored under that temporary directory, its routes that take no arguments are requested
once: none may fail with a server error.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
NO_TEST = "<!-- no-test -->"
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    skipped: bool


def python_blocks(text: str) -> list[Block]:
    """The ``python`` fenced blocks of a Markdown text, with their no-test marks."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].strip())
        if not match:
            i += 1
            continue
        fence, lang = match.group(1), match.group(2).lower()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in ("python", "py", "python3"):
            continue
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        skipped = previous >= 0 and lines[previous].strip() == NO_TEST
        blocks.append(Block(start + 1, "\n".join(body) + "\n", skipped))
    return blocks


def _stores_under(app: Flask, root: Path) -> bool:
    """Whether requests can only write under ``root`` (never, say, to /var/lib)."""
    if app.config.get("SESSION_TYPE") == "memory":
        return True
    data_dir = Path(app.config.get("SESSION_DATA_DIR", "./.sessions")).absolute()
    return data_dir.is_relative_to(root.absolute())


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
#: (page, block) for every documentation page, README first.
ALL_BLOCKS = [
    (page.relative_to(ROOT).as_posix(), block)
    for page in [README, *DOC_PAGES]
    for block in python_blocks(page.read_text(encoding="utf-8"))
]


def test_parser_finds_blocks_and_marks() -> None:
    """The extractor sees python fences only, keeps their code, and honours the mark."""
    text = "\n".join(
        [
            "# t",
            "```python",
            "x = 1",
            "```",
            "```sh",
            "ls",
            "```",
            NO_TEST,
            "",
            "```python",
            "raise SystemExit",
            "```",
            "````python",
            "s = '```'",
            "````",
        ]
    )
    assert python_blocks(text) == [
        Block(2, "x = 1\n", False),
        Block(10, "raise SystemExit\n", True),
        Block(13, "s = '```'\n", False),
    ]


def test_readme_has_runnable_python() -> None:
    """The README shows Python code, and most of it is tested."""
    runnable = [b for b in BLOCKS if not b.skipped]
    assert runnable, "README.md has no tested python block"


def test_docs_pages_have_runnable_python() -> None:
    """The pages that teach code (quickstart, backends, FAQ, deployment) have tested
    blocks, so the docs' examples are executed, not only the README's."""
    tested = {page for page, block in ALL_BLOCKS if not block.skipped}
    assert {
        "docs/quickstart.md",
        "docs/backends.md",
        "docs/faq.md",
        "docs/deployment.md",
    } <= tested


@pytest.mark.parametrize(
    ("page", "block"),
    [pytest.param(p, b, id=f"{p}:{b.line}") for p, b in ALL_BLOCKS if not b.skipped],
)
def test_readme_block_runs(
    page: str, block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block executes without error in a fresh module, cwd = a temporary dir."""
    monkeypatch.chdir(tmp_path)
    for key in ("SESSION_DATA_DIR", "SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    stem = re.sub(r"\W", "_", page.rsplit(".", 1)[0])
    name = f"doc_block_{stem}_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")
    # Registered so that classes the block defines can be pickled into sessions.
    monkeypatch.setitem(sys.modules, name, module)
    code = compile(block.code, f"{page}:{block.line}", "exec")
    exec(code, module.__dict__)

    app = module.__dict__.get("app")
    if isinstance(app, Flask) and _stores_under(app, tmp_path):
        client = app.test_client()
        for rule in app.url_map.iter_rules():
            if rule.arguments or "GET" not in (rule.methods or ()):
                continue
            if rule.endpoint == "static":
                continue
            response = client.get(rule.rule)
            assert response.status_code < 500, (rule.rule, response.text)
