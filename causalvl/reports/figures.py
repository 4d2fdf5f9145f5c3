"""Report figures: pure functions that build ``matplotlib.figure.Figure`` objects.

No pyplot and no global state: each function returns a new Figure (drawn with the Agg canvas
when encoded), or ``None`` when the diagnostics hold no data for it. matplotlib is imported
on first use.

    >>> from causalvl.reports.figures import figure_to_png          # doctest: +SKIP
    >>> png = figure_to_png(accuracy_figure({"plain": diagnostics})) # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from ..diagnostics.results import EFFECT_NAMES, Diagnostics, SplitDiagnostics
from .formatting import mpl_text

# colour-blind safe (Okabe-Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)


def focus_split(models: Mapping[str, Diagnostics]) -> str | None:
    """The split the report focuses on: the first out-of-distribution split, else the first."""
    for d in models.values():
        for name, split in d.splits.items():
            if split.distribution == "ood":
                return name
    for d in models.values():
        return next(iter(d.splits))
    return None


def _split(d: Diagnostics, name: str | None) -> SplitDiagnostics | None:
    if name is not None and name in d.splits:
        return d.splits[name]
    return None


def figure_to_png(fig: Any, *, deterministic: bool = False) -> bytes:
    """Encode a Figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    metadata = {"Software": None} if deterministic else None
    fig.savefig(buf, format="png", dpi=100, metadata=metadata)
    return buf.getvalue()


def figure_to_data_uri(fig: Any, *, deterministic: bool = False) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(
        figure_to_png(fig, deterministic=deterministic)
    ).decode("ascii")


