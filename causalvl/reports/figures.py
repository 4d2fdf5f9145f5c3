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


#: colours of the evaluation splits where splits, not models, are the bar series
SPLIT_COLOURS = ("#9AA5B1", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9")

#: per-bar value labels are drawn only while a panel has at most this many bars; beyond that
#: they collide, and every number is in the report's tables anyway
MAX_LABELLED_BARS = 16


def _wrap_words(label: str, width: int = 12) -> str:
    """Break a long name at spaces (and after commas) so it fits a narrow tick."""
    words = label.replace(", ", ",\n").split()
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width and not lines[-1].endswith(","):
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines) if lines else label


def _hbars(
    ax: Any,
    rows: list[str],
    series: dict[str, list[float | None]],
    *,
    xlabel: str,
    colours: tuple[str, ...] | None = None,
    labels: bool | None = None,
) -> None:
    """Grouped horizontal bars: one row per name (top to bottom), one bar per series.

    Row names sit on the y axis, where they have room whatever their length; value labels
    are drawn at the bar ends only while there are few bars (see ``MAX_LABELLED_BARS``).
    """
    n = max(len(series), 1)
    height = 0.8 / n
    if labels is None:
        labels = len(rows) * n <= MAX_LABELLED_BARS
    for k, (name, values) in enumerate(series.items()):
        # the first series on top within each row
        ys = [i + (k - (n - 1) / 2) * height for i in range(len(rows))]
        xs = [float("nan") if v is None else v for v in values]
        colour = (colours or PALETTE)[k % len(colours or PALETTE)]
        bars = ax.barh(ys, xs, height=height * 0.9, label=mpl_text(name), color=colour)
        if labels:
            for bar, v in zip(bars, values):
                if v is not None:
                    ax.annotate(
                        f"{v:.2f}",
                        (max(bar.get_width(), 0.0), bar.get_y() + bar.get_height() / 2),
                        ha="left",
                        va="center",
                        fontsize=7,
                        xytext=(2, 0),
                        textcoords="offset points",
                    )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([mpl_text(r) for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row at the top
    ax.set_xlim(0.0, 1.12 if labels else 1.0)  # room for the value labels
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)


def _legend(fig: Any, ax: Any, ncols: int = 4) -> None:
    """One legend under the plots (outside the axes, so it never hides a bar)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(handles), ncols),
            frameon=False,
            fontsize=8,
        )


def _row_height(n_rows: int, bars_per_row: int) -> float:
    """Figure height (inches) for ``n_rows`` rows of ``bars_per_row`` horizontal bars."""
    return 1.3 + n_rows * max(0.3, 0.17 * bars_per_row)


def accuracy_figure(models: Mapping[str, Diagnostics]) -> Any | None:
    """Accuracy and worst-group accuracy of every model (rows) on every split (bars)."""
    splits: list[str] = []
    for d in models.values():
        for name in d.splits:
            if name not in splits:
                splits.append(name)
    if not splits:
        return None
    has_worst = any(s.groups is not None for d in models.values() for s in d.splits.values())
    names = list(models)
    fig = _figure(8.5 if has_worst else 5.5, _row_height(len(names), len(splits)))
    axes = fig.subplots(1, 2 if has_worst else 1, squeeze=False, sharey=True)[0]
    tags = {"id": "ID", "ood": "OOD"}

    def split_label(s: str) -> str:
        dist = next((d.splits[s].distribution for d in models.values() if s in d.splits), "")
        tag = tags.get(dist, "")
        return f"{s} ({tag})" if tag and tag.lower() != s.lower() else s

    series = {
        split_label(s): [
            None if _split(d, s) is None else _split(d, s).accuracy for d in models.values()
        ]
        for s in splits
    }
    _hbars(axes[0], names, series, xlabel="accuracy", colours=SPLIT_COLOURS)
    axes[0].set_title("Accuracy per split", fontsize=10)
    if has_worst:
        series = {}
        for s in splits:
            vals = []
            for d in models.values():
                sp = _split(d, s)
                vals.append(
                    None if sp is None or sp.groups is None else sp.groups.worst_group_accuracy
                )
            series[split_label(s)] = vals
        _hbars(axes[1], names, series, xlabel="worst-group accuracy", colours=SPLIT_COLOURS)
        axes[1].set_title("Worst-group accuracy per split", fontsize=10)
        axes[1].tick_params(axis="y", labelleft=False)
    _legend(fig, axes[0], ncols=6)
    return fig


def group_accuracy_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Per-group accuracy of every model on one split, as a grid: groups (rows) x models.

    Each cell is coloured by accuracy and shows it; a model without that group shows "—".
    """
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
    grid = []
    for d in models.values():
        sp = _split(d, split)
        table = (
            {}
            if sp is None or sp.groups is None
            else {g.group: g.accuracy for g in sp.groups.per_group}
        )
        grid.append([table.get(g) for g in ids])
    n_models = len(models)
    label_width = min(3.2, 0.6 + 0.065 * max(len(n) for n in names))
    width = min(11.0, label_width + 1.6 + 0.85 * n_models)
    height = 1.6 + 0.26 * len(ids)
    fig = _figure(width, height)
    ax = fig.subplots()
    import numpy as np

    values = np.array(
        [[np.nan if v is None else v for v in col] for col in grid], dtype=float
    ).T  # groups x models
    cmap = _cmap()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
        interpolation="nearest",
    )  # fmt: skip
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "—" if np.isnan(v) else f"{v:.2f}"
            ax.text(
                j, i, text, ha="center", va="center", fontsize=7,
                color="#1d2433" if np.isnan(v) or v < 0.6 else "white",
            )  # fmt: skip
    ax.set_xticks(range(n_models))
    ax.set_xticklabels([mpl_text(_wrap_words(m)) for m in models], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(ids)))
    ax.set_yticklabels([mpl_text(n) for n in names], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks([x - 0.5 for x in range(1, n_models)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(ids))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title(mpl_text(f"Accuracy per group ({split})"), fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 3.0 / height), pad=0.02)
    bar.set_label("accuracy", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def _cmap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("accuracy", ["#f3f6fa", "#56B4E9", "#0b3d6b"])
    return cmap.with_extremes(bad="#e6e8ec")


def reliance_figure(models: Mapping[str, Diagnostics], split: str | None) -> Any | None:
    """Language-prior and context reliance per model on one split: one panel per measure."""

    def prior(s: SplitDiagnostics, field: str) -> float | None:
        return None if s.language_prior is None else getattr(s.language_prior, field)

    measures = [
        ("agreement with\nimage-blind answer", lambda s: prior(s, "prior_agreement")),
        ("flip rate,\nimage swapped", lambda s: prior(s, "image_swap_flip_rate")),
        (
            "flip rate,\ncontext replaced",
            lambda s: None if s.context is None else s.context.flip_rate,
        ),
    ]
    values: list[list[float | None]] = []
    for _, get in measures:
        column = []
        for d in models.values():
            sp = _split(d, split)
            column.append(None if sp is None else get(sp))
        values.append(column)
    keep = [i for i in range(len(measures)) if any(v is not None for v in values[i])]
    if not keep:
        return None
    names = list(models)
    fig = _figure(min(11.0, 2.4 + 2.6 * len(keep)), _row_height(len(names), 1))
    axes = fig.subplots(1, len(keep), squeeze=False, sharey=True)[0]
    colours = tuple(PALETTE[k % len(PALETTE)] for k in range(len(names)))
    for n, (ax, i) in enumerate(zip(axes, keep)):
        _hbars(ax, names, {"": values[i]}, xlabel="fraction of examples")
        for bar, colour in zip(ax.patches, colours):
            bar.set_color(colour)
        ax.set_title(measures[i][0], fontsize=9)
        if n:
            ax.tick_params(axis="y", labelleft=False)
    fig.suptitle(mpl_text(f"Reliance on shortcuts ({split})"), fontsize=10)
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
    many = len(data) > 3
    fig = _figure(7.6 if many else 5.2, 4.0)
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
    if many:  # beside the plot, where a long legend cannot cover the curves
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
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
    "MAX_LABELLED_BARS",
    "PALETTE",
    "SPLIT_COLOURS",
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
