"""Builders: results -> report :class:`~causalvl.reports.document.Section` objects.

Each result type has ONE builder here, and every sentence of the report is written here once;
the HTML and Markdown renderers only walk the :class:`~causalvl.reports.document.Document`.

Adding a diagnostic
    Its numbers reach ``report.json`` and the "All numbers" section on their own once its
    result is a field of :class:`~causalvl.diagnostics.results.SplitDiagnostics` with a
    ``metrics()`` method. To give it a section of its own, write one function
    ``(view: ReportView) -> Section | None`` in this module (``None`` when no model has the
    result) and add it to :data:`DIAGNOSTIC_SECTIONS` at the place it should appear; its
    explanatory paragraph goes in :data:`SECTION_TEXT` and, for a comparison row at the top
    of the page, its metric key in :data:`GLANCE`. Both renderers then show it.

Other results (a :class:`~causalvl.MetricTable`, a POPE result, anything with a
``to_metric_table()`` method) are shown by :func:`metric_table_section`; a benchmark audit
by :func:`audit_section`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._version import __version__
from ..diagnostics.results import (
    DISTRIBUTION_LABELS,
    EFFECT_NAMES,
    BlindSolvabilityAudit,
    Diagnostics,
    Metric,
    SplitDiagnostics,
    as_metric_table,
)
from .document import (
    Block,
    BulletList,
    Cell,
    Details,
    Figure,
    Grid,
    Heading,
    Paragraph,
    Section,
    Table,
    Text,
)
from .figures import focus_split
from .formatting import format_number, format_signed

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

#: the explanatory paragraph under each section's title
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


# -- the models and splits a report shows ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReportView:
    """What the diagnostic section builders read: the models in display order, their
    ``(model, split)`` columns, the focus split and the baseline model."""

    models: Mapping[str, Diagnostics]
    baseline: str
    audit: BlindSolvabilityAudit | None = None

    @functools.cached_property
    def cols(self) -> list[tuple[str, str]]:
        """Every ``(model, split)`` pair, models in display order."""
        return [(m, s) for m, d in self.models.items() for s in d.splits]

    @functools.cached_property
    def split(self) -> str | None:
        """The focus split: the first OOD split, else the first split."""
        return focus_split(self.models)

    @functools.cached_property
    def headline(self) -> tuple[str, ...]:
        """The headline sentences (:func:`headline_sentences`), worked out once per view."""
        return tuple(headline_sentences(self))

    def split_of(self, model: str, split: str) -> SplitDiagnostics:
        return self.models[model].splits[split]

    def split_label(self, model: str, split: str) -> str:
        """The split's name, with ID / OOD added where the name does not already say it."""
        dist = self.split_of(model, split).distribution
        tag = {"id": "ID", "ood": "OOD"}.get(dist, "")
        return f"{split} ({tag})" if tag and tag.lower() != split.lower() else split

    def part_metrics(self, part: str) -> dict[tuple[str, str], list[Metric]]:
        """``{(model, split): metrics of SplitDiagnostics.<part>}`` for the columns that have
        it; a not-applicable result shows ``"n/a"``, never a number."""
        out = {}
        for m, s in self.cols:
            value = getattr(self.split_of(m, s), part, None)
            if value is None:
                continue
            ms = value.metrics()
            if getattr(value, "not_applicable", None):
                ms = [dataclasses.replace(x, value="n/a") if x.value is None else x for x in ms]  # type: ignore[arg-type]
            out[(m, s)] = ms
        return out


# -- sentences ----------------------------------------------------------------------------------
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


def _reliance_sentences(
    values: Mapping[str, float], base: str, split: str, *, one: str, tie: str, least: str
) -> list[str]:
    """One sentence on a reliance measure where lower is better: the model's number when
    there is one model, else who relies least (against the baseline)."""
    if len(values) == 1:
        ((m, v),) = values.items()
        return [one.format(m=m, value=format_number(v), split=split)]
    if not values:
        return []
    best, value, every = _extreme(values, lowest=True)
    if every:
        return [tie.format(value=value, split=split)]
    verb = "relies" if len(best) == 1 else "rely"
    text = least.format(names=_names(best), verb=verb, value=value, split=split)
    if base in values and base not in best:
        text += f", vs {format_number(values[base])} for {base}"
    return [text + "."]


