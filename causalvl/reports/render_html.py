"""The HTML renderer: one self-contained page from a report
:class:`~causalvl.reports.document.Document`.

The page skeleton (``templates/report.html.j2``) and the stylesheet (``templates/style.css``)
ship as package data and load through :mod:`importlib.resources`, so an installed wheel finds
them. Autoescape is on: every string of the document is HTML-escaped, and relative ``*.html``
paths in texts marked ``links`` become links to pages beside the report. Figures are inlined as
base64 PNG; the page has no scripts and no external files.

    >>> from causalvl.reports.document import Document, Section, BulletList
    >>> doc = Document("<b>Report</b>", (Section("Summary", (BulletList(("a & b",)),)),))
    >>> page = render_html(doc)
    >>> "&lt;b&gt;Report&lt;/b&gt;" in page and "<li>a &amp; b</li>" in page
    True
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..errors import DataError
from .document import Block, Document, Grid, Section, walk
from .figures import figure_to_data_uri
from .formatting import format_number

TEMPLATE = "report.html.j2"
BLOCKS = "blocks.html.j2"
STYLESHEET = "style.css"

#: A relative path to another page beside the report (``context/index.html``); no scheme, no
#: leading slash or dot, so a link made from it can only point into the report's own folder.
RELATIVE_PAGE = re.compile(r"(?<![\w./:-])([A-Za-z0-9_][\w./-]*\.html)\b")


def stylesheet() -> str:
    """The report's CSS (package data ``causalvl/reports/templates/style.css``)."""
    return _read(STYLESHEET)


@functools.cache
def _read(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def linked_html(text: Any) -> Any:
    """Escape ``text`` for HTML and turn relative ``*.html`` paths in it into links."""
    from markupsafe import Markup, escape

    return Markup(RELATIVE_PAGE.sub(r'<a href="\1">\1</a>', str(escape(str(text)))))


def _linkify(text: Any, links: bool = False) -> Any:
    return linked_html(text) if links else str(text)


def grid_layout(grid: Grid) -> dict[str, Any]:
    """Header layout of a :class:`Grid`: ``groups`` (model name, number of its columns),
    ``starts`` (the column indices where a model's columns begin; empty for one header row)
    and ``two`` (two header rows)."""
    groups: list[list[Any]] = []
    for g, _ in grid.columns:
        if groups and groups[-1][0] == g:
            groups[-1][1] += 1
        else:
            groups.append([g, 1])
    starts: set[int] = set()
    at = 0
    for _, k in groups:
        starts.add(at)
        at += k
    two = grid.two_level
    return {"groups": [tuple(g) for g in groups], "starts": starts if two else set(), "two": two}


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The jinja2 environment: templates from the package, autoescape on."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("causalvl.reports", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["num"] = format_number
    env.filters["linkify"] = _linkify
    env.globals["grid_layout"] = grid_layout
    return env


_BLOCK_TYPES = typing.get_args(Block)


def _check_blocks(sections: tuple[Section, ...]) -> None:
    """Refuse a block type the template does not know, as :func:`render_markdown` does (the
    template would otherwise show nothing for it)."""
    for section in sections:
        for b in walk(section.blocks):
            if not isinstance(b, _BLOCK_TYPES):
                raise DataError(f"render_html cannot show a {type(b).__name__} block.")


def _figure_uri(figures: Mapping[str, Any] | None, deterministic: bool) -> Any:
    figures = dict(figures or {})

    def figure_uri(name: str) -> str | None:
        fig = figures.get(name)
        return None if fig is None else figure_to_data_uri(fig, deterministic=deterministic)

    return figure_uri


def render_html(
    document: Document,
    *,
    figures: Mapping[str, Any] | None = None,
    deterministic: bool = False,
) -> str:
    """The page as a string.

    Args:
        document: what to show.
        figures: ``{name: matplotlib Figure}`` for the document's :class:`Figure` blocks; a
            block whose figure is missing is left out.
        deterministic: encode figures without software tags, so output is reproducible.
    """
    from markupsafe import Markup

    _check_blocks(document.sections)
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            doc=document,
            css=Markup(stylesheet()),
            figure_uri=_figure_uri(figures, deterministic),
        )
    )


def render_section_html(
    section: Section,
    *,
    figures: Mapping[str, Any] | None = None,
    deterministic: bool = False,
) -> str:
    """One ``<section>`` (for a page made elsewhere), with the same markup as in
    :func:`render_html`."""
    _check_blocks((section,))
    module = (
        environment()
        .get_template(BLOCKS)
        .make_module({"figure_uri": _figure_uri(figures, deterministic)})
    )
    return str(module.section(section))


__all__ = [
    "RELATIVE_PAGE",
    "environment",
    "grid_layout",
    "linked_html",
    "render_html",
    "stylesheet",
]
