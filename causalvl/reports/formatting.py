"""Number formatting and escaping shared by the HTML, Markdown and figure writers.

One rule formats every number everywhere, so a number in ``report.json`` can be found in
``index.html`` and ``summary.md``: integers as integers, other numbers with three decimals
(scientific notation for magnitudes below 0.0005 or from 10^6 on), missing values as "—".

    >>> format_number(0.81234), format_number(12), format_number(None), format_number(3e-6)
    ('0.812', '12', '—', '3.00e-06')
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def format_number(value: Any) -> str:
    """Format a number for display (see the module docstring)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return MISSING
    if v != 0 and (abs(v) < 5e-4 or abs(v) >= 1e6):
        return f"{v:.2e}"
    text = f"{v:.3f}"
    return "0.000" if text == "-0.000" else text


def format_signed(value: Any) -> str:
    """Like :func:`format_number` with an explicit ``+`` for positive differences."""
    text = format_number(value)
    if value is not None and not isinstance(value, bool) and text[0].isdigit() and float(value) > 0:
        return "+" + text
    return text


def md_escape(value: Any) -> str:
    """Escape text for a Markdown table cell or line."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*_`[]<>#":
        text = text.replace(ch, "\\" + ch)
    return text


def mpl_text(value: Any) -> str:
    """Text safe for matplotlib labels (a ``$`` would start mathtext)."""
    return str(value).replace("$", r"\$")


__all__ = ["MISSING", "format_number", "format_signed", "md_escape", "mpl_text"]