def headline_sentences(view: ReportView) -> list[str]:
    """Plain-language summary sentences (see :meth:`causalvl.BiasReport.headline`)."""
    models = view.models
    split = view.split
    out: list[str] = []
    if split is None:
        return out
    base = view.baseline
    on = {m: d.splits[split] for m, d in models.items() if split in d.splits}
    ood = any(sp.distribution == "ood" for sp in on.values())
    out += _accuracy_sentences(on, base, split, ood)
    prior = {
        m: sp.language_prior.prior_agreement
        for m, sp in on.items()
        if sp.language_prior is not None and sp.language_prior.prior_agreement is not None
    }
    out += _reliance_sentences(
        prior,
        base,
        split,
        one="{m}'s answer equals its image-blind answer on {value} of the {split} examples "
        "(1 would mean the image never changes the answer).",
        tie="Every model's answer equals its image-blind answer on {value} of the {split} "
        "examples: none relies less on the language prior than the others.",
        least="{names} {verb} least on the language prior: the answer equals the image-blind "
        "answer on {value} of the {split} examples",
    )
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
    out += _reliance_sentences(
        flips,
        base,
        split,
        one="{m}'s answer flips on {value} of the {split} examples when only the context is "
        "replaced (0 would mean the context never changes the answer).",
        tie="Every model's answer flips on {value} of the {split} examples when only the "
        "context is replaced.",
        least="{names} {verb} least on context: the answer flips on {value} of the {split} "
        "examples when only the context is replaced",
    )
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
                    f"; {small} smaller group{'s are' if small != 1 else ' is'} listed separately."
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
    out += _estimate_sentences(models)
    if view.audit is not None:
        out.append(f"Benchmark audit: {view.audit.summary()}")
    return out


def _estimate_sentences(models: Mapping[str, Diagnostics]) -> list[str]:
    estimates = [
        (m, sp.name, sp.effect_estimate)
        for m, d in models.items()
        for sp in d.splits.values()
        if sp.effect_estimate is not None
    ]
    if len(estimates) <= 2:
        out = []
        for m, name, e in estimates:
            passed = sum(r.passed is True for r in e.refutations)
            out.append(
                f"{m} on {name}: the spurious cue ({e.treatment}) changes {e.outcome} by "
                f"{format_signed(e.value)} (causal estimate); {passed} of "
                f"{len(e.refutations)} refutation checks passed."
            )
        return out
    # one sentence, whatever the number of estimates
    values = [e.value for _, _, e in estimates]
    passed = sum(r.passed is True for _, _, e in estimates for r in e.refutations)
    total = sum(len(e.refutations) for _, _, e in estimates)
    return [
        f"Causal estimates of the spurious cue's effect ({len(estimates)} model/split "
        f"pairs) range from {format_signed(min(values))} to "
        f"{format_signed(max(values))}; {passed} of {total} refutation checks passed."
    ]


def summary_rows(view: ReportView) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    """The per-model summary table (see :meth:`causalvl.BiasReport.summary_rows`)."""
    split = view.split
    if split is None:
        return [], []
    base = view.baseline
    models = view.models
    base_sp = models[base].splits.get(split)
    cols: list[tuple[str, Any]] = []
    on = {m: d.splits[split] for m, d in models.items() if split in d.splits}
    ood = any(sp.distribution == "ood" for sp in on.values())

    def id_acc(m: str, sp: SplitDiagnostics) -> float | None:
        idsp = models[m].split_of("id")
        return None if idsp is None or idsp is sp else idsp.accuracy

    if ood:
        cols.append(("ID accuracy", id_acc))
        cols.append(("OOD accuracy" + ("" if split.lower() == "ood" else f" ({split})"), None))
        cols.append(
            (
                "change, OOD − ID",
                lambda m, sp: None if id_acc(m, sp) is None else sp.accuracy - id_acc(m, sp),
            )
        )
    else:
        cols.append((f"accuracy ({split})", None))
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
    rows = [
        (m, [sp.accuracy if get is None else get(m, sp) for _, get in cols]) for m, sp in on.items()
    ]
    keep = [j for j in range(len(cols)) if any(r[1][j] is not None for r in rows)]
    return [cols[j][0] for j in keep], [(m, [v[j] for j in keep]) for m, v in rows]


# -- small block helpers ----------------------------------------------------------------------
def _explain(key: str) -> tuple[Block, ...]:
    return (Paragraph.of(SECTION_TEXT[key], "explain", brief=False),) if key in SECTION_TEXT else ()


