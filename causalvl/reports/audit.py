"""The blind-solvability audit as HTML (a report section or a page of its own) and as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..diagnostics.results import BlindSolvabilityAudit
from .formatting import esc, format_number


def _table(header: Sequence[str], rows: Sequence[Sequence[tuple[Any, str]]]) -> str:
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        cells = "".join(
            f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"
            for text, cls in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _ci(lo: float, hi: float) -> str:
    return f"[{format_number(lo)}, {format_number(hi)}]"


def audit_section_html(a: BlindSolvabilityAudit, *, anchor: str = "audit") -> str:
    """One ``<section>``: protocol, per-scorer and per-category accuracy, named cues, notes."""
    from .report import SECTION_TEXT

    parts = [
        f'<section id="{esc(anchor)}"><h2>Benchmark audit: what a blind model solves</h2>',
        f'<p class="explain">{esc(SECTION_TEXT["audit"])}</p>',
        f"<p><strong>{esc(a.summary())}</strong></p>",
    ]
    p = dict(a.protocol)
    facts = [
        ("benchmark", a.benchmark),
        ("items scored", a.n),
        ("mode", p.get("mode", a.mode)),
        ("evaluation", p.get("evaluation", "cross-validation")),
        ("folds", a.folds),
        ("grouping", p.get("grouping", "")),
        ("independent groups", p.get("n_groups", "")),
        ("seed", a.seed),
        ("text", a.text_source),
    ]
    parts.append(_table(["protocol", ""], [[(k, ""), (format_number(v), "")] for k, v in facts]))
    if a.scorers:
        cats = sorted({c for s in a.scorers.values() for c in s.categories})
        header = ["scorer", "macro accuracy", "accuracy [95% CI]", "n", *cats]
        rows = []
        for s in a.scorers.values():
            row = [
                (s.name, ""),
                (format_number(s.macro_accuracy), "num"),
                (f"{format_number(s.accuracy)} {_ci(s.ci_low, s.ci_high)}", "num"),
                (s.n, "num"),
            ]
            for c in cats:
                cs = s.categories.get(c)
                row.append(
                    ("n/a", "num")
                    if cs is None
                    else (f"{format_number(cs.accuracy)} {_ci(cs.ci_low, cs.ci_high)}", "num")
                )
            rows.append(row)
        parts.append("<h3>Held-out accuracy of each blind scorer</h3>")
        parts.append('<div class="scroll">' + _table(header, rows) + "</div>")
        desc = [[(s.name, ""), (s.description, "def")] for s in a.scorers.values()]
        parts.append(_table(["scorer", "what it sees"], desc))
        counts = {c: next(iter(a.scorers.values())).categories[c].n for c in cats}
        parts.append(
            '<p class="explain">Items per category: '
            + esc(", ".join(f"{c} {n}" for c, n in counts.items()))
            + ".</p>"
        )
    parts.append("<h3>Named cues</h3>")
    if a.cues:
        rows = []
        for c in a.cues:
            ex = dict(c.example)
            example = (
                f"true: {ex.get('true')!r} / negative: {ex.get('negative')!r}"
                if "true" in ex
                else f"{ex.get('text')!r} → {ex.get('label')!r}"
            )
            rows.append(
                [
                    (c.category, ""),
                    (c.scorer, ""),
                    (c.description, ""),
                    (format_number(c.weight), "num"),
                    (example, "def"),
                ]
            )
        parts.append(_table(["category", "scorer", "cue", "weight", "example"], rows))
    else:
        parts.append(
            '<p class="explain">No cue is named: no scorer is significantly above chance in a '
            "category large enough to name one.</p>"
        )
    if a.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in a.notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def audit_page_html(a: BlindSolvabilityAudit, title: str | None = None) -> str:
    """A standalone HTML page holding :func:`audit_section_html`."""
    from .report import CSS

    title = title or f"Blind-solvability audit: {a.benchmark}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1></header>{audit_section_html(a)}</main></body></html>\n"
    )


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
