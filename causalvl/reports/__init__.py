"""Reports: a self-contained HTML page, JSON and Markdown from one or several Diagnostics.

matplotlib is imported only when figures are drawn.
"""

from .formatting import format_number
from .report import BiasReport

__all__ = ["BiasReport", "format_number"]