def _collapsed(summary: str, blocks: Sequence[Block]) -> tuple[Block, ...]:
    """Fold a run of more than two details into one, so a long list of per-model tables
    reads as a single line until opened."""
    if len(blocks) > 2:
        return (Details(f"{summary} ({len(blocks)})", tuple(blocks), group=True),)
    return tuple(blocks)


def _num(value: Any) -> Cell:
    return Cell(format_number(value), "num")


def _table(header: Sequence[str], rows: Sequence[Sequence[Cell]], *, scroll: bool = False) -> Table:
    return Table(tuple(header), tuple(tuple(r) for r in rows), scroll=scroll)


def metric_grid(
    view: ReportView, metrics_by_col: Mapping[tuple[str, str], list[Metric]]
) -> tuple[Block, ...]:
    """One row per metric key, one column per (model, split); definitions listed below."""
    keys: list[str] = []
    info: dict[str, Metric] = {}
    for ms in metrics_by_col.values():
        for m in ms:
            if m.key not in info:
                keys.append(m.key)
                info[m.key] = m
    if not keys:
        return ()
    lookups = {c: {m.key: m.value for m in ms} for c, ms in metrics_by_col.items()}
    # a metric no column has a value for (e.g. an optional average) is left out
    keys = [k for k in keys if any(lookups[c].get(k) is not None for c in lookups)]
    return (
        Grid(
            columns=tuple((m, view.split_label(m, s)) for m, s in metrics_by_col),
            rows=tuple(
                (info[k].label, tuple(lookups[c].get(k) for c in metrics_by_col)) for k in keys
            ),
            definitions=tuple(
                (info[k].label, info[k].definition) for k in keys if info[k].definition
            ),
        ),
    )


# -- diagnostic sections ----------------------------------------------------------------------
def summary_section(view: ReportView) -> Section:
    """The headline sentences and the per-model summary table."""
    blocks: list[Block] = [BulletList(view.headline or ("No results to summarise.",))]
    header, rows = summary_rows(view)
    if rows:
        blocks.append(
            Grid(
                columns=tuple((h, None) for h in header),
                rows=tuple((m, tuple(values)) for m, values in rows),
                stub="model",
            )
        )
        blocks.append(
            Paragraph.of(
                f"On the {view.split} split; {view.baseline} is the baseline. Every number, "
                "with its definition, is in the sections below.",
                "explain",
                brief=False,
            )
        )
    return Section("Summary", tuple(blocks), anchor="summary", style="headline", brief=True)


def glance_section(view: ReportView) -> Section | None:
    """Headline metrics of every model on every split (:data:`GLANCE`)."""
    cols = view.cols
    maps = {(m, s): {x.key: x for x in view.split_of(m, s).metrics()} for m, s in cols}
    rows, defs = [], []
    for key, label in GLANCE:
        values = tuple(maps[c][key].value if key in maps[c] else None for c in cols)
        if all(v is None for v in values):
            continue
        definition = next((maps[c][key].definition for c in cols if key in maps[c]), "")
        rows.append((label, values))
        if definition:
            defs.append((label, definition))
    if not rows:
        return None
    return Section(
        "In distribution vs. out of distribution",
        (
            *_explain("glance"),
            Figure("accuracy", "Accuracy and worst-group accuracy of every model on every split."),
            Grid(tuple((m, view.split_label(m, s)) for m, s in cols), tuple(rows), tuple(defs)),
        ),
        anchor="glance",
        brief=True,
    )


def groups_section(view: ReportView) -> Section | None:
    """Group robustness: the averages, bias-aligned vs. conflicting, per-group tables."""
    have = [(m, s) for m, s in view.cols if view.split_of(m, s).groups is not None]
    if not have:
        return None
    blocks: list[Block] = [
        *_explain("groups"),
        Figure("group_accuracy", f"Accuracy of each group on the {view.split} split."),
        *metric_grid(view, view.part_metrics("groups")),
    ]
    bias = view.part_metrics("bias")
    if bias:
        blocks += [Heading("Bias-aligned vs. bias-conflicting examples"), *metric_grid(view, bias)]
    tables = []
    for m, s in have:
        g = view.split_of(m, s).groups
        worst = g.worst_group.group if g.worst_group is not None else None
        rows = [
            [
                Cell(str(x.group), "num"),
                Cell(x.name),
                _num(x.n),
                _num(x.accuracy),
                Cell(
                    "worst group"
                    if x.group == worst
                    else f"below the minimum size ({g.min_group_size})"
                    if x.n < g.min_group_size
                    else ""
                ),
            ]
            for x in g.per_group
        ]
        tables.append(
            Details(
                f"Per-group accuracy: {m} / {s} (groups from {g.group_source})",
                (_table(["group id", "group", "n", "accuracy", "worst"], rows),),
            )
        )
    blocks += _collapsed("Per-group accuracy tables", tables)
    return Section("Group robustness", tuple(blocks), anchor="groups")


