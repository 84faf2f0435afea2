"""The generated reference pages cover the code, and the hand-written parts agree with it.

``docs/_ext/fbs_sources.py`` is what ``make docs`` renders into the configuration and CLI
pages; these tests hold it to the code: every setting ``config.py`` defines or reads, and
every CLI command and option, appears; the "Details" notes of ``docs/configuration.md``
name only real settings, with their real defaults; every page is in the table of contents.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import click
import pytest
from flask_beaker_session import config
from flask_beaker_session.cli import group

DOCS = Path(__file__).resolve().parent.parent / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import fbs_sources  # noqa: E402


def settings_in_code() -> set[str]:
    """Every ``SESSION_*`` name config.py defines or reads from the Flask config."""
    source = inspect.getsource(config)
    defined = {n for n in vars(config) if n.startswith("SESSION_")}
    read = set(re.findall(r'"(SESSION_[A-Z_]+)"', source))
    return defined | read


def test_every_setting_is_in_the_reference() -> None:
    """The generated reference lists every setting, each with its comment, default and
    accepted values."""
    rows = fbs_sources.settings()
    documented = [name for row in rows for name in row.names]
    assert len(documented) == len(set(documented))
    assert settings_in_code() <= set(documented), settings_in_code() - set(documented)
    rst = "\n".join(fbs_sources.settings_rst())
    for row in rows:
        assert row.doc, f"{row.names} has no #: comment in config.py"
        for name, default in zip(row.names, row.defaults):
            assert f".. data:: {name}" in rst or f"           {name}" in rst
            assert getattr(config, name) == default
    # Every validated setting says what it accepts, in the validator's own words.
    unchecked = {n for row in rows for n, a in zip(row.names, row.accepted) if a is None}
    assert unchecked == {"SESSION_TESTING"}


def test_accepted_values_come_from_the_validator() -> None:
    """'Accepts' is the text of the ConfigurationError the validator raises."""
    accepted = {n: a for row in fbs_sources.settings() for n, a in zip(row.names, row.accepted)}
    assert accepted["SESSION_TYPE"] == "'file' or 'memory' or 'redis' or 'postgresql'"
    assert accepted["SESSION_LOCKING"] == "True or False"
    assert accepted["SESSION_MAX_WAITERS"].startswith("a whole number from 0 to ")


def test_comments_are_read_like_sphinx_does() -> None:
    """``#:`` lines directly above an assignment document it; others do not."""
    source = "#: one\n#: two\nA = 1\n# plain\nB: int = 2\nC = D = 3\n"
    assert fbs_sources.attribute_comments(source) == {"A": "one\ntwo", "B": "", "C": "", "D": ""}


def _details() -> dict[str, str]:
    """``key -> default`` from the Details definition list of configuration.md."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Details", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for keys, default in re.findall(r"^(`SESSION_.+?) \(default `([^`]*)`", section, re.M):
        for key in re.findall(r"`(SESSION_[A-Z_]+)`", keys):
            found[key] = default
    return found


def test_hand_written_details_match_the_code() -> None:
    """The notes name real settings, with the defaults config.py holds."""
    details = _details()
    assert len(details) >= 15
    for key, default in details.items():
        assert hasattr(config, key), f"docs/configuration.md: {key} is not a setting"
        assert ast.literal_eval(default) == getattr(config, key), key


def test_every_cli_command_and_option_is_documented() -> None:
    """The CLI page shows every command of the group with its help and options."""
    rst = "\n".join(fbs_sources.cli_rst())
    assert {c.name for c in fbs_sources.cli_commands()} == set(group.commands)
    for name, command in group.commands.items():
        assert f"``beaker-session {name}``" in rst
        assert re.sub(r"\s+", " ", command.help or "").strip() in rst
        for param in command.params:
            if isinstance(param, click.Option):
                assert f".. option:: {', '.join(param.opts)}" in rst


@pytest.mark.parametrize("page", sorted(p.stem for p in DOCS.glob("*.md")))
def test_every_page_is_in_the_table_of_contents(page: str) -> None:
    """Each page is reachable from the landing page (Sphinx only warns otherwise)."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert page == "index" or re.search(rf"^{re.escape(page)}$", index, re.M)


def _table_keys(page: str, header: str) -> set[str]:
    """The backticked names in the first column of the table under ``header``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    keys: set[str] = set()
    for row in table.splitlines()[2:]:
        keys.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    return keys


def test_stats_json_table_matches_the_tested_schema() -> None:
    """docs/cli.md lists exactly the ``stats --json`` keys test_cli_truth checks."""
    from test_cli_truth import SCHEMA_KEYS

    assert _table_keys("cli.md", "| key | meaning |") == SCHEMA_KEYS


def test_skipped_flask_tests_table_matches_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/compatibility.md lists exactly the Flask tests the plugin skips on purpose."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "flask_suite"))
    from fbs_flask_plugin import DELIBERATE

    names = {test.split("::")[1] for test in DELIBERATE}
    assert _table_keys("compatibility.md", "| Flask test | why it is skipped |") == names
