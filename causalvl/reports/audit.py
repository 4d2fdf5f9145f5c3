"""The blind-solvability audit as HTML (a report section or a page of its own) and as text.

The HTML goes through the report's document path: :func:`~causalvl.reports.builders.audit_section`
builds the section and :mod:`~causalvl.reports.render_html` renders it.
"""

from __future__ import annotations

from ..diagnostics.results import BlindSolvabilityAudit
from .builders import audit_section
from .document import Document
from .render_html import render_html, render_section_html


def audit_section_html(a: BlindSolvabilityAudit, *, anchor: str = "audit") -> str:
    """One ``<section>``: protocol, per-scorer and per-category accuracy, named cues, notes
    (the report's own audit section, :func:`~causalvl.reports.builders.audit_section`)."""
    return render_section_html(audit_section(a, anchor=anchor))


def audit_page_html(a: BlindSolvabilityAudit, title: str | None = None) -> str:
    """A standalone HTML page holding the audit section (same template and stylesheet as
    the bias report)."""
    title = title or f"Blind-solvability audit: {a.benchmark}"
    return render_html(Document(title, (audit_section(a),)))


def audit_text(a: BlindSolvabilityAudit, *, max_cues: int = 12) -> str:
    """The audit as plain text for the command line."""
    p = dict(a.protocol)
    lines = [
        f"blind-solvability audit of {a.benchmark}: {a.n} {'pairs' if a.mode == 'pairwise' else 'items'}, "
        f"{p.get('evaluation', 'cross-validation')}"
        + (
            f" ({a.folds} folds"
            + (
                f", grouped by {p.get('grouping')})"
                if not str(p.get("grouping", "none")).startswith("none")
                else ")"
            )
            if a.folds
            else ""
        ),
    ]
    labels = {
        "majority": "most common answer overall",
        "majority_per_question_type": "most common answer per question type",
    }
    width = max((len(labels.get(n, n)) for n in a.scorers), default=6)
    for s in a.scorers.values():
        lines.append(
            f"  {labels.get(s.name, s.name):<{width}}  macro {s.macro_accuracy:.3f}   accuracy {s.accuracy:.3f} "
            f"[{s.ci_low:.3f}, {s.ci_high:.3f}]  n={s.n}"
        )
        if len(s.categories) > 1:
            for c, cs in s.categories.items():
                lines.append(
                    f"  {'':<{width}}    {c}: {cs.accuracy:.3f} [{cs.ci_low:.3f}, "
                    f"{cs.ci_high:.3f}] n={cs.n}"
                )
    lines.append(a.summary())
    if a.cues:
        lines.append("cues:")
        for c in a.cues[:max_cues]:
            ex = dict(c.example)
            example = (
                f"e.g. true {ex.get('true')!r} vs negative {ex.get('negative')!r}"
                if "true" in ex
                else f"e.g. {ex.get('text')!r} -> {ex.get('label')!r}"
            )
            lines.append(f"  [{c.category}, {c.scorer}] {c.description}; {example}")
        if len(a.cues) > max_cues:
            lines.append(f"  ... {len(a.cues) - max_cues} more in the JSON")
    for n in a.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