def reliance_section(view: ReportView) -> Section | None:
    """Reliance on the language prior (image removed / swapped) and on context."""
    prior = view.part_metrics("language_prior")
    ctx = view.part_metrics("context")
    if not prior and not ctx:
        return None
    blocks: list[Block] = []
    if prior:  # name only the measures this data has (no question: no language prior)
        title = "Reliance on the language prior" + (" and on context" if ctx else "")
        blocks += _explain("language_prior")
        caption = "How often each model agrees with its image-blind answer and how often its "
        caption += "answer flips when the image" + (" or the context" if ctx else "")
    else:
        title = "Reliance on context"
        caption = "How often each model's answer flips when the context"
    blocks.append(Figure("reliance", f"{caption} is replaced ({view.split} split)."))
    if prior:
        modes = sorted(
            {
                view.split_of(m, s).language_prior.null_mode
                for m, s in view.cols
                if view.split_of(m, s).language_prior is not None
            }
        )
        blocks += [
            Heading("Language prior"),
            Paragraph.of(f"The image is removed with mode {', '.join(modes)}.", "explain"),
            *metric_grid(view, prior),
        ]
        for m, s in view.cols:
            lp = view.split_of(m, s).language_prior
            if lp is not None and lp.not_applicable:
                blocks.append(Paragraph.of(f"n/a for {m} / {s}: {lp.not_applicable}.", "explain"))
    if ctx:
        blocks += [Heading("Context"), *_explain("context"), *metric_grid(view, ctx)]
    return Section(title, tuple(blocks), anchor="reliance")


def calibration_section(view: ReportView) -> Section | None:
    """Calibration: ECE and the like, and the reliability bins."""
    cal = view.part_metrics("calibration")
    if not cal:
        return None
    tables = []
    for m, s in view.cols:
        c = view.split_of(m, s).calibration
        if c is None:
            continue
        rows = [
            [
                _num(c.bin_edges[b]),
                _num(c.bin_edges[b + 1]),
                _num(c.bin_count[b]),
                _num(c.bin_confidence[b]),
                _num(c.bin_accuracy[b]),
            ]
            for b in range(c.n_bins)
        ]
        tables.append(
            Details(
                f"Reliability bins: {m} / {s} ({c.n_bins} bins)",
                (_table(["bin from", "bin to", "n", "mean confidence", "accuracy"], rows),),
            )
        )
    blocks = (
        *_explain("calibration"),
        Figure(
            "reliability",
            f"Reliability diagram ({view.split} split); the dashed diagonal is perfect calibration.",
        ),
        *metric_grid(view, cal),
        *_collapsed("Reliability bins", tables),
    )
    return Section("Calibration", blocks, anchor="calibration")


def effects_section(view: ReportView) -> Section | None:
    """Causal effects inside a wrapped model (TE, NDE, TIE) and their histograms."""
    eff = view.part_metrics("effects")
    if not eff:
        return None
    tables = []
    for m, s in view.cols:
        e = view.split_of(m, s).effects
        if e is None:
            continue
        for key, summary in e.effects.items():
            rows = [
                [_num(summary.hist_edges[i]), _num(summary.hist_edges[i + 1]), _num(c)]
                for i, c in enumerate(summary.hist_counts)
            ]
            tables.append(
                Details(
                    f"Histogram data: {EFFECT_NAMES.get(key, key)}, {m} / {s} (n = {summary.n})",
                    (_table(["from", "to", "examples"], rows),),
                )
            )
    blocks = (
        *_explain("effects"),
        Figure(
            "effects", f"Distribution of each effect at the predicted answer ({view.split} split)."
        ),
        *metric_grid(view, eff),
        *_collapsed("Histogram data", tables),
    )
    return Section("Causal effects inside the model (TE, NDE, TIE)", blocks, anchor="effects")


