"""Node files from jinja2 templates: the one place a template is turned into text.

StrictUndefined makes a missing value an error instead of an empty string, so a template can
never quietly place a broken flag on a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined


@dataclass(frozen=True)
class NodeFile:
    """A file to place on a node: absolute path, exact bytes and ownership."""

    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


@cache
def environment() -> Environment:
    """The shared jinja2 environment (built once; templates are cached by jinja2 itself)."""
    return Environment(
        loader=PackageLoader("khwtui", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **context: object) -> str:
    """Render `template` (a file name in khwtui/templates) with `context`; same input, same text."""
    return environment().get_template(template).render(**context)
