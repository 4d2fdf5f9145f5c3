"""The Markdown renderer: a walk over a report :class:`~causalvl.reports.document.Document`.

With ``brief=True`` (``summary.md``) it shows the sections marked ``brief`` and, in them,
everything but figures, folded detail, background paragraphs and definition lists; with
``brief=False`` it shows the whole document (figures excepted: they live in the HTML page).
Every string is Markdown-escaped; relative ``*.html`` paths in texts marked ``links`` become
links.

    >>> from causalvl.reports.document import Document, Section, Grid
    >>> grid = Grid(columns=(("random", None),), rows=(("f1", (0.8,)),))
    >>> print(render_markdown(Document("POPE", (Section("Scores", (grid,), brief=True),))))
    # POPE
    <BLANKLINE>
    ## Scores
    <BLANKLINE>
    | metric | random |
    |---|---|
    | f1 | 0.800 |
    <BLANKLINE>
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DataError
from .document import (
    Block,
    BulletList,
    Details,
    Document,
    Figure,
    Grid,
    Heading,
    Paragraph,
    Table,
)
from .formatting import format_number, md_escape
from .render_html import RELATIVE_PAGE


def linked_md(text: str) -> str:
    """Escape ``text`` for Markdown and turn relative ``*.html`` paths in it into links."""
    parts = RELATIVE_PAGE.split(str(text))  # odd entries are the paths
    return "".join(
        f"[{md_escape(part)}]({part})" if i % 2 else md_escape(part) for i, part in enumerate(parts)
    )


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_row([md_escape(h) for h in header]), "|" + "---|" * len(header)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _paragraph(p: Paragraph) -> str:
    out = []
    for s in p.spans:
        text = linked_md(s.text) if s.links else md_escape(s.text)
        out.append(f"**{text}**" if s.strong and text else text)
    return "".join(out)


def _blocks(blocks: Sequence[Block], brief: bool) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Paragraph):
            if b.brief or not brief:
                out.append(_paragraph(b))
        elif isinstance(b, Heading):
            out.append(f"### {md_escape(b.text)}")
        elif isinstance(b, BulletList):
            out.append("\n".join(f"- {md_escape(item)}" for item in b.items))
        elif isinstance(b, Table):
            out.append(_table(b.header, [[md_escape(c.text) for c in row] for row in b.rows]))
        elif isinstance(b, Grid):
            header = [b.stub, *(g if sub is None else f"{g} / {sub}" for g, sub in b.columns)]
            rows = [[label, *map(format_number, values)] for label, values in b.rows]
            out.append(_table(header, [[md_escape(c) for c in r] for r in rows]))
            if b.definitions and not brief:
                out.append(
                    "\n".join(f"- **{md_escape(k)}**: {md_escape(d)}" for k, d in b.definitions)
                )
        elif isinstance(b, Details):
            if not brief:
                out.append(f"**{md_escape(b.summary)}**")
                out += _blocks(b.blocks, brief)
        elif isinstance(b, Figure):
            continue  # figures are in the HTML page
        else:  # a block type this renderer does not know is a bug, not a silent gap
            raise DataError(f"render_markdown cannot show a {type(b).__name__} block.")
    return [x for x in out if x]


def render_markdown(document: Document, *, brief: bool = True) -> str:
    """The document as Markdown (see the module docstring for ``brief``)."""
    parts = [f"# {md_escape(document.title)}"]
    if document.subtitle and not brief:
        parts.append(md_escape(document.subtitle))
    if document.notes:
        parts.append(linked_md(document.notes))
    for section in document.sections:
        if brief and not section.brief:
            continue
        parts.append(f"## {md_escape(section.title)}")
        parts += _blocks(section.blocks, brief)
    return "\n\n".join(parts) + "\n"


__all__ = ["linked_md", "render_markdown"]