def compositional_section(view: ReportView) -> Section | None:
    """Compositional scores (Winoground, foils)."""
    comp = view.part_metrics("compositional")
    if not comp:
        return None
    return Section(
        "Compositional understanding",
        (*_explain("compositional"), *metric_grid(view, comp)),
        anchor="compositional",
    )


def effect_estimate_blocks(estimate: Any) -> tuple[Block, ...]:
    """One causal estimate (an :class:`~causalvl.diagnostics.EffectEstimate`): the estimate
    and a table of its refutation checks."""
    e = estimate
    text = (
        Text("Effect of "),
        Text(e.treatment, strong=True),
        Text(" on "),
        Text(e.outcome, strong=True),
        Text(": "),
        Text(format_number(e.value), strong=True),
        Text(
            f" ({e.method}, adjusting for {', '.join(e.backdoor_variables) or 'nothing'}; "
            f"n = {e.n}, seed {format_number(e.seed)}, {format_number(e.elapsed_s)} s)."
        ),
    )
    status = {True: ("passed", "pass"), False: ("failed", "fail"), None: ("no verdict", "")}
    rows = [
        [
            Cell(ref.name.replace("_", " ")),
            Cell(*status[ref.passed]),
            Cell(ref.verdict),
            Cell(ref.expectation, "def"),
            _num(ref.new_effect),
            _num(ref.p_value),
            _num(ref.significance_level),
            Cell(ref.estimate_method),
        ]
        for ref in e.refutations
    ]
    header = [
        "check",
        "result",
        "verdict",
        "expectation",
        "new effect",
        "p-value",
        "significance level",
        "run on",
    ]
    return (Paragraph(text), _table(header, rows))


def causal_section(view: ReportView) -> Section | None:
    """The dowhy estimates of the spurious cue's effect, one per model and split."""
    items = [
        (m, s, view.split_of(m, s).effect_estimate)
        for m, s in view.cols
        if view.split_of(m, s).effect_estimate is not None
    ]
    if not items:
        return None
    blocks: list[Block] = list(_explain("causal"))
    for m, s, e in items:
        blocks += [Heading(f"{m} / {s}"), *effect_estimate_blocks(e)]
    return Section(
        "Causal effect of the spurious cue (dowhy)", tuple(blocks), anchor="causal", brief=True
    )


#: The diagnostic sections of a report, in page order: ``(view) -> Section | None``.
#: Adding a diagnostic's section means adding its builder here (see the module docstring).
DIAGNOSTIC_SECTIONS: tuple[Callable[[ReportView], Section | None], ...] = (
    glance_section,
    groups_section,
    reliance_section,
    calibration_section,
    effects_section,
    compositional_section,
    causal_section,
)


def numbers_section(view: ReportView) -> Section:
    """Every number of every split with its definition (as in ``report.json``)."""
    blocks = []
    for m, s in view.cols:
        sp = view.split_of(m, s)
        rows = [
            [Cell(x.key), Cell(x.label), _num(x.value), Cell(x.definition, "def")]
            for x in sp.metrics()
        ]
        blocks.append(
            Details(
                f"{m} / {s} ({DISTRIBUTION_LABELS[sp.distribution]}, n = {sp.n})",
                (_table(["key", "metric", "value", "definition"], rows),),
            )
        )
    return Section(
        "All numbers",
        (
            Paragraph.of(
                "Every number of report.json with its definition, per model and split.", "explain"
            ),
            *blocks,
        ),
        anchor="numbers",
    )


# -- other results ------------------------------------------------------------------------------
def metric_table_section(table: Any, title: str | None = None) -> Section:
    """A table of named numbers (a :class:`MetricTable`, a POPE result, ...): its description
    (relative ``*.html`` paths become links), the numbers and their definitions."""
    t = as_metric_table(table, what="a report table")
    blocks: list[Block] = []
    if t.description:
        blocks.append(Paragraph.of(t.description, "explain", links=True))
    blocks.append(
        Grid(
            columns=tuple((c, None) for c in t.columns),
            rows=tuple((row.name, tuple(row.values)) for row in t.rows),
            definitions=tuple((row.name, row.definition) for row in t.rows if row.definition),
        )
    )
    return Section(title or t.title, tuple(blocks), style="extra", brief=True)


def _ci(lo: float, hi: float) -> str:
    return f"[{format_number(lo)}, {format_number(hi)}]"


