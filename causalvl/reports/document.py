"""The renderer-neutral report document: what a report says, not how a format shows it.

Builders (:mod:`causalvl.reports.builders`) turn results into a :class:`Document`; the HTML
renderer (:mod:`causalvl.reports.render_html`) and the Markdown renderer
(:mod:`causalvl.reports.render_markdown`) each walk it once. Every node is a frozen dataclass
holding plain text and numbers; escaping is the renderers' job, so builders never write markup.

    >>> doc = Document(
    ...     title="Bias report",
    ...     sections=(Section(title="Summary", blocks=(BulletList(("Accuracy 0.812.",)),)),),
    ... )
    >>> [s.title for s in doc.sections]
    ['Summary']

Blocks:

=================  ===============================================================
:class:`Paragraph`  a run of :class:`Text` spans (bold, links to ``*.html`` pages)
:class:`Heading`    a sub-heading inside a section
:class:`BulletList` a list of sentences
:class:`Table`      rows of pre-formatted :class:`Cell` text (with a style)
:class:`Grid`       a metric x column table of raw numbers, with definitions
:class:`Figure`     a named figure (drawn by the renderer that shows figures)
:class:`Details`    detail a short summary can leave out (folded in HTML)
=================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import DataError

CellStyle = Literal["", "num", "def", "pass", "fail"]
ParagraphStyle = Literal["plain", "explain", "footer"]


@dataclass(frozen=True)
class Text:
    """A span of text. ``strong`` shows it in bold; with ``links``, relative ``*.html`` paths
    in it (``context/index.html``) become links to those pages beside the report."""

    text: str
    strong: bool = False
    links: bool = False


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of spans. ``style``: ``"plain"``, ``"explain"`` (muted prose that explains
    a section or a table) or ``"footer"``. ``brief``: a short summary shows it (``False`` for
    background prose that only the full page needs)."""

    spans: tuple[Text, ...]
    style: ParagraphStyle = "plain"
    brief: bool = True
    kind: ClassVar[str] = "paragraph"

    @classmethod
    def of(
        cls,
        text: str,
        style: ParagraphStyle = "plain",
        *,
        links: bool = False,
        brief: bool = True,
    ) -> Paragraph:
        """A paragraph of one span."""
        return cls((Text(str(text), links=links),), style, brief)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.spans)


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section."""

    text: str
    kind: ClassVar[str] = "heading"


@dataclass(frozen=True)
class BulletList:
    """A list of sentences."""

    items: tuple[str, ...]
    kind: ClassVar[str] = "bullets"


@dataclass(frozen=True)
class Cell:
    """A table cell: display text and its style (``"num"`` right-aligned numbers, ``"def"``
    a definition, ``"pass"`` / ``"fail"`` a verdict)."""

    text: str
    style: CellStyle = ""


@dataclass(frozen=True)
class Table:
    """A table of formatted text. ``scroll``: the table may be wider than the page."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    scroll: bool = False
    kind: ClassVar[str] = "table"

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.header):
                raise DataError(
                    f"table row has {len(row)} cells for {len(self.header)} columns: {row!r}"
                )


@dataclass(frozen=True)
class Grid:
    """A table of numbers: one row per label, one column per ``(group, sub)`` heading.

    ``columns`` are ``(model, split or None)``: a renderer may write a model's name once over
    its splits. ``rows`` hold raw values (numbers, ``None`` for missing, or a short string such
    as ``"n/a"``) that every renderer formats with :func:`~causalvl.reports.format_number`.
    ``definitions`` are ``(label, definition)`` pairs listed under the table.
    """

    columns: tuple[tuple[str, str | None], ...]
    rows: tuple[tuple[str, tuple[Any, ...]], ...]
    definitions: tuple[tuple[str, str], ...] = ()
    stub: str = "metric"
    kind: ClassVar[str] = "grid"

    def __post_init__(self) -> None:
        for label, values in self.rows:
            if len(values) != len(self.columns):
                raise DataError(
                    f"grid row {label!r} has {len(values)} values for {len(self.columns)} columns"
                )

    @property
    def two_level(self) -> bool:
        """Whether any column has a sub-heading (a split under its model)."""
        return any(sub is not None for _, sub in self.columns)


@dataclass(frozen=True)
class Figure:
    """A figure by name (see :func:`causalvl.reports.figures.report_figures`) and its
    caption. Renderers that show figures look the name up; a missing figure is left out."""

    name: str
    caption: str
    kind: ClassVar[str] = "figure"


@dataclass(frozen=True)
class Details:
    """Detail under a one-line summary: folded in HTML, left out of a short Markdown summary.
    ``group``: a fold that holds further folds."""

    summary: str
    blocks: tuple[Block, ...]
    group: bool = False
    kind: ClassVar[str] = "details"


Block = Paragraph | Heading | BulletList | Table | Grid | Figure | Details


@dataclass(frozen=True)
class Section:
    """A titled part of the report.

    Args:
        title: the section heading.
        blocks: its content, in order.
        anchor: the HTML ``id`` (a link target), or ``None``.
        style: ``""``, ``"headline"`` (the summary at the top) or ``"extra"`` (a user table).
        brief: whether a short summary (``summary.md``) includes it.
    """

    title: str
    blocks: tuple[Block, ...] = ()
    anchor: str | None = None
    style: str = ""
    brief: bool = False


@dataclass(frozen=True)
class Document:
    """A whole report: a title, a subtitle line, notes (relative ``*.html`` paths become
    links) and its sections."""

    title: str
    sections: tuple[Section, ...] = ()
    subtitle: str = ""
    notes: str = ""

    def section(self, title: str) -> Section:
        """The first section whose title starts with ``title``."""
        for s in self.sections:
            if s.title.startswith(title):
                return s
        raise KeyError(f"no section titled {title!r}; sections: {[s.title for s in self.sections]}")


def walk(blocks: tuple[Block, ...]) -> Iterator[Block]:
    """Every block, depth first, including those inside :class:`Details`."""
    for b in blocks:
        yield b
        if isinstance(b, Details):
            yield from walk(b.blocks)


__all__ = [
    "Block",
    "BulletList",
    "Cell",
    "Details",
    "Document",
    "Figure",
    "Grid",
    "Heading",
    "Paragraph",
    "Section",
    "Table",
    "Text",
    "walk",
]
