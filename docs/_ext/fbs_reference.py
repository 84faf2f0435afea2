"""Sphinx glue for the reference pages generated from the code (``fbs_sources.py``).

``.. fbs-settings::`` renders every ``SESSION_*`` setting of ``config.py``, ``.. fbs-cli::``
every command of ``flask beaker-session``; both parse the generated reStructuredText in
place, and the build is re-run when ``config.py`` or ``cli.py`` changes.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from fbs_sources import cli_rst, settings_rst
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


class _Generated(SphinxDirective):
    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(self.env.relfn2path("../python/flask_beaker_session/config.py")[1])
        self.env.note_dependency(self.env.relfn2path("../python/flask_beaker_session/cli.py")[1])
        container = nodes.container()
        content = StringList(self.lines(), source=f"<{self.name}>")
        nested_parse_with_titles(self.state, content, container)
        return container.children


class SettingsDirective(_Generated):
    def lines(self) -> list[str]:
        return settings_rst()


class CliDirective(_Generated):
    def lines(self) -> list[str]:
        return cli_rst()


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("fbs-settings", SettingsDirective)
    app.add_directive("fbs-cli", CliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
