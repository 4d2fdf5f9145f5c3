"""Reports: a self-contained HTML page, JSON and Markdown from one or several Diagnostics.

:class:`BiasReport` builds one :class:`~causalvl.reports.document.Document` (``builders``:
one builder per result type) that ``render_html`` (jinja2 templates shipped as package data)
and ``render_markdown`` walk. matplotlib is imported only when figures are drawn.
"""

from .formatting import format_number
from .report import BiasReport

__all__ = ["BiasReport", "format_number"]