def _bars(
    ax: Any,
    categories: list[str],
    series: dict[str, list[float | None]],
    *,
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(categories))]
        ys = [float("nan") if v is None else v for v in values]
        bars = ax.bar(
            xs, ys, width=width * 0.95, label=mpl_text(label), color=PALETTE[k % len(PALETTE)]
        )
        for bar, v in zip(bars, values):
            if v is not None:
                ax.annotate(
                    f"{v:.2f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([mpl_text(c) for c in categories], fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(ylim[0], ylim[1] * 1.1)  # headroom for the value labels
        ax.set_yticks([ylim[0] + (ylim[1] - ylim[0]) * k / 5 for k in range(6)])
    _style(ax)


def _legend(fig: Any, ax: Any) -> None:
    """One legend under the plots (outside the axes, so it never hides a bar)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(handles), 4),
            frameon=False,
            fontsize=8,
        )


def _wrap(label: str, width: int = 14) -> str:
    """Break long group names at commas so tick labels do not collide."""
    if len(label) <= width:
        return label
    return label.replace(", ", ",\n")


def accuracy_figure(models: Mapping[str, Diagnostics]) -> Any | None:
    """Accuracy and worst-group accuracy per model on every split (ID vs OOD side by side)."""
    splits: list[str] = []
    for d in models.values():
        for name in d.splits:
            if name not in splits:
                splits.append(name)
    if not splits:
        return None
    has_worst = any(s.groups is not None for d in models.values() for s in d.splits.values())
    fig = _figure(7.5, 3.2)
    axes = fig.subplots(1, 2 if has_worst else 1, squeeze=False)[0]
    series = {
        m: [None if _split(d, s) is None else _split(d, s).accuracy for s in splits]
        for m, d in models.items()
    }
    _bars(axes[0], splits, series, ylabel="accuracy")
    axes[0].set_title("Accuracy per split", fontsize=10)
    if has_worst:
        series = {}
        for m, d in models.items():
            vals = []
            for s in splits:
                sp = _split(d, s)
                vals.append(
                    None if sp is None or sp.groups is None else sp.groups.worst_group_accuracy
                )
            series[m] = vals
        _bars(axes[1], splits, series, ylabel="worst-group accuracy")
        axes[1].set_title("Worst-group accuracy per split", fontsize=10)
    _legend(fig, axes[0])
    return fig


def group_accuracy_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Per-group accuracy of every model on one split."""
    names: list[str] = []
    ids: list[int] = []
    for d in models.values():
        sp = _split(d, split)
        if sp is not None and sp.groups is not None:
            for g in sp.groups.per_group:
                if g.group not in ids:
                    ids.append(g.group)
                    names.append(g.name)
    if not ids:
        return None
    series = {}
    for m, d in models.items():
        sp = _split(d, split)
        table = (
            {}
            if sp is None or sp.groups is None
            else {g.group: g.accuracy for g in sp.groups.per_group}
        )
        series[m] = [table.get(g) for g in ids]
    width = max(6.0, min(11.0, 1.5 + 0.45 * len(ids) * max(1, len(models))))
    fig = _figure(width, 3.8)
    ax = fig.subplots()
    _bars(ax, [_wrap(n) for n in names], series, ylabel="accuracy")
    if len(names) > 8:
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    ax.set_title(mpl_text(f"Accuracy per group ({split})"), fontsize=10)
    _legend(fig, ax)
    return fig


def reliance_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Language-prior and context reliance bars per model on one split."""

    def prior(s: SplitDiagnostics, field: str) -> float | None:
        return None if s.language_prior is None else getattr(s.language_prior, field)

    rows = [
        ("agreement with\nimage-blind answer", lambda s: prior(s, "prior_agreement")),
        ("flip rate,\nimage swapped", lambda s: prior(s, "image_swap_flip_rate")),
        (
            "flip rate,\ncontext replaced",
            lambda s: None if s.context is None else s.context.flip_rate,
        ),
    ]
    series: dict[str, list[float | None]] = {}
    for m, d in models.items():
        sp = _split(d, split)
        series[m] = [None if sp is None else get(sp) for _, get in rows]
    keep = [i for i in range(len(rows)) if any(v[i] is not None for v in series.values())]
    if not keep:
        return None
    cats = [rows[i][0] for i in keep]
    series = {m: [v[i] for i in keep] for m, v in series.items()}
    fig = _figure(7.0, 3.2)
    ax = fig.subplots()
    _bars(ax, cats, series, ylabel="fraction of examples")
    ax.set_title(mpl_text(f"Reliance on shortcuts ({split})"), fontsize=10)
    _legend(fig, ax)
    return fig


def reliability_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Reliability diagram: accuracy vs. confidence per bin, one line per model."""
    data = []
    for m, d in models.items():
        sp = _split(d, split)
        if sp is not None and sp.calibration is not None:
            data.append((m, sp.calibration))
    if not data:
        return None
    fig = _figure(5.2, 4.0)
    ax = fig.subplots()
    ax.plot(
        [0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="perfect calibration"
    )
    for k, (m, c) in enumerate(data):
        pts = [
            (x, y)
            for x, y in zip(c.bin_confidence, c.bin_accuracy)
            if x is not None and y is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(
                xs,
                ys,
                marker="o",
                markersize=4,
                color=PALETTE[k % len(PALETTE)],
                label=mpl_text(f"{m} (ECE {c.ece:.3f})"),
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted answer)")
    ax.set_ylabel("accuracy")
    ax.set_title(mpl_text(f"Reliability diagram ({split})"), fontsize=10)
    _style(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


def effect_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Histograms of the predicted-answer entries of each causal effect, models overlaid."""
    effects: list[str] = []
    for d in models.values():
        sp = _split(d, split)
        if sp is not None and sp.effects is not None:
            for key in sp.effects.effects:
                if key not in effects:
                    effects.append(key)
    if not effects:
        return None
    fig = _figure(min(3.4 * len(effects), 11.0), 3.0)
    axes = fig.subplots(1, len(effects), squeeze=False)[0]
    for ax, key in zip(axes, effects):
        for k, (m, d) in enumerate(models.items()):
            sp = _split(d, split)
            if sp is None or sp.effects is None or key not in sp.effects.effects:
                continue
            e = sp.effects.effects[key]
            if e.hist_counts:
                ax.stairs(
                    e.hist_counts,
                    e.hist_edges,
                    color=PALETTE[k % len(PALETTE)],
                    label=mpl_text(m),
                    linewidth=1.5,
                )
        ax.set_title(mpl_text(EFFECT_NAMES.get(key, key)), fontsize=9)
        ax.set_xlabel("value at the predicted answer", fontsize=8)
        _style(ax)
    axes[0].set_ylabel("examples")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=min(len(handles), 4),
            frameon=False,
            fontsize=8,
        )
    return fig


def figure_names(models: Mapping[str, Diagnostics]) -> list[str]:
    """Names of the figures :func:`report_figures` draws, without drawing them."""
    split = focus_split(models)
    parts = [d.splits[split] for d in models.values() if split in d.splits]
    every = [s for d in models.values() for s in d.splits.values()]
    checks = {
        "accuracy": bool(every),
        "group_accuracy": any(s.groups is not None for s in parts),
        "reliance": any(
            (
                s.language_prior is not None
                and (
                    s.language_prior.prior_agreement is not None
                    or s.language_prior.image_swap_flip_rate is not None
                )
            )
            or (s.context is not None and s.context.flip_rate is not None)
            for s in parts
        ),
        "reliability": any(s.calibration is not None for s in parts),
        "effects": any(s.effects is not None and len(s.effects.effects) > 0 for s in parts),
    }
    return [name for name, ok in checks.items() if ok]


def report_figures(models: Mapping[str, Diagnostics]) -> dict[str, Any]:
    """Every figure the diagnostics support, keyed by a stable name (``None`` ones left out)."""
    split = focus_split(models)
    candidates = {
        "accuracy": accuracy_figure(models),
        "group_accuracy": group_accuracy_figure(models, split),
        "reliance": reliance_figure(models, split),
        "reliability": reliability_figure(models, split),
        "effects": effect_figure(models, split),
    }
    return {k: v for k, v in candidates.items() if v is not None}


__all__ = [
    "PALETTE",
    "accuracy_figure",
    "effect_figure",
    "figure_to_data_uri",
    "figure_to_png",
    "figure_names",
    "focus_split",
    "group_accuracy_figure",
    "reliability_figure",
    "reliance_figure",
    "report_figures",
]