def audit_section(a: BlindSolvabilityAudit, *, anchor: str = "audit") -> Section:
    """A benchmark's blind-solvability audit: protocol, per-scorer and per-category accuracy,
    named cues, notes."""
    blocks: list[Block] = [
        *_explain("audit"),
        Paragraph((Text(a.summary(), strong=True),)),
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
    blocks.append(_table(["protocol", ""], [[Cell(k), Cell(format_number(v))] for k, v in facts]))
    if a.scorers:
        cats = sorted({c for s in a.scorers.values() for c in s.categories})
        rows = []
        for s in a.scorers.values():
            row = [
                Cell(s.name),
                _num(s.macro_accuracy),
                Cell(f"{format_number(s.accuracy)} {_ci(s.ci_low, s.ci_high)}", "num"),
                _num(s.n),
            ]
            for c in cats:
                cs = s.categories.get(c)
                row.append(
                    Cell("n/a", "num")
                    if cs is None
                    else Cell(f"{format_number(cs.accuracy)} {_ci(cs.ci_low, cs.ci_high)}", "num")
                )
            rows.append(row)
        counts = {c: next(iter(a.scorers.values())).categories[c].n for c in cats}
        blocks += [
            Heading("Held-out accuracy of each blind scorer"),
            _table(
                ["scorer", "macro accuracy", "accuracy [95% CI]", "n", *cats], rows, scroll=True
            ),
            _table(
                ["scorer", "what it sees"],
                [[Cell(s.name), Cell(s.description, "def")] for s in a.scorers.values()],
            ),
            Paragraph.of(
                "Items per category: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + ".",
                "explain",
            ),
        ]
    blocks.append(Heading("Named cues"))
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
                    Cell(c.category),
                    Cell(c.scorer),
                    Cell(c.description),
                    _num(c.weight),
                    Cell(example, "def"),
                ]
            )
        blocks.append(_table(["category", "scorer", "cue", "weight", "example"], rows))
    else:
        blocks.append(
            Paragraph.of(
                "No cue is named: no scorer is significantly above chance in a category large "
                "enough to name one.",
                "explain",
            )
        )
    if a.notes:
        blocks.append(BulletList(tuple(str(n) for n in a.notes)))
    return Section("Benchmark audit: what a blind model solves", tuple(blocks), anchor=anchor)


# -- provenance ---------------------------------------------------------------------------------
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


def _config_table(config: Any) -> Table:
    return _table(["key", "value"], [[Cell(k), Cell(_display(v))] for k, v in _flatten(config)])


def provenance_section(
    provenance: Mapping[str, Any],
    *,
    seed: int | None = None,
    config: Any = None,
    models: Mapping[str, Diagnostics] | None = None,
) -> Section:
    """Package versions, seed, time, the run's configuration and the diagnostics settings."""
    versions = provenance.get("versions", {})
    rows = [[Cell(k), Cell(v or "not installed")] for k, v in versions.items()]
    rows.append([Cell("python"), Cell(str(provenance.get("python", "")))])
    if seed is not None:
        rows.append([Cell("seed"), _num(seed)])
    if provenance.get("created"):
        rows.append([Cell("created"), Cell(str(provenance["created"]))])
    blocks: list[Block] = [_table(["item", "value"], rows)]
    if config is not None:
        blocks += [Heading("Run configuration"), _config_table(config)]
    # models diagnosed with the same settings share one table
    models = models or {}
    same: dict[str, list[str]] = {}
    for m, d in models.items():
        if d.config:
            same.setdefault(json.dumps(d.config, sort_keys=True, default=str), []).append(m)
    for names in same.values():
        who = "every model" if len(names) == len(models) > 1 else ", ".join(names)
        blocks += [
            Heading(f"Diagnostics configuration: {who}"),
            _config_table(models[names[0]].config),
        ]
    blocks.append(Paragraph.of(f"Written by causalvl {__version__}.", "footer"))
    return Section("Provenance", tuple(blocks), anchor="provenance")


__all__ = [
    "DIAGNOSTIC_SECTIONS",
    "GLANCE",
    "SECTION_TEXT",
    "ReportView",
    "as_metric_table",
    "audit_section",
    "causal_section",
    "effect_estimate_blocks",
    "headline_sentences",
    "metric_grid",
    "metric_table_section",
    "numbers_section",
    "provenance_section",
    "summary_rows",
    "summary_section",
]
