"""What the generated reference pages say, read from the code (no Sphinx needed here:
``tests/test_docs.py`` imports this module; ``fbs_reference.py`` is the Sphinx glue).

``.. fbs-settings::`` renders every ``SESSION_*`` setting of
``flask_beaker_session.config``: its ``#:`` comment (the documentation the module keeps
next to the default), the default value the module holds, and the values it accepts, as
the validator itself words them: the setting is loaded with a value no validator accepts
and the text after "expected" in the resulting ``ConfigurationError`` is shown. A setting
whose value is not checked says so.

``.. fbs-cli::`` renders every command of the ``flask beaker-session`` group: usage, help
text and options, read from the click objects.

Both produce reStructuredText lines (so the ``:class:`` roles of the comments resolve).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

CONFIG_MODULE = "flask_beaker_session.config"
#: A value of a type no validator accepts.
_UNACCEPTABLE = object()


@dataclass(frozen=True)
class Setting:
    names: tuple[str, ...]  # settings documented by one comment share a row
    doc: str
    defaults: tuple[Any, ...]
    accepted: tuple[str | None, ...]  # per name; None: not validated (taken as given)


def _accepted(name: str) -> str | None:
    """What ``config.load`` says it expects for ``name``, or None if it takes anything."""
    from flask_beaker_session import config
    from flask_beaker_session.errors import ConfigurationError

    base: dict[str, Any] = {"SESSION_TYPE": "memory", "SECRET_KEY": "docs"}
    if name.startswith("SESSION_REDIS_TLS_"):
        base["SESSION_REDIS_URL"] = "rediss://127.0.0.1:6379/0"
    try:
        config.load({**base, name: _UNACCEPTABLE})
    except ConfigurationError as exc:
        message = str(exc)
        _, sep, expected = message.partition(" is invalid: expected ")
        return expected if sep else message.partition(" is invalid: ")[2] or message
    return None


def settings() -> list[Setting]:
    """Every public ``SESSION_*`` module constant of config.py, in source order."""
    module = importlib.import_module(CONFIG_MODULE)
    docs = attribute_comments(inspect.getsource(module))
    names = [n for n in docs if n.startswith("SESSION_") and hasattr(module, n)]
    rows: list[Setting] = []
    for name in names:
        doc = docs.get(name, "")
        if not doc and rows:
            # A constant right after another, without its own comment, shares that comment
            # (``SESSION_REDIS_CONNECT_TIMEOUT`` / ``SESSION_REDIS_TIMEOUT``).
            last = rows.pop()
            rows.append(
                Setting(
                    (*last.names, name),
                    last.doc,
                    (*last.defaults, getattr(module, name)),
                    (*last.accepted, _accepted(name)),
                )
            )
            continue
        rows.append(Setting((name,), doc, (getattr(module, name),), (_accepted(name),)))
    return rows


def attribute_comments(source: str) -> dict[str, str]:
    """Module-level assigned names, in source order, with the ``#:`` comment lines right
    above each (Sphinx's convention for attribute docs); "" for a name without one."""
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        comment: list[str] = []
        row = node.lineno - 2
        while row >= 0 and lines[row].lstrip().startswith("#:"):
            comment.insert(0, lines[row].lstrip()[2:].strip())
            row -= 1
        for name in targets:
            found.setdefault(name, "\n".join(comment))
    return found


def _default(value: Any) -> str:
    text = f"``{value!r}``"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20:
        text += f" ({value / (1 << 20):g} MiB)"
    return text


def settings_rst() -> list[str]:
    lines: list[str] = [".. currentmodule:: flask_beaker_session.config", ""]
    for row in settings():
        for i, name in enumerate(row.names):
            lines.append(f".. data:: {name}" if i == 0 else f"           {name}")
        lines.append("")
        defaults = ", ".join(_default(d) for d in row.defaults)
        lines.append(f"   :Default: {defaults}")
        accepted = ["any value (not checked)" if a is None else a for a in row.accepted]
        if len(set(accepted)) == 1:
            lines.append(f"   :Accepts: {accepted[0]}")
        else:
            each = "; ".join(f"``{n}``: {a}" for n, a in zip(row.names, accepted))
            lines.append(f"   :Accepts: {each}")
        lines.append("")
        lines.extend("   " + line if line else "" for line in row.doc.splitlines())
        lines.append("")
    return lines


def cli_commands() -> list[Any]:
    """The click commands of ``flask beaker-session``, by name."""
    from flask_beaker_session.cli import group

    return [group.commands[name] for name in sorted(group.commands)]


def cli_rst() -> list[str]:
    import click
    from flask_beaker_session.cli import group

    lines: list[str] = []
    for command in cli_commands():
        ctx = click.Context(command, info_name=f"flask --app APP {group.name} {command.name}")
        usage = " ".join(command.collect_usage_pieces(ctx))
        title = f"``{group.name} {command.name}``"
        lines += [title, "^" * len(title), ""]
        lines += ["::", "", f"   {ctx.command_path} {usage}", ""]
        lines += [re.sub(r"\s+", " ", command.help or "").strip(), ""]
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            flags = ", ".join(param.opts)
            lines += [f".. option:: {flags}", "", f"   {param.help or ''}", ""]
    return lines
