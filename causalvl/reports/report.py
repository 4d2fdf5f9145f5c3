"""``BiasReport``: one self-contained HTML page, a JSON file and a Markdown summary.

    >>> report = BiasReport({"plain": d_plain, "CF-VQA": d_cfvqa})   # doctest: +SKIP
    >>> paths = report.save("bias_report")                          # doctest: +SKIP
    >>> sorted(p.name for p in paths.values())                      # doctest: +SKIP
    ['index.html', 'report.json', 'summary.md']

``index.html`` has inline CSS and base64 PNG figures (no external files, no scripts), so it
can be mailed or attached to CI artefacts. ``report.json`` holds every number with its
definition, the package versions, the configurations and the seed, and loads back with
:meth:`BiasReport.from_json`. Every user-supplied string is HTML-escaped.

How a page is made: :meth:`BiasReport.document` asks the builders
(:mod:`causalvl.reports.builders`, one per result type, where every sentence is written) for
the sections of a renderer-neutral :class:`~causalvl.reports.document.Document`; the HTML
renderer (:mod:`causalvl.reports.render_html`, a jinja2 template and stylesheet shipped as
package data) and the Markdown renderer (:mod:`causalvl.reports.render_markdown`) each walk
that document. Adding a diagnostic touches the builders only (see that module's docstring).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Config, atomic_write_text, read_json
from ..diagnostics.results import (
    BlindSolvabilityAudit,
    Diagnostics,
    MetricTable,
    as_metric_table,
    makes_metric_table,
)
from ..errors import DataError
from ..runtime import package_versions
from .builders import (
    DIAGNOSTIC_SECTIONS,
    GLANCE,
    SECTION_TEXT,
    ReportView,
    audit_section,
    metric_table_section,
    numbers_section,
    provenance_section,
    summary_rows,
    summary_section,
)
from .document import Document
from .figures import figure_names, focus_split, report_figures
from .render_html import render_html, stylesheet
from .render_markdown import render_markdown

FORMAT = "causalvl.bias_report"
FORMAT_VERSION = 1

#: the report stylesheet (package data ``causalvl/reports/templates/style.css``)
CSS = stylesheet()

#: the packages whose versions ``report.json`` records, besides python, causalvl and torch
_REPORT_PACKAGES = ("transformers", "dowhy", "numpy", "pandas", "scikit-learn", "matplotlib")


def _as_tables(extra: Any) -> tuple[MetricTable, ...]:
    """Extra sections as MetricTables: a MetricTable or a result with ``to_metric_table()``
    (e.g. a :class:`~causalvl.decoding.POPEResult`), a sequence of them, or ``{title:
    {column: {metric: value}}}`` / ``{title: table or result}``."""
    if extra is None:
        return ()
    if makes_metric_table(extra):
        return (as_metric_table(extra),)
    if isinstance(extra, Mapping):
        return tuple(
            MetricTable.from_mapping(str(title), value)
            if isinstance(value, Mapping) and not makes_metric_table(value)
            else as_metric_table(
                value, what=f"extra section {title!r} (or {{column: {{metric: value}}}})"
            )
            for title, value in extra.items()
        )
    if isinstance(extra, Sequence) and not isinstance(extra, str):
        return tuple(as_metric_table(t, what="an extra_sections entry") for t in extra)
    raise DataError(
        f"extra_sections must be MetricTable objects or {{title: {{column: {{metric: value}}}}}}, "
        f"got {type(extra).__name__}."
    )


@dataclass
class BiasReport:
    """A bias report over one or several models, each with one or several splits.

    Args:
        diagnostics: one :class:`~causalvl.Diagnostics`, or ``{model name: Diagnostics}``
            shown side by side (e.g. ``{"plain": d0, "CF-VQA": d1, "LMH": d2}``).
        title: page title.
        baseline: the model others are compared with in the headline (default: the first).
        extra_sections: more tables, e.g. hallucination (POPE) results: a sequence of
            :class:`~causalvl.MetricTable` or results with ``to_metric_table()`` (such as a
            :class:`~causalvl.POPEResult`), or ``{title: {column: {metric: value}}}``. Tables
            in each Diagnostics' ``extras`` are shown too.
        audit: an optional :class:`BlindSolvabilityAudit` of the benchmark.
        config: the run's configuration (a Config or a JSON-ready mapping), recorded verbatim.
        seed: the run's seed, recorded.
        notes: free text shown under the title.
        deterministic: leave out timestamps (and PNG software tags) so output is reproducible.
        provenance: recorded versions / time; filled in automatically when ``None``.

    Example:
        >>> from causalvl.diagnostics.results import Diagnostics, SplitDiagnostics
        >>> d = Diagnostics(splits={"ood": SplitDiagnostics(name="ood", distribution="ood",
        ...                                                   n=10, accuracy=0.4)})
        >>> html = BiasReport({"plain": d}, deterministic=True).to_html()
        >>> "0.400" in html
        True
    """

    diagnostics: Mapping[str, Diagnostics] | Diagnostics
    title: str = "Bias report"
    baseline: str | None = None
    extra_sections: Any = ()
    audit: BlindSolvabilityAudit | None = None
    config: Any = None
    seed: int | None = None
    notes: str = ""
    deterministic: bool = False
    provenance: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.diagnostics, Diagnostics):
            self.diagnostics = {"model": self.diagnostics}
        if not isinstance(self.diagnostics, Mapping) or not self.diagnostics:
            raise DataError(
                "BiasReport needs a Diagnostics or a non-empty {model name: Diagnostics} mapping, "
                f"got {type(self.diagnostics).__name__}."
            )
        models: dict[str, Diagnostics] = {}
        for name, d in self.diagnostics.items():
            if not isinstance(d, Diagnostics):
                raise DataError(
                    f"BiasReport: model {name!r} maps to a {type(d).__name__}; expected the "
                    "Diagnostics returned by causalvl.diagnose."
                )
            models[str(name)] = d
        self.diagnostics = models
        if self.baseline is None:
            self.baseline = next(iter(models))
        elif self.baseline not in models:
            raise DataError(f"baseline {self.baseline!r} is not one of the models {list(models)}.")
        self.extra_sections = _as_tables(self.extra_sections)
        if isinstance(self.config, Config):
            self.config = self.config.to_dict()
        if self.config is not None:
            try:
                json.dumps(self.config)
            except TypeError as exc:
                raise DataError(
                    f"BiasReport.config must be JSON-ready (a Config or plain dict): {exc}."
                ) from exc
        if self.provenance is None:
            prov: dict[str, Any] = {
                "versions": package_versions(_REPORT_PACKAGES),
                "python": platform.python_version(),
            }
            if not self.deterministic:
                prov["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                )
            self.provenance = prov

    @property
    def models(self) -> dict[str, Diagnostics]:
        """``{model name: Diagnostics}`` in display order."""
        return self.diagnostics  # type: ignore[return-value]

    # -- content ---------------------------------------------------------------------------
    def focus_split(self) -> str | None:
        """The split the headline talks about: the first OOD split, else the first split."""
        return focus_split(self.models)

    def headline(self) -> list[str]:
        """Plain-language summary sentences (numbers formatted as everywhere else).

        A fixed handful of sentences however many models there are (the model relying least on
        the language prior and on context, the best accuracy on the focus split next to the
        baseline, the ID to OOD change, the worst group); the per-model numbers are in
        :meth:`summary_rows`.
        """
        return list(self._view().headline)

    def summary_rows(self) -> tuple[list[str], list[tuple[str, list[Any]]]]:
        """The per-model summary table: ``(column names, [(model, values)])``.

        Columns: accuracy in distribution and on the focus split, their difference, the
        difference from the baseline, worst-group accuracy, agreement with the image-blind
        answer and the context flip rate on the focus split; a column no model has a value for
        is left out.
        """
        return summary_rows(self._view())

    def _view(self) -> ReportView:
        """The models, baseline and audit as the section builders read them."""
        return ReportView(self.models, str(self.baseline), self.audit)

    def document(self) -> Document:
        """The report as a renderer-neutral :class:`~causalvl.reports.document.Document`:
        the summary, one section per diagnostic (:data:`~causalvl.reports.builders.DIAGNOSTIC_SECTIONS`),
        the audit, the extra tables, every number and the provenance."""
        return self._document(self._view())

    def _document(self, view: ReportView) -> Document:
        splits = sorted({s for _, s in view.cols})
        subtitle = f"Models: {', '.join(self.models)} · splits: {', '.join(splits)}"
        created = (self.provenance or {}).get("created")
        if created:
            subtitle += f" · created {created}"
        sections = [summary_section(view)]
        sections += [s for build in DIAGNOSTIC_SECTIONS if (s := build(view)) is not None]
        if self.audit is not None:
            sections.append(audit_section(self.audit))
        sections += [metric_table_section(t, title) for title, t in self._tables()]
        sections.append(numbers_section(view))
        sections.append(
            provenance_section(
                self.provenance or {}, seed=self.seed, config=self.config, models=self.models
            )
        )
        return Document(self.title, tuple(sections), subtitle=subtitle, notes=self.notes)

    def _tables(self) -> list[tuple[str, MetricTable]]:
        """Every extra table with its displayed title: each model's ``extras`` (titled with
        the model's name when there are several models), then ``extra_sections``."""
        out = []
        for m, d in self.models.items():
            for t in d.extras:
                out.append((f"{t.title} — {m}" if len(self.models) > 1 else t.title, t))
        for t in self.extra_sections:
            out.append((t.title, t))
        return out

    def figures(self) -> dict[str, Any]:
        """The report's figures as ``matplotlib.figure.Figure`` objects, keyed by name."""
        return report_figures(self.models)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as a JSON-ready dict (every number with its definition)."""
        return self._to_dict(self._view())

    def _to_dict(self, view: ReportView) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "title": self.title,
            "baseline": self.baseline,
            "notes": self.notes,
            "deterministic": self.deterministic,
            "seed": self.seed,
            "config": self.config,
            "headline": list(view.headline),
            "focus_split": self.focus_split(),
            "models": {m: d.to_dict() for m, d in self.models.items()},
            "extra_sections": [t.to_dict() for t in self.extra_sections],
            "audit": None if self.audit is None else self.audit.to_dict(),
            "figures": figure_names(self.models),
            "provenance": dict(self.provenance or {}),
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; with ``path``, also write it atomically."""
        return self._json(self._view(), path)

    def _json(self, view: ReportView, path: str | os.PathLike | None) -> str:
        text = json.dumps(self._to_dict(view), indent=2, sort_keys=False, ensure_ascii=False)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasReport:
        """Rebuild from :meth:`to_dict` output."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise DataError(
                f"not a causalvl bias report (expected format {FORMAT!r}, got "
                f"{data.get('format') if isinstance(data, Mapping) else type(data).__name__!r})."
            )
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(
                f"report format version {data['format_version']} is newer than this causalvl "
                f"({__version__}) reads ({FORMAT_VERSION}); upgrade causalvl."
            )
        audit = data.get("audit")
        return cls(
            {m: Diagnostics.from_dict(d) for m, d in data["models"].items()},
            title=data.get("title", "Bias report"),
            baseline=data.get("baseline"),
            extra_sections=tuple(MetricTable.from_dict(t) for t in data.get("extra_sections", ())),
            audit=None if audit is None else BlindSolvabilityAudit.from_dict(audit),
            config=data.get("config"),
            seed=data.get("seed"),
            notes=data.get("notes", ""),
            deterministic=bool(data.get("deterministic", False)),
            provenance=data.get("provenance"),
        )

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> BiasReport:
        """Load a report from ``report.json`` (a path, or the JSON text)."""
        path = Path(str(text_or_path))
        if not str(text_or_path).lstrip().startswith("{") and path.is_dir():
            text_or_path = path / "report.json"
        return cls.from_dict(read_json("BiasReport", text_or_path, DataError))

    def save(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``index.html``, ``report.json`` and ``summary.md`` (atomically) into a folder.

        Returns:
            ``{"html": path, "json": path, "markdown": path}``.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "html": folder / "index.html",
            "json": folder / "report.json",
            "markdown": folder / "summary.md",
        }
        view = self._view()  # the headline and the document are worked out once
        document = self._document(view)
        self._json(view, paths["json"])
        self._html(document, paths["html"])
        self._markdown(document, paths["markdown"], brief=True)
        return paths

    # -- HTML ------------------------------------------------------------------------------
    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """The self-contained HTML page; with ``path``, also write it atomically."""
        return self._html(self.document(), path)

    def _html(self, document: Document, path: str | os.PathLike | None) -> str:
        html_text = render_html(document, figures=self.figures(), deterministic=self.deterministic)
        if path is not None:
            atomic_write_text(path, html_text)
        return html_text

    # -- Markdown --------------------------------------------------------------------------
    def to_markdown(self, path: str | os.PathLike | None = None, *, brief: bool = True) -> str:
        """A Markdown summary (headline, comparison tables, causal estimates, extra tables);
        ``brief=False`` renders the whole document. With ``path``, also write it atomically."""
        return self._markdown(self.document(), path, brief=brief)

    def _markdown(self, document: Document, path: str | os.PathLike | None, *, brief: bool) -> str:
        text = render_markdown(document, brief=brief)
        text += "\nFull numbers with definitions: report.json; figures: index.html.\n"
        if path is not None:
            atomic_write_text(path, text)
        return text


__all__ = ["BiasReport", "CSS", "FORMAT", "FORMAT_VERSION", "GLANCE", "SECTION_TEXT"]
