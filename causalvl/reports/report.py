"""``BiasReport``: one self-contained HTML page, a JSON file and a Markdown summary.

    >>> report = BiasReport({"plain": d_plain, "CF-VQA": d_cfvqa})   # doctest: +SKIP
    >>> paths = report.save("bias_report")                          # doctest: +SKIP
    >>> sorted(p.name for p in paths.values())                      # doctest: +SKIP
    ['index.html', 'report.json', 'summary.md']

``index.html`` has inline CSS and base64 PNG figures (no external files, no scripts), so it
can be mailed or attached to CI artefacts. ``report.json`` holds every number with its
definition, the package versions, the configurations and the seed, and loads back with
:meth:`BiasReport.from_json`. Every user-supplied string is HTML-escaped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Config, atomic_write_text, read_json
from ..diagnostics.results import (
    DISTRIBUTION_LABELS,
    EFFECT_NAMES,
    BlindSolvabilityAudit,
    Diagnostics,
    Metric,
    MetricTable,
    SplitDiagnostics,
)
from ..errors import DataError
from .figures import figure_names, figure_to_data_uri, focus_split, report_figures
from .formatting import esc, format_number, format_signed, md_escape

FORMAT = "causalvl.bias_report"
FORMAT_VERSION = 1

_PACKAGES = (
    "causalvl",
    "torch",
    "transformers",
    "dowhy",
    "numpy",
    "pandas",
    "scikit-learn",
    "matplotlib",
)

#: the rows of the at-a-glance comparison table: (metric key, short label)
GLANCE: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("groups.worst_group_accuracy", "worst-group accuracy"),
    ("groups.average_over_groups", "mean accuracy over groups"),
    ("bias.accuracy_conflicting", "accuracy, bias-conflicting"),
    ("bias.gap", "aligned − conflicting gap"),
    ("language_prior.prior_agreement", "agreement with image-blind answer"),
    ("language_prior.image_swap_flip_rate", "flip rate, image swapped"),
    ("context.flip_rate", "flip rate, context replaced"),
    ("calibration.ece", "expected calibration error"),
)

SECTION_TEXT: dict[str, str] = {
    "glance": "Each column is one model on one evaluation split. In-distribution (ID) data "
    "follows the training statistics, so a shortcut still works there; out-of-distribution "
    "(OOD) data breaks the shortcut, so only a model that looks at the image keeps its "
    "accuracy. The gap between the two is the clearest sign of a spurious correlation.",
    "groups": "Examples are split into groups (for instance by question type and by whether "
    "the answer agrees with the training prior). The average accuracy can hide a group the "
    "model fails completely, so we report the worst group too. Three averages are in use in "
    "the literature; each is defined below.",
    "language_prior": "A model relies on the language prior when it answers from the question "
    "alone. We run the same model again with the image removed and with the image swapped for "
    "another example's. A model that uses the image disagrees with its image-blind self, its "
    "answer distribution moves (large KL), and its answer flips when the image is swapped.",
    "context": "A model relies on context when its answer about a target object changes "
    "because the surroundings change. We replace only the context region and leave the target "
    "as it was; a model that looks at the target should keep its answer.",
    "calibration": "A calibrated model is right 80% of the time when it says 80%. The "
    "reliability diagram plots accuracy against stated confidence (the diagonal is perfect); "
    "the expected calibration error (ECE) summarises the distance. Shortcut models are often "
    "confidently wrong on bias-conflicting examples.",
    "effects": "Wrapped models that contrast a factual and a counterfactual pass report causal "
    "effects on the answer logits: the total effect (TE) of the inputs, the natural direct "
    "effect (NDE) of the question alone, and the total indirect effect (TIE = TE − NDE), the "
    "part that goes through the image, which CF-VQA uses as its debiased prediction.",
    "compositional": "Compositional tests ask whether a model understands word order and "
    "relations rather than a bag of words: Winoground pairs two images with two captions of "
    "the same words; foils are captions with one word changed.",
    "causal": "A causal estimate of how much the spurious cue itself (the answer agreeing with "
    "the training prior) changes the chance of a correct answer, after adjusting for the "
    "listed common causes (dowhy, backdoor adjustment). Each estimate is checked by refuters: a "
    "refuter passes when it finds no evidence against the estimate (its p-value is not "
    "significant). A low p-value means the check found a problem, not that the effect is real.",
    "audit": "How much of the benchmark a model that never sees the image can solve. "
    "Caption-vs-negative benchmarks are scored pairwise: each pair is shown in a random order "
    "and a blind scorer must say which text is true (chance 0.5); folds are grouped so that an "
    "image, or a text that recurs, never spans training and test. Accuracy well above chance "
    "means the texts give the answer away; the named cues say what gives it away.",
}

CSS = """
:root { --ink:#1d2433; --muted:#5b6478; --line:#dde2ea; --accent:#0072B2; --bg:#f6f8fb;
        --good:#1a7f37; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color:var(--ink); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:28px 28px 60px; }
header h1 { margin:0 0 4px; font-size:28px; }
header p { margin:0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin:18px 0; overflow-x:auto; }
.scroll { overflow-x:auto; max-width:100%; }
h2 { font-size:20px; margin:0 0 8px; }
h3 { font-size:16px; margin:18px 0 6px; }
p.explain { color:var(--muted); margin:0 0 12px; max-width:80ch; }
.headline { border-left:5px solid var(--accent); }
.headline ul { margin:6px 0 0; padding-left:20px; }
.headline li { margin:4px 0; }
table { border-collapse:collapse; margin:8px 0 4px; font-size:14px; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; text-align:left;
         vertical-align:top; }
th { background:#eef2f7; font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.def { color:var(--muted); font-size:13px; max-width:60ch; }
tr:nth-child(even) td { background:#fafbfd; }
table.grid { font-size:13px; }
table.grid th, table.grid td { padding:4px 8px; }
table.grid thead th { text-align:right; vertical-align:bottom; max-width:10em; }
table.grid thead th.split { white-space:nowrap; max-width:none; }
table.grid thead th.model { max-width:none; }
table.grid thead th.model { text-align:center; border-bottom:none; }
table.grid thead th.split { font-weight:500; color:var(--muted); }
table.grid .stub { position:sticky; left:0; z-index:1; background:#fff; text-align:left;
                   min-width:14em; max-width:20em; }
table.grid thead .stub { background:#eef2f7; }
table.grid tr:nth-child(even) td.stub { background:#fafbfd; }
table.grid .start { border-left:1px solid var(--line); }
dl.defs { display:grid; grid-template-columns:minmax(10em, max-content) 1fr; gap:2px 14px;
          margin:4px 0 14px; font-size:12.5px; line-height:1.45; color:var(--muted);
          max-width:110ch; }
dl.defs dt { color:var(--ink); }
dl.defs dd { margin:0; }
table.summary td.best { font-weight:600; }
.headline p { margin:6px 0; max-width:90ch; }
figure { margin:10px 0; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px;
             background:#fff; }
figcaption { color:var(--muted); font-size:13px; }
details { margin:8px 0; }
summary { cursor:pointer; color:var(--accent); }
details.group > details { margin-left:1.2em; }
.pass { color:var(--good); font-weight:600; }
.fail { color:var(--bad); font-weight:600; }
.tag { display:inline-block; font-size:12px; padding:1px 7px; border-radius:9px;
       background:#eef2f7; color:var(--muted); margin-left:6px; }
footer { color:var(--muted); font-size:12px; margin-top:24px; }
"""


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        if name == "causalvl":
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _as_tables(extra: Any) -> tuple[MetricTable, ...]:
    if extra is None:
        return ()
    if isinstance(extra, MetricTable):
        return (extra,)
    if isinstance(extra, Mapping):
        out = []
        for title, value in extra.items():
            if isinstance(value, MetricTable):
                out.append(value)
            elif isinstance(value, Mapping):
                out.append(MetricTable.from_mapping(str(title), value))
            else:
                raise DataError(
                    f"extra section {title!r} must be a MetricTable or {{column: {{metric: "
                    f"value}}}}, got {type(value).__name__}."
                )
        return tuple(out)
    if isinstance(extra, Sequence) and not isinstance(extra, str):
        out = []
        for t in extra:
            if not isinstance(t, MetricTable):
                raise DataError(
                    f"extra_sections entries must be MetricTable objects, got {type(t).__name__}."
                )
            out.append(t)
        return tuple(out)
    raise DataError(
        f"extra_sections must be MetricTable objects or {{title: {{column: {{metric: value}}}}}}, "
        f"got {type(extra).__name__}."
    )


@dataclasses.dataclass
class BiasReport:
    """A bias report over one or several models, each with one or several splits.

    Args:
        diagnostics: one :class:`~causalvl.Diagnostics`, or ``{model name: Diagnostics}``
            shown side by side (e.g. ``{"plain": d0, "CF-VQA": d1, "LMH": d2}``).
        title: page title.
        baseline: the model others are compared with in the headline (default: the first).
        extra_sections: more tables, e.g. hallucination (POPE) results: a sequence of
            :class:`~causalvl.MetricTable` or ``{title: {column: {metric: value}}}``. Tables in
            each Diagnostics' ``extras`` are shown too.
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
            prov: dict[str, Any] = {"versions": _versions(), "python": platform.python_version()}
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
        models = self.models
        split = self.focus_split()
        out: list[str] = []
        if split is None:
            return out
        base = str(self.baseline)
        on = {m: d.splits[split] for m, d in models.items() if split in d.splits}
        ood = any(sp.distribution == "ood" for sp in on.values())
        out += _accuracy_sentences(on, base, split, ood)
        prior = {
            m: sp.language_prior.prior_agreement
            for m, sp in on.items()
            if sp.language_prior is not None and sp.language_prior.prior_agreement is not None
        }
        if len(prior) == 1:  # one model: state its number, compare it with nothing
            ((m, v),) = prior.items()
            out.append(
                f"{m}'s answer equals its image-blind answer on {format_number(v)} of the "
                f"{split} examples (1 would mean the image never changes the answer)."
            )
        elif prior:
            best, value, tie = _extreme(prior, lowest=True)
            if tie:
                out.append(
                    f"Every model's answer equals its image-blind answer on {value} of the "
                    f"{split} examples: none relies less on the language prior than the others."
                )
            else:
                verb = "relies" if len(best) == 1 else "rely"
                text = (
                    f"{_names(best)} {verb} least on the language prior: the answer equals the "
                    f"image-blind answer on {value} of the {split} examples"
                )
                if base in prior and base not in best:
                    text += f", vs {format_number(prior[base])} for {base}"
                out.append(text + ".")
        not_applicable = {
            m: sp.language_prior.not_applicable
            for m, sp in on.items()
            if sp.language_prior is not None and sp.language_prior.not_applicable
        }
        if not_applicable:
            out.append(
                f"Agreement with the image-blind answer does not apply to "
                f"{_names(list(not_applicable))} (n/a): {next(iter(not_applicable.values()))}."
            )
        flips = {
            m: sp.context.flip_rate
            for m, sp in on.items()
            if sp.context is not None and sp.context.flip_rate is not None
        }
        if len(flips) == 1:
            ((m, v),) = flips.items()
            out.append(
                f"{m}'s answer flips on {format_number(v)} of the {split} examples when only the "
                "context is replaced (0 would mean the context never changes the answer)."
            )
        elif flips:
            best, value, tie = _extreme(flips, lowest=True)
            if tie:
                out.append(
                    f"Every model's answer flips on {value} of the {split} examples when only "
                    "the context is replaced."
                )
            else:
                verb = "relies" if len(best) == 1 else "rely"
                text = (
                    f"{_names(best)} {verb} least on context: the answer flips on {value} of the "
                    f"{split} examples when only the context is replaced"
                )
                if base in flips and base not in best:
                    text += f", vs {format_number(flips[base])} for {base}"
                out.append(text + ".")
        changes = {
            m: sp.accuracy - idsp.accuracy
            for m, sp in on.items()
            if sp.distribution == "ood" and (idsp := models[m].split_of("id")) is not None
        }
        if changes:
            drops = [m for m, c in changes.items() if c < 0 and format_signed(c) != "0.000"]
            worst = min(changes, key=lambda m: changes[m])
            if drops:
                out.append(
                    f"Accuracy falls from in distribution to {split} for {len(drops)} of "
                    f"{len(changes)} model{'s' if len(changes) > 1 else ''} (largest change: "
                    f"{worst}, {format_signed(changes[worst])})."
                )
            else:
                out.append(f"No model's accuracy falls from in distribution to {split}.")
        worst_group = {
            m: sp.groups.worst_group_accuracy
            for m, sp in on.items()
            if sp.groups is not None and sp.groups.worst_group_accuracy is not None
        }
        sized = [sp.groups for sp in on.values() if sp.groups is not None]
        if sized:
            size = max(g.min_group_size for g in sized)
            small = max(len(g.small_groups) for g in sized)
            if size > 1:
                out.append(
                    f"Worst-group accuracy on {split} counts groups of at least {size} examples"
                    + (
                        f"; {small} smaller group{'s are' if small != 1 else ' is'} listed "
                        "separately."
                        if small
                        else "."
                    )
                )
        if len(worst_group) > 1:
            best, value, tie = _extreme(worst_group, lowest=False)
            if tie:
                out.append(f"Every model's worst-group accuracy on {split} is {value}.")
            else:
                out.append(f"Highest worst-group accuracy on {split}: {_names(best)} ({value}).")
        estimates = [
            (m, sp.name, sp.effect_estimate)
            for m, d in models.items()
            for sp in d.splits.values()
            if sp.effect_estimate is not None
        ]
        if len(estimates) <= 2:
            for m, name, e in estimates:
                passed = sum(r.passed is True for r in e.refutations)
                out.append(
                    f"{m} on {name}: the spurious cue ({e.treatment}) changes {e.outcome} by "
                    f"{format_signed(e.value)} (causal estimate); {passed} of "
                    f"{len(e.refutations)} refutation checks passed."
                )
        else:  # one sentence, whatever the number of estimates
            values = [e.value for _, _, e in estimates]
            passed = sum(r.passed is True for _, _, e in estimates for r in e.refutations)
            total = sum(len(e.refutations) for _, _, e in estimates)
            out.append(
                f"Causal estimates of the spurious cue's effect ({len(estimates)} model/split "
                f"pairs) range from {format_signed(min(values))} to "
                f"{format_signed(max(values))}; {passed} of {total} refutation checks passed."
            )
        if self.audit is not None:
            out.append(f"Benchmark audit: {self.audit.summary()}")
        return out

    def summary_rows(self) -> tuple[list[str], list[tuple[str, list[Any]]]]:
        """The per-model summary table: ``(column names, [(model, values)])``.

        Columns: accuracy in distribution and on the focus split, their difference, the
        difference from the baseline, worst-group accuracy, agreement with the image-blind
        answer and the context flip rate on the focus split; a column no model has a value for
        is left out.
        """
        split = self.focus_split()
        if split is None:
            return [], []
        base = str(self.baseline)
        models = self.models
        base_sp = models[base].splits.get(split)
        cols: list[tuple[str, Any]] = []
        on = {m: d.splits[split] for m, d in models.items() if split in d.splits}
        ood = any(sp.distribution == "ood" for sp in on.values())

        def id_acc(m: str, sp: SplitDiagnostics) -> float | None:
            idsp = models[m].split_of("id")
            return None if idsp is None or idsp is sp else idsp.accuracy

        if ood:
            cols.append(("ID accuracy", id_acc))
        if not ood:
            cols.append((f"accuracy ({split})", None))
        else:
            cols.append(("OOD accuracy" + ("" if split.lower() == "ood" else f" ({split})"), None))
        if ood:
            cols.append(
                (
                    "change, OOD − ID",
                    lambda m, sp: None if id_acc(m, sp) is None else sp.accuracy - id_acc(m, sp),
                )
            )
        if len(on) > 1:  # a one-model report has nothing to compare with
            cols.append(
                (
                    f"vs {base}",
                    lambda m, sp: (
                        None if base_sp is None or m == base else sp.accuracy - base_sp.accuracy
                    ),
                )
            )
        cols += [
            (
                "worst-group accuracy",
                lambda m, sp: None if sp.groups is None else sp.groups.worst_group_accuracy,
            ),
            (
                "agreement with image-blind answer",
                lambda m, sp: (
                    None
                    if sp.language_prior is None
                    else "n/a"
                    if sp.language_prior.not_applicable
                    else sp.language_prior.prior_agreement
                ),
            ),
            (
                "flip rate, context replaced",
                lambda m, sp: None if sp.context is None else sp.context.flip_rate,
            ),
        ]
        rows = []
        for m, sp in on.items():
            rows.append((m, [sp.accuracy if get is None else get(m, sp) for _, get in cols]))
        keep = [j for j in range(len(cols)) if any(r[1][j] is not None for r in rows)]
        return [cols[j][0] for j in keep], [(m, [v[j] for j in keep]) for m, v in rows]

    def figures(self) -> dict[str, Any]:
        """The report's figures as ``matplotlib.figure.Figure`` objects, keyed by name."""
        return report_figures(self.models)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as a JSON-ready dict (every number with its definition)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "title": self.title,
            "baseline": self.baseline,
            "notes": self.notes,
            "deterministic": self.deterministic,
            "seed": self.seed,
            "config": self.config,
            "headline": self.headline(),
            "focus_split": self.focus_split(),
            "models": {m: d.to_dict() for m, d in self.models.items()},
            "extra_sections": [t.to_dict() for t in self.extra_sections],
            "audit": None if self.audit is None else self.audit.to_dict(),
            "figures": figure_names(self.models),
            "provenance": dict(self.provenance or {}),
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; with ``path``, also write it atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False)
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
        self.to_json(paths["json"])
        self.to_html(paths["html"])
        self.to_markdown(paths["markdown"])
        return paths

    # -- HTML ------------------------------------------------------------------------------
    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """The self-contained HTML page; with ``path``, also write it atomically."""
        html_text = _HtmlWriter(self).render()
        if path is not None:
            atomic_write_text(path, html_text)
        return html_text

    # -- Markdown --------------------------------------------------------------------------
    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """A short Markdown summary (headline, comparison table, refutations, extra tables)."""
        lines = [f"# {md_escape(self.title)}", ""]
        if self.notes:
            lines += [_linked_md(self.notes), ""]
        lines += ["## Summary", ""]
        lines += [f"- {md_escape(s)}" for s in self.headline()] or ["- (no results)"]
        header, summary = self.summary_rows()
        if summary:
            lines += ["", "| " + " | ".join(md_escape(h) for h in ["model", *header]) + " |"]
            lines.append("|" + "---|" * (len(header) + 1))
            for m, values in summary:
                lines.append(
                    "| " + " | ".join([md_escape(m), *[format_number(v) for v in values]]) + " |"
                )
        cols = _columns(self.models)
        rows = _glance_rows(self.models, cols)
        if rows:
            lines += ["", "## At a glance", ""]
            header = ["metric", *[f"{m} / {s}" for m, s in cols]]
            lines.append("| " + " | ".join(md_escape(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            for label, values, _ in rows:
                lines.append(
                    "| "
                    + " | ".join([md_escape(label), *[format_number(v) for v in values]])
                    + " |"
                )
        for m, d in self.models.items():
            for sp in d.splits.values():
                e = sp.effect_estimate
                if e is None:
                    continue
                lines += [
                    "",
                    f"## Causal effect of the cue: {md_escape(m)} / {md_escape(sp.name)}",
                    "",
                    f"Estimate ({md_escape(e.method)}): {format_number(e.value)}",
                    "",
                ]
                lines += [f"- {md_escape(r.name)}: {md_escape(r.verdict)}" for r in e.refutations]
        for title, table in _all_tables(self):
            lines += ["", f"## {md_escape(title)}", ""]
            if table.description:
                lines += [_linked_md(table.description), ""]
            lines.append("| metric | " + " | ".join(md_escape(c) for c in table.columns) + " |")
            lines.append("|" + "---|" * (len(table.columns) + 1))
            for row in table.rows:
                lines.append(
                    "| "
                    + " | ".join([md_escape(row.name), *[format_number(v) for v in row.values]])
                    + " |"
                )
        lines += ["", "Full numbers with definitions: report.json; figures: index.html.", ""]
        text = "\n".join(lines)
        if path is not None:
            atomic_write_text(path, text)
        return text


#: A relative path to another page beside the report (``context/index.html``); no scheme, no
#: leading slash or dot, so a link made from it can only point into the report's own folder.
_RELATIVE_PAGE = re.compile(r"(?<![\w./:-])([A-Za-z0-9_][\w./-]*\.html)\b")


def _linked_html(text: str) -> str:
    """Escape ``text`` for HTML and turn relative ``*.html`` paths in it into links."""
    return _RELATIVE_PAGE.sub(r'<a href="\1">\1</a>', esc(text))


def _linked_md(text: str) -> str:
    """Escape ``text`` for Markdown and turn relative ``*.html`` paths in it into links."""
    parts = _RELATIVE_PAGE.split(str(text))  # odd entries are the paths
    return "".join(
        f"[{md_escape(part)}]({part})" if i % 2 else md_escape(part) for i, part in enumerate(parts)
    )


def _role(name: str) -> str:
    """``"oracle"`` for an oracle (trained without the shortcut), ``"blind"`` for a blind rule
    (a model named ``blind ...`` or ``... rule``, e.g. ``"blind: majority per question type"``,
    ``"training-prior rule"``), else ``"method"``."""
    low = name.lower()
    if "oracle" in low:
        return "oracle"
    if low.startswith("blind") or low.endswith(" rule"):
        return "blind"
    return "method"


def _accuracy_sentences(
    on: Mapping[str, SplitDiagnostics], base: str, split: str, ood: bool
) -> list[str]:
    """The lead of the summary: accuracy on the focus split of the best method against the
    baseline, the blind rules and the oracle (when the report has them)."""
    out: list[str] = []
    kind = "OOD accuracy" if ood else "accuracy"
    methods = {m: sp.accuracy for m, sp in on.items() if _role(m) == "method"}
    oracles = {m: sp.accuracy for m, sp in on.items() if _role(m) == "oracle"}
    blind = {m: sp.accuracy for m, sp in on.items() if _role(m) == "blind"}
    others = {m: a for m, a in methods.items() if m != base}
    if base in on and others:
        b = on[base].accuracy
        best, value, _ = _extreme(others, lowest=False)
        gain = format_signed(others[best[0]] - b)
        if _extreme({**others, base: b}, lowest=False)[2]:
            out.append(f"Every model's {kind} on {split} is {value}.")
        elif others[best[0]] > b and format_number(others[best[0]]) != format_number(b):
            out.append(
                f"Best {kind} on {split}: {_names(best)} with {value} vs {base} "
                f"{format_number(b)} ({gain})."
            )
        else:
            out.append(
                f"No model beats the baseline's {kind} on {split}: the best of the others, "
                f"{_names(best)}, has {value} vs {base} {format_number(b)} ({gain})."
            )
    refs = []
    if blind:
        top, value, _ = _extreme(blind, lowest=False)
        refs.append(f"the best blind rule ({_names(top)}) {value}")
    if oracles:
        top, value, _ = _extreme(oracles, lowest=False)
        refs.append(f"the oracle ({_names(top)}) {value}")
    if refs:
        text = f"For reference on {split}: " + " and ".join(refs) + "."
        if blind and methods:
            best_rule = max(blind.values())
            beating = [m for m, a in methods.items() if a > best_rule]
            if not beating:
                text += f" No model beats the best blind rule's {kind}."
            else:
                text += (
                    f" {len(beating)} of {len(methods)} model"
                    f"{'s' if len(methods) > 1 else ''} beat the best blind rule."
                )
        out.append(text)
    return out


def _extreme(values: Mapping[str, float], *, lowest: bool) -> tuple[list[str], str, bool]:
    """The models with the lowest (or highest) value as displayed, that value, and whether
    every model shares it."""
    shown = {m: format_number(v) for m, v in values.items()}
    target = (min if lowest else max)(values.values())
    best = [m for m in values if shown[m] == format_number(target)]
    return best, format_number(target), len(best) == len(values)


def _names(names: Sequence[str], most: int = 3) -> str:
    """``a``, ``a and b``, ``a, b and c``; beyond ``most`` names, ``a, b, c and 4 more``."""
    if len(names) <= 1:
        return "".join(names)
    if len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} more"
    return ", ".join(names[:-1]) + " and " + names[-1]


def _columns(models: Mapping[str, Diagnostics]) -> list[tuple[str, str]]:
    return [(m, s) for m, d in models.items() for s in d.splits]


def _metric_map(split: SplitDiagnostics) -> dict[str, Metric]:
    return {m.key: m for m in split.metrics()}


def _glance_rows(
    models: Mapping[str, Diagnostics], cols: list[tuple[str, str]]
) -> list[tuple[str, list[Any], str]]:
    maps = {(m, s): _metric_map(models[m].splits[s]) for m, s in cols}
    rows = []
    for key, label in GLANCE:
        values = [maps[c][key].value if key in maps[c] else None for c in cols]
        if all(v is None for v in values):
            continue
        definition = next((maps[c][key].definition for c in cols if key in maps[c]), "")
        rows.append((label, values, definition))
    return rows


def _all_tables(report: BiasReport) -> list[tuple[str, MetricTable]]:
    out = []
    for m, d in report.models.items():
        for t in d.extras:
            out.append((f"{t.title} — {m}" if len(report.models) > 1 else t.title, t))
    for t in report.extra_sections:
        out.append((t.title, t))
    return out


class _HtmlWriter:
    """Builds the page. Every dynamic string goes through ``esc``."""

    def __init__(self, report: BiasReport) -> None:
        self.r = report
        self.models = report.models
        self.cols = _columns(self.models)
        self.split = report.focus_split()
        self.parts: list[str] = []
        self.figs = report.figures()

    # helpers
    def w(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, name: str, caption: str) -> None:
        fig = self.figs.get(name)
        if fig is None:
            return
        uri = figure_to_data_uri(fig, deterministic=self.r.deterministic)
        self.w(
            f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
            "</figcaption></figure>"
        )

    def table(self, header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> None:
        """rows of cells (text, css class); text is escaped here."""
        self.w(
            "<table><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in header)
            + "</tr></thead><tbody>"
        )
        for row in rows:
            cells = "".join(
                f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"
                for text, cls in row
            )
            self.w(f"<tr>{cells}</tr>")
        self.w("</tbody></table>")

    def grid(
        self,
        columns: Sequence[tuple[str, str | None]],
        rows: Sequence[tuple[str, Sequence[Any]]],
        definitions: Sequence[tuple[str, str]] = (),
        stub: str = "metric",
    ) -> None:
        """A metric x column table of numbers.

        ``columns`` are ``(model, split or None)``: a model's columns share one header cell
        above a row of split names, so long names are written once. The first column stays in
        view when the table scrolls sideways. Definitions go in a list under the table, not in
        a column: a prose column squeezed by many number columns wraps into very tall rows.
        """
        groups: list[list[Any]] = []
        for g, _ in columns:
            if groups and groups[-1][0] == g:
                groups[-1][1] += 1
            else:
                groups.append([g, 1])
        two = any(sub is not None for _, sub in columns)
        starts: set[int] = set()
        at = 0
        for _, k in groups:
            starts.add(at)
            at += k
        if not two:
            starts = set()
        self.w('<div class="scroll"><table class="grid"><thead><tr>')
        if two:
            self.w(f'<th class="stub" rowspan="2">{esc(stub)}</th>')
            self.w(
                "".join(f'<th class="model start" colspan="{k}">{esc(g)}</th>' for g, k in groups)
            )
            self.w("</tr><tr>")
            self.w(
                "".join(
                    f'<th class="split{" start" if j in starts else ""}">{esc(sub or "")}</th>'
                    for j, (_, sub) in enumerate(columns)
                )
            )
        else:
            self.w(f'<th class="stub">{esc(stub)}</th>')
            self.w("".join(f"<th>{esc(g)}</th>" for g, _ in columns))
        self.w("</tr></thead><tbody>")
        for label, values in rows:
            cells = "".join(
                f'<td class="num{" start" if j in starts else ""}">{esc(format_number(v))}</td>'
                for j, v in enumerate(values)
            )
            self.w(f'<tr><td class="stub">{esc(label)}</td>{cells}</tr>')
        self.w("</tbody></table></div>")
        defs = [(label, d) for label, d in definitions if d]
        if defs:
            self.w(
                '<dl class="defs">'
                + "".join(f"<dt>{esc(label)}</dt><dd>{esc(d)}</dd>" for label, d in defs)
                + "</dl>"
            )

    @contextlib.contextmanager
    def collapsed(self, summary: str, count: int) -> Iterator[None]:
        """Fold a run of more than two ``<details>`` into one, so a long list of per-model
        tables reads as a single line until opened."""
        if count > 2:
            self.w(f'<details class="group"><summary>{esc(summary)} ({count})</summary>')
        yield
        if count > 2:
            self.w("</details>")

    def split_label(self, model: str, split: str) -> str:
        """The split's name, with ID / OOD added where the name does not already say it."""
        dist = self.models[model].splits[split].distribution
        tag = {"id": "ID", "ood": "OOD"}.get(dist, "")
        return f"{split} ({tag})" if tag and tag.lower() != split.lower() else split

    def metric_table(self, metrics_by_col: Mapping[tuple[str, str], list[Metric]]) -> None:
        """One row per metric key, one column per (model, split); definitions listed below."""
        keys: list[str] = []
        info: dict[str, Metric] = {}
        for ms in metrics_by_col.values():
            for m in ms:
                if m.key not in info:
                    keys.append(m.key)
                    info[m.key] = m
        if not keys:
            return
        lookups = {c: {m.key: m.value for m in ms} for c, ms in metrics_by_col.items()}
        # a metric no column has a value for (e.g. an optional average) is left out
        keys = [k for k in keys if any(lookups[c].get(k) is not None for c in lookups)]
        self.grid(
            [(m, self.split_label(m, s)) for m, s in metrics_by_col],
            [(info[k].label, [lookups[c].get(k) for c in metrics_by_col]) for k in keys],
            [(info[k].label, info[k].definition) for k in keys],
        )

    def section_start(self, key: str, title: str, anchor: str) -> None:
        self.w(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>')
        if key in SECTION_TEXT:
            self.w(f'<p class="explain">{esc(SECTION_TEXT[key])}</p>')

    def part_metrics(self, part: str) -> dict[tuple[str, str], list[Metric]]:
        out = {}
        for m, s in self.cols:
            sp = self.models[m].splits[s]
            value = getattr(sp, part)
            if value is not None:
                ms = value.metrics()
                if getattr(value, "not_applicable", None):  # shown n/a, never a number
                    ms = [
                        dataclasses.replace(x, value="n/a") if x.value is None else x  # type: ignore[arg-type]
                        for x in ms
                    ]
                out[(m, s)] = ms
        return out

    # page
    def render(self) -> str:
        r = self.r
        self.w(
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(r.title)}</title><style>{CSS}</style></head><body><main>"
        )
        self.header()
        self.headline()
        self.glance()
        self.groups()
        self.reliance()
        self.calibration()
        self.effects()
        self.compositional()
        self.causal()
        self.audit()
        self.extras()
        self.all_numbers()
        self.provenance()
        self.w("</main></body></html>\n")
        return "".join(self.parts)

    def header(self) -> None:
        r = self.r
        models = ", ".join(self.models)
        splits = sorted({s for _, s in self.cols})
        self.w(
            f"<header><h1>{esc(r.title)}</h1><p>Models: {esc(models)} · splits: "
            f"{esc(', '.join(splits))}"
        )
        created = (r.provenance or {}).get("created")
        if created:
            self.w(f" · created {esc(created)}")
        self.w("</p>")
        if r.notes:
            self.w(f"<p>{_linked_html(r.notes)}</p>")
        self.w("</header>")

    def headline(self) -> None:
        self.w('<section class="headline" id="summary"><h2>Summary</h2>')
        lines = self.r.headline() or ["No results to summarise."]
        self.w("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>")
        header, rows = self.r.summary_rows()
        if rows:
            self.grid(
                [(h, None) for h in header],
                rows,
                stub="model",
            )
            self.w(
                f'<p class="explain">On the {esc(self.split)} split; '
                f"{esc(self.r.baseline)} is the baseline. Every number, with its definition, "
                "is in the sections below.</p>"
            )
        self.w("</section>")

    def glance(self) -> None:
        rows = _glance_rows(self.models, self.cols)
        self.section_start("glance", "In distribution vs. out of distribution", "glance")
        self.figure("accuracy", "Accuracy and worst-group accuracy of every model on every split.")
        self.grid(
            [(m, self.split_label(m, s)) for m, s in self.cols],
            [(label, values) for label, values, _ in rows],
            [(label, definition) for label, _, definition in rows],
        )
        self.w("</section>")

    def groups(self) -> None:
        have = [(m, s) for m, s in self.cols if self.models[m].splits[s].groups is not None]
        if not have:
            return
        self.section_start("groups", "Group robustness", "groups")
        self.figure("group_accuracy", f"Accuracy of each group on the {self.split} split.")
        self.metric_table(self.part_metrics("groups"))
        bias = self.part_metrics("bias")
        if bias:
            self.w("<h3>Bias-aligned vs. bias-conflicting examples</h3>")
            self.metric_table(bias)
        with self.collapsed("Per-group accuracy tables", len(have)):
            self.per_group_tables(have)
        self.w("</section>")

    def per_group_tables(self, have: list[tuple[str, str]]) -> None:
        for m, s in have:
            g = self.models[m].splits[s].groups
            self.w(
                f"<details><summary>Per-group accuracy: {esc(m)} / {esc(s)} "
                f"(groups from {esc(g.group_source)})</summary>"
            )
            self.table(
                ["group id", "group", "n", "accuracy", "worst"],
                [
                    [
                        (str(x.group), "num"),
                        (x.name, ""),
                        (format_number(x.n), "num"),
                        (format_number(x.accuracy), "num"),
                        (
                            "worst group"
                            if g.worst_group is not None and x.group == g.worst_group.group
                            else f"below the minimum size ({g.min_group_size})"
                            if x.n < g.min_group_size
                            else "",
                            "",
                        ),
                    ]
                    for x in g.per_group
                ],
            )
            self.w("</details>")

    def reliance(self) -> None:
        prior = self.part_metrics("language_prior")
        ctx = self.part_metrics("context")
        if not prior and not ctx:
            return
        if prior:  # name only the measures this data has (no question: no language prior)
            title = "Reliance on the language prior" + (" and on context" if ctx else "")
            self.section_start("language_prior", title, "reliance")
            caption = "How often each model agrees with its image-blind answer and how often its "
            caption += "answer flips when the image" + (" or the context" if ctx else "")
        else:
            self.w('<section id="reliance"><h2>Reliance on context</h2>')
            caption = "How often each model's answer flips when the context"
        self.figure("reliance", f"{caption} is replaced ({self.split} split).")
        if prior:
            modes = sorted(
                {
                    self.models[m].splits[s].language_prior.null_mode
                    for m, s in self.cols
                    if self.models[m].splits[s].language_prior is not None
                }
            )
            self.w(
                f'<h3>Language prior</h3><p class="explain">The image is removed with '
                f"mode {esc(', '.join(modes))}.</p>"
            )
            self.metric_table(prior)
            for m, sp_name in self.cols:
                lp = self.models[m].splits[sp_name].language_prior
                if lp is not None and lp.not_applicable:
                    self.w(
                        f'<p class="explain">n/a for {esc(m)} / {esc(sp_name)}: '
                        f"{esc(lp.not_applicable)}.</p>"
                    )
        if ctx:
            self.w(f'<h3>Context</h3><p class="explain">{esc(SECTION_TEXT["context"])}</p>')
            self.metric_table(ctx)
        self.w("</section>")

    def calibration(self) -> None:
        cal = self.part_metrics("calibration")
        if not cal:
            return
        self.section_start("calibration", "Calibration", "calibration")
        self.figure(
            "reliability",
            f"Reliability diagram ({self.split} split); the dashed "
            "diagonal is perfect calibration.",
        )
        self.metric_table(cal)
        with self.collapsed("Reliability bins", len(cal)):
            self.reliability_tables()
        self.w("</section>")

    def reliability_tables(self) -> None:
        for m, s in self.cols:
            c = self.models[m].splits[s].calibration
            if c is None:
                continue
            self.w(
                f"<details><summary>Reliability bins: {esc(m)} / {esc(s)} "
                f"({c.n_bins} bins)</summary>"
            )
            self.table(
                ["bin from", "bin to", "n", "mean confidence", "accuracy"],
                [
                    [
                        (format_number(c.bin_edges[b]), "num"),
                        (format_number(c.bin_edges[b + 1]), "num"),
                        (format_number(c.bin_count[b]), "num"),
                        (format_number(c.bin_confidence[b]), "num"),
                        (format_number(c.bin_accuracy[b]), "num"),
                    ]
                    for b in range(c.n_bins)
                ],
            )
            self.w("</details>")

    def effects(self) -> None:
        eff = self.part_metrics("effects")
        if not eff:
            return
        self.section_start("effects", "Causal effects inside the model (TE, NDE, TIE)", "effects")
        self.figure(
            "effects", f"Distribution of each effect at the predicted answer ({self.split} split)."
        )
        self.metric_table(eff)
        count = sum(
            len(self.models[m].splits[s].effects.effects)
            for m, s in self.cols
            if self.models[m].splits[s].effects is not None
        )
        with self.collapsed("Histogram data", count):
            self.histogram_tables()
        self.w("</section>")

    def histogram_tables(self) -> None:
        for m, s in self.cols:
            e = self.models[m].splits[s].effects
            if e is None:
                continue
            for key, summary in e.effects.items():
                self.w(
                    f"<details><summary>Histogram data: {esc(EFFECT_NAMES.get(key, key))}, "
                    f"{esc(m)} / {esc(s)} (n = {summary.n})</summary>"
                )
                self.table(
                    ["from", "to", "examples"],
                    [
                        [
                            (format_number(summary.hist_edges[i]), "num"),
                            (format_number(summary.hist_edges[i + 1]), "num"),
                            (format_number(c), "num"),
                        ]
                        for i, c in enumerate(summary.hist_counts)
                    ],
                )
                self.w("</details>")

    def compositional(self) -> None:
        comp = self.part_metrics("compositional")
        if not comp:
            return
        self.section_start("compositional", "Compositional understanding", "compositional")
        self.metric_table(comp)
        self.w("</section>")

    def causal(self) -> None:
        items = [
            (m, s, self.models[m].splits[s].effect_estimate)
            for m, s in self.cols
            if self.models[m].splits[s].effect_estimate is not None
        ]
        if not items:
            return
        self.section_start("causal", "Causal effect of the spurious cue (dowhy)", "causal")
        for m, s, e in items:
            self.w(f"<h3>{esc(m)} / {esc(s)}</h3>")
            self.w(
                f"<p>Effect of <b>{esc(e.treatment)}</b> on <b>{esc(e.outcome)}</b>: "
                f"<b>{esc(format_number(e.value))}</b> ({esc(e.method)}, adjusting for "
                f"{esc(', '.join(e.backdoor_variables) or 'nothing')}; n = {e.n}, "
                f"seed {esc(format_number(e.seed))}, {esc(format_number(e.elapsed_s))} s).</p>"
            )
            rows = []
            for ref in e.refutations:
                status = {
                    True: ("passed", "pass"),
                    False: ("failed", "fail"),
                    None: ("no verdict", ""),
                }[ref.passed]
                rows.append(
                    [
                        (ref.name.replace("_", " "), ""),
                        status,
                        (ref.verdict, ""),
                        (ref.expectation, "def"),
                        (format_number(ref.new_effect), "num"),
                        (format_number(ref.p_value), "num"),
                        (format_number(ref.significance_level), "num"),
                        (ref.estimate_method, ""),
                    ]
                )
            self.table(
                [
                    "check",
                    "result",
                    "verdict",
                    "expectation",
                    "new effect",
                    "p-value",
                    "significance level",
                    "run on",
                ],
                rows,
            )
        self.w("</section>")

    def audit(self) -> None:
        a = self.r.audit
        if a is None:
            return
        from .audit import audit_section_html

        self.w(audit_section_html(a))

    def extras(self) -> None:
        for title, t in _all_tables(self.r):
            self.w(f'<section class="extra"><h2>{esc(title)}</h2>')
            if t.description:
                self.w(f'<p class="explain">{_linked_html(t.description)}</p>')
            self.grid(
                [(c, None) for c in t.columns],
                [(row.name, row.values) for row in t.rows],
                [(row.name, row.definition) for row in t.rows],
            )
            self.w("</section>")

    def all_numbers(self) -> None:
        self.w(
            '<section id="numbers"><h2>All numbers</h2><p class="explain">Every number of '
            "report.json with its definition, per model and split.</p>"
        )
        for m, s in self.cols:
            sp = self.models[m].splits[s]
            self.w(
                f"<details><summary>{esc(m)} / {esc(s)} "
                f"({esc(DISTRIBUTION_LABELS[sp.distribution])}, n = {sp.n})</summary>"
            )
            self.table(
                ["key", "metric", "value", "definition"],
                [
                    [
                        (x.key, ""),
                        (x.label, ""),
                        (format_number(x.value), "num"),
                        (x.definition, "def"),
                    ]
                    for x in sp.metrics()
                ],
            )
            self.w("</details>")
        self.w("</section>")

    def provenance(self) -> None:
        r = self.r
        prov = r.provenance or {}
        self.w('<section id="provenance"><h2>Provenance</h2>')
        versions = prov.get("versions", {})
        rows = [[(k, ""), (v or "not installed", "")] for k, v in versions.items()]
        rows.append([("python", ""), (str(prov.get("python", "")), "")])
        if r.seed is not None:
            rows.append([("seed", ""), (format_number(r.seed), "num")])
        if prov.get("created"):
            rows.append([("created", ""), (str(prov["created"]), "")])
        self.table(["item", "value"], rows)
        if r.config is not None:
            self.w("<h3>Run configuration</h3>")
            self.table(
                ["key", "value"], [[(k, ""), (_display(v), "")] for k, v in _flatten(r.config)]
            )
        # models diagnosed with the same settings share one table
        same: dict[str, list[str]] = {}
        for m, d in self.models.items():
            if d.config:
                same.setdefault(json.dumps(d.config, sort_keys=True, default=str), []).append(m)
        for names in same.values():
            config = self.models[names[0]].config
            who = "every model" if len(names) == len(self.models) > 1 else ", ".join(names)
            self.w(f"<h3>Diagnostics configuration: {esc(who)}</h3>")
            self.table(
                ["key", "value"], [[(k, ""), (_display(v), "")] for k, v in _flatten(config)]
            )
        self.w(f"<footer>Written by causalvl {esc(__version__)}.</footer></section>")


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, value)]


def _display(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_display(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
        return format_number(value)
    return str(value)


__all__ = ["BiasReport", "CSS", "FORMAT", "FORMAT_VERSION", "GLANCE", "SECTION_TEXT"]
