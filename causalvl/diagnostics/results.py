"""Result dataclasses of the diagnostics: frozen, JSON round-trip, each number with its definition.

Every rate is a fraction in ``[0, 1]`` (never percent); every signed difference of rates lies
in ``[-1, 1]``. Values are checked on construction, so a result that exists is a valid result.
Each class carries a ``DEFINITIONS`` table (field -> one sentence) that reports print next to
the number, and :meth:`Result.metrics` lists the scalar numbers as :class:`Metric` rows.

    >>> from causalvl.diagnostics.results import BiasAlignment
    >>> r = BiasAlignment(accuracy_aligned=0.9, accuracy_conflicting=0.4, gap=0.5,
    ...                   n_aligned=90, n_conflicting=10)
    >>> BiasAlignment.from_dict(r.to_dict()) == r
    True
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from ..config import JSONSerializable
from ..errors import ConfigError, DataError, warn_at_caller
from ..outputs import EFFECT_KEYS

R = TypeVar("R", bound="Result")

#: How a number is shown: a rate in [0, 1], a signed difference of rates in [-1, 1], a count,
#: a non-negative quantity (e.g. KL in nats), or an unbounded real (e.g. a causal effect).
MetricKind = Literal["fraction", "difference", "count", "nonnegative", "real"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One scalar number with its meaning, as listed by :meth:`Result.metrics`.

    Attributes:
        key: stable identifier, e.g. ``"worst_group_accuracy"``.
        label: short human-readable name.
        value: the number (``None`` when it could not be computed).
        definition: one sentence saying exactly what was computed.
        kind: how to read and format it (see :data:`MetricKind`).
    """

    key: str
    label: str
    value: float | int | None
    definition: str
    kind: MetricKind = "fraction"


_RANGES: dict[str, tuple[float, float]] = {
    "fraction": (0.0, 1.0),
    "difference": (-1.0, 1.0),
    "count": (0.0, math.inf),
    "nonnegative": (0.0, math.inf),
    "real": (-math.inf, math.inf),
}

# numerical slack for values computed as float32 means
_EPS = 1e-6


def check_number(owner: str, name: str, value: Any, kind: MetricKind) -> Any:
    """Validate one number against its kind; clamp float round-off at the range ends.

    Raises:
        DataError: when the value is not a finite number in the allowed range.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(
            f"{owner}.{name} = {value!r} is not a number; results hold plain Python numbers "
            "(convert tensors with .item())."
        )
    lo, hi = _RANGES[kind]
    if kind == "count":
        if int(value) != value or value < 0:
            raise DataError(f"{owner}.{name} = {value!r} must be a non-negative integer count.")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise DataError(
            f"{owner}.{name} = {value!r} is not finite; check the model outputs for NaN/inf."
        )
    if value < lo - _EPS or value > hi + _EPS:
        what = {
            "fraction": "a fraction in [0, 1] (not a percentage)",
            "difference": "a difference of fractions in [-1, 1]",
            "nonnegative": "a non-negative number",
        }.get(kind, "a real number")
        raise DataError(f"{owner}.{name} = {value!r} must be {what}.")
    return min(max(value, lo), hi)


class Result(JSONSerializable):
    """Base of the frozen result dataclasses.

    Subclasses declare ``KINDS`` (field -> :data:`MetricKind`) for the scalar fields that are
    validated, ``DEFINITIONS`` (field -> sentence) and ``LABELS`` (field -> short name).
    """

    json_error = DataError

    KINDS: ClassVar[dict[str, MetricKind]] = {}
    DEFINITIONS: ClassVar[dict[str, str]] = {}
    LABELS: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A short repr for every result: dataclass() keeps a __repr__ the class body defines,
        # so put ours there before the decorator runs (its own would print every nested field).
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Result.__repr__  # type: ignore[method-assign]

    def __repr__(self) -> str:
        """``ClassName(field=value, ...)``: numbers to three decimals, nested results and long
        sequences abbreviated, ``None`` fields left out; :meth:`to_frame` has every number."""
        parts = [
            f"{f.name}={_short(getattr(self, f.name))}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        ]
        return f"{type(self).__name__}({', '.join(parts)})"

    def to_frame(self) -> Any:
        """Every number of :meth:`metrics` as a ``pandas.DataFrame`` indexed by metric key, with
        columns ``value`` and ``label`` (pandas is installed with dowhy)."""
        pd = _pandas()
        rows = self.metrics()
        return pd.DataFrame(
            {"value": [m.value for m in rows], "label": [m.label for m in rows]},
            index=pd.Index([m.key for m in rows], name="metric"),
        )

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, kind in self.KINDS.items():
            value = getattr(self, name)
            object.__setattr__(self, name, check_number(owner, name, value, kind))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif isinstance(value, dict):
                object.__setattr__(self, f.name, types.MappingProxyType(dict(value)))
        self._validate()

    def _validate(self) -> None:
        """Extra consistency checks; subclasses extend this."""

    # -- listing ------------------------------------------------------------------------
    def metrics(self, prefix: str = "") -> list[Metric]:
        """The scalar numbers of this result, each with its label, definition and kind."""
        out = []
        for name, kind in self.KINDS.items():
            out.append(
                Metric(
                    key=prefix + name,
                    label=self.LABELS.get(name, name.replace("_", " ")),
                    value=getattr(self, name),
                    definition=self.DEFINITIONS.get(name, ""),
                    kind=kind,
                )
            )
        return out

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, plus ``definitions`` for the documented numbers."""
        out = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if self.DEFINITIONS:
            out["definitions"] = dict(self.DEFINITIONS)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Rebuild from :meth:`to_dict` output (the ``definitions`` entry is ignored)."""
        if not isinstance(data, Mapping):
            raise DataError(
                f"{cls.__name__}.from_dict expects a mapping, got {type(data).__name__}."
            )
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: _decode(v, hints.get(k)) for k, v in data.items() if k in names}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise DataError(f"{cls.__name__}.from_dict: {exc}.") from exc


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas comes with dowhy
        from ..errors import OptionalDependencyError

        raise OptionalDependencyError(
            "to_frame needs pandas; install it with `pip install pandas`."
        ) from exc
    return pandas


def _short(value: Any) -> str:
    """A compact display of one field value for ``Result.__repr__``."""
    if isinstance(value, Result):
        return f"{type(value).__name__}(…)"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (math.inf, -math.inf):
            return str(value)
        if value != 0 and abs(value) < 0.001:
            return f"{value:.2e}"
        return f"{value:.3f}"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Mapping):
        keys = list(value)
        shown = ", ".join(map(str, keys[:4])) + (", ..." if len(keys) > 4 else "")
        return f"{{{shown}}}"
    if isinstance(value, (tuple, list)):
        if len(value) <= 4 and not any(isinstance(v, Result) for v in value):
            return (
                "(" + ", ".join(_short(v) for v in value) + ("," if len(value) == 1 else "") + ")"
            )
        kind = type(value[0]).__name__ if isinstance(value[0], Result) else "value"
        return f"<{len(value)} {kind}s>"
    return repr(value)


def _encode(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        return value.item()
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} to JSON.")


def _decode(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            return _decode(value, arg)
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint.from_dict(value)
    if origin in (tuple, Sequence) or origin is typing.Sequence:
        inner = args[0] if args else None
        return tuple(_decode(v, inner) for v in value)
    if origin in (dict, Mapping) or origin is typing.Mapping:
        inner = args[1] if len(args) == 2 else None
        return {k: _decode(v, inner) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------
# accuracy and groups
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupScore(Result):
    """Accuracy of one evaluation group.

    Attributes:
        group: the group id from the batch key ``group``.
        name: a readable name such as ``"answer=yes, prior=yes"``.
        accuracy: fraction correct in this group.
        n: number of examples in the group.
    """

    group: int
    name: str
    accuracy: float
    n: int

    KINDS: ClassVar[dict[str, MetricKind]] = {"accuracy": "fraction", "n": "count"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupMetrics(Result):
    """Per-group accuracy and the aggregates group-robustness papers report.

    The literature uses several different "average accuracies"; each is given here with its
    definition so that results are comparable. The worst group is taken among the groups of at
    least ``min_group_size`` examples: a group of two examples has accuracy 0 by bad luck
    alone. Smaller groups stay in ``per_group`` and are also listed in ``small_groups``; when no
    group is large enough, ``worst_group`` / ``worst_group_accuracy`` / ``gap`` are ``None``.
    """

    per_group: tuple[GroupScore, ...]
    worst_group: GroupScore | None
    average_sample_weighted: float
    average_over_groups: float
    worst_group_accuracy: float | None
    gap: float | None
    average_train_weighted: float | None = None
    group_source: str = "the batch key 'group'"
    min_group_size: int = 1
    small_groups: tuple[GroupScore, ...] = ()

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "average_sample_weighted": "fraction",
        "average_over_groups": "fraction",
        "worst_group_accuracy": "fraction",
        "gap": "difference",
        "average_train_weighted": "fraction",
        "min_group_size": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "average_sample_weighted": "average accuracy (sample-weighted)",
        "average_over_groups": "average accuracy (mean over groups)",
        "worst_group_accuracy": "worst-group accuracy",
        "gap": "average − worst-group gap",
        "average_train_weighted": "average accuracy (train-proportion weighted)",
        "min_group_size": "minimum group size for the worst group",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "average_sample_weighted": "Fraction of all evaluated examples answered correctly; every "
        "example counts once, so large groups dominate (group_DRO's 'average accuracy').",
        "average_over_groups": "Unweighted mean of the per-group accuracies; every group counts "
        "once whatever its size (SubpopBench's 'adjusted accuracy').",
        "worst_group_accuracy": "The lowest per-group accuracy among groups of at least "
        "min_group_size examples; the worst group is the group with the lowest accuracy, not "
        "the smallest group. Smaller groups are listed separately (small_groups).",
        "gap": "Sample-weighted average accuracy minus worst-group accuracy; large values mean "
        "the average hides a group the model fails.",
        "average_train_weighted": "Per-group accuracies weighted by each group's share of the "
        "training set (JTT's 'average accuracy'); only when training proportions are given.",
        "min_group_size": "Groups with fewer examples than this are left out of the worst "
        "group (their accuracy is mostly noise) and listed separately.",
    }

    def _validate(self) -> None:
        if not self.per_group:
            raise DataError("GroupMetrics needs at least one group.")
        eligible = [g.accuracy for g in self.per_group if g.n >= self.min_group_size]
        if self.worst_group is None:
            if eligible:
                raise DataError(
                    f"GroupMetrics.worst_group is None, but {len(eligible)} group(s) have at "
                    f"least min_group_size={self.min_group_size} examples."
                )
            return
        lowest = min(eligible) if eligible else None
        if lowest is None or abs(self.worst_group.accuracy - lowest) > 1e-9:
            raise DataError(
                f"GroupMetrics.worst_group {self.worst_group.name!r} has accuracy "
                f"{self.worst_group.accuracy}, but the lowest accuracy of the groups with at "
                f"least {self.min_group_size} examples is {lowest}."
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyResult(Result):
    """Accuracy over a split and, when batches carry ``group``, its per-group breakdown: what
    :class:`~causalvl.diagnostics.probes.AccuracyProbe` gives ``diagnose`` and the Trainer."""

    accuracy: float
    n: int
    groups: GroupMetrics | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {"accuracy": "fraction", "n": "count"}
    LABELS: ClassVar[dict[str, str]] = {"accuracy": "accuracy", "n": "n (examples)"}
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "accuracy": "Fraction of examples whose predicted answer (arg-max of the logits) is the "
        "label; with soft VQA scores, the mean score of the predicted answer.",
        "n": "Number of examples evaluated.",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class BiasAlignment(Result):
    """Accuracy on examples whose answer agrees with the training prior vs. those that do not."""

    accuracy_aligned: float | None
    accuracy_conflicting: float | None
    gap: float | None
    n_aligned: int
    n_conflicting: int

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "accuracy_aligned": "fraction",
        "accuracy_conflicting": "fraction",
        "gap": "difference",
        "n_aligned": "count",
        "n_conflicting": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "accuracy_aligned": "accuracy, bias-aligned",
        "accuracy_conflicting": "accuracy, bias-conflicting",
        "gap": "aligned − conflicting gap",
        "n_aligned": "n bias-aligned",
        "n_conflicting": "n bias-conflicting",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "accuracy_aligned": "Accuracy on examples whose answer agrees with the training prior "
        "(batch key 'bias_aligned' true): the shortcut gives the right answer here.",
        "accuracy_conflicting": "Accuracy on examples whose answer contradicts the training "
        "prior: the shortcut gives a wrong answer here, so only a model that looks is right.",
        "gap": "Bias-aligned accuracy minus bias-conflicting accuracy; near 0 means the model "
        "does not depend on the shortcut, large positive values mean it does.",
        "n_aligned": "Number of bias-aligned examples.",
        "n_conflicting": "Number of bias-conflicting examples.",
    }


# ---------------------------------------------------------------------------------------
# reliance
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanguagePriorReliance(Result):
    """How much the prediction depends on the text alone (the language prior)."""

    prior_agreement: float | None
    mean_kl: float | None
    image_swap_flip_rate: float | None
    null_accuracy: float | None
    null_mode: str
    n: int
    n_swapped: int
    not_applicable: str | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "prior_agreement": "fraction",
        "mean_kl": "nonnegative",
        "image_swap_flip_rate": "fraction",
        "null_accuracy": "fraction",
        "n": "count",
        "n_swapped": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "prior_agreement": "agreement with image-blind prediction",
        "mean_kl": "KL(factual ‖ image-blind), nats",
        "image_swap_flip_rate": "flip rate when the image is swapped",
        "null_accuracy": "accuracy without the image",
        "n": "n (language prior)",
        "n_swapped": "n (image swap)",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "prior_agreement": "Fraction of examples where the prediction equals the prediction of "
        "the same model on the same text with the image removed (null-vision counterfactual); "
        "high values mean the answer comes from the question alone.",
        "mean_kl": "Mean KL divergence KL(p_factual ‖ p_image_blind) between the answer "
        "distributions with and without the image, in nats; near 0 means the image barely "
        "changes the answer distribution.",
        "image_swap_flip_rate": "Fraction of examples whose prediction changes when the image "
        "is replaced by another example's image (a seeded within-batch derangement, so no "
        "example keeps its own image); low values mean the image is ignored.",
        "null_accuracy": "Accuracy of the image-blind prediction: how much of the data the "
        "model solves from the text alone.",
        "n": "Number of examples with an image-blind prediction.",
        "n_swapped": "Number of examples with an image-swap prediction (batches of one cannot "
        "be swapped).",
        "not_applicable": "Why the image-blind measures (agreement, KL, accuracy without the "
        "image) do not apply to this model and are left empty (n/a), or None.",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContextReliance(Result):
    """How much the prediction depends on the context region rather than the target."""

    flip_rate: float | None
    accuracy_factual: float | None
    accuracy_replaced: float | None
    accuracy_change: float | None
    mode: str
    n: int

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "flip_rate": "fraction",
        "accuracy_factual": "fraction",
        "accuracy_replaced": "fraction",
        "accuracy_change": "difference",
        "n": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "flip_rate": "flip rate when the context is replaced",
        "accuracy_factual": "accuracy, original context",
        "accuracy_replaced": "accuracy, replaced context",
        "accuracy_change": "accuracy change (replaced − original)",
        "n": "n (context)",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "flip_rate": "Fraction of examples whose prediction changes when only the context "
        "region is replaced (by another example's context, or by zeros) and the target region "
        "is left as it was; a model that looks at the target should rarely flip.",
        "accuracy_factual": "Accuracy with the original context.",
        "accuracy_replaced": "Accuracy with the context region replaced.",
        "accuracy_change": "Accuracy with the replaced context minus accuracy with the original; "
        "negative values mean the model was helped by a context it should not need.",
        "n": "Number of examples with a marked context region.",
    }


# ---------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrationResult(Result):
    """Top-label calibration with equal-width confidence bins.

    ``bin_confidence[b]`` / ``bin_accuracy[b]`` are ``None`` for empty bins. A confidence ``c``
    falls in bin ``b`` when ``edges[b] < c <= edges[b + 1]`` (a confidence of exactly 0 falls
    in the first bin).
    """

    ece: float
    n_bins: int
    bin_edges: tuple[float, ...]
    bin_confidence: tuple[float | None, ...]
    bin_accuracy: tuple[float | None, ...]
    bin_count: tuple[int, ...]
    mean_confidence: float
    accuracy: float
    confidence_aligned: float | None = None
    confidence_conflicting: float | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "ece": "fraction",
        "mean_confidence": "fraction",
        "accuracy": "fraction",
        "confidence_aligned": "fraction",
        "confidence_conflicting": "fraction",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "ece": "expected calibration error",
        "mean_confidence": "mean confidence",
        "accuracy": "accuracy (calibration)",
        "confidence_aligned": "mean confidence, bias-aligned",
        "confidence_conflicting": "mean confidence, bias-conflicting",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "ece": "Top-label expected calibration error: the predicted-class probabilities are put "
        "in equal-width bins over [0, 1]; ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|. "
        "0 means the stated confidence matches how often the model is right.",
        "mean_confidence": "Mean probability of the predicted class.",
        "accuracy": "Fraction correct over the same examples.",
        "confidence_aligned": "Mean predicted-class probability on bias-aligned examples.",
        "confidence_conflicting": "Mean predicted-class probability on bias-conflicting "
        "examples; a model that follows a shortcut is often as confident here while being wrong.",
    }

    def _validate(self) -> None:
        m = self.n_bins
        if len(self.bin_edges) != m + 1 or not (
            len(self.bin_confidence) == len(self.bin_accuracy) == len(self.bin_count) == m
        ):
            raise DataError(
                f"CalibrationResult: {m} bins need {m + 1} edges and {m} values per bin; got "
                f"{len(self.bin_edges)} edges, {len(self.bin_confidence)} confidences, "
                f"{len(self.bin_accuracy)} accuracies, {len(self.bin_count)} counts."
            )
        for b in range(m):
            check_number(
                "CalibrationResult", f"bin_confidence[{b}]", self.bin_confidence[b], "fraction"
            )
            check_number(
                "CalibrationResult", f"bin_accuracy[{b}]", self.bin_accuracy[b], "fraction"
            )
            check_number("CalibrationResult", f"bin_count[{b}]", self.bin_count[b], "count")


# ---------------------------------------------------------------------------------------
# effects
# ---------------------------------------------------------------------------------------

#: a display name for each key of :data:`causalvl.outputs.EFFECT_KEYS`, in that order
EFFECT_NAMES: dict[str, str] = dict(
    zip(
        EFFECT_KEYS,
        (
            "total effect (TE)",
            "natural direct effect (NDE)",
            "total indirect effect (TIE)",
            "natural indirect effect (NIE)",
            "image-blind prediction (language prior)",
        ),
        strict=True,
    )
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectSummary(Result):
    """Magnitude of one causal effect tensor of the wrapped model's output.

    ``hist_edges`` / ``hist_counts`` histogram the predicted-class entries.
    """

    effect: str
    mean_abs: float
    mean_predicted: float
    n: int
    hist_edges: tuple[float, ...] = ()
    hist_counts: tuple[int, ...] = ()

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "mean_abs": "nonnegative",
        "mean_predicted": "real",
        "n": "count",
    }

    def _validate(self) -> None:
        if self.hist_counts and len(self.hist_edges) != len(self.hist_counts) + 1:
            raise DataError(
                f"EffectSummary({self.effect!r}): {len(self.hist_counts)} histogram counts need "
                f"{len(self.hist_counts) + 1} edges, got {len(self.hist_edges)}."
            )

    def metrics(self, prefix: str = "") -> list[Metric]:
        name = EFFECT_NAMES.get(self.effect, self.effect)
        return [
            Metric(
                key=f"{prefix}{self.effect}_mean_abs",
                label=f"{name}: mean |value|",
                value=self.mean_abs,
                definition=f"Mean absolute value of the {name} over all examples and answer "
                "entries (logit units).",
                kind="nonnegative",
            ),
            Metric(
                key=f"{prefix}{self.effect}_mean_predicted",
                label=f"{name}: predicted answer",
                value=self.mean_predicted,
                definition=f"Mean of the {name} entry of each example's predicted answer "
                "(logit units).",
                kind="real",
            ),
        ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectMagnitudes(Result):
    """TE / NDE / TIE / NIE magnitudes, keyed by effect name, always in that order (then any
    other effect by name), so every report and every JSON round-trip lists them alike."""

    effects: Mapping[str, EffectSummary]

    def _validate(self) -> None:
        rank = {key: i for i, key in enumerate(EFFECT_NAMES)}
        order = sorted(self.effects, key=lambda k: (rank.get(k, len(rank)), str(k)))
        if list(self.effects) != order:
            ordered = {k: self.effects[k] for k in order}
            object.__setattr__(self, "effects", types.MappingProxyType(ordered))

    def metrics(self, prefix: str = "") -> list[Metric]:
        out: list[Metric] = []
        for summary in self.effects.values():
            out.extend(summary.metrics(prefix))
        return out


# ---------------------------------------------------------------------------------------
# compositional
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompositionalScores(Result):
    """Winoground text / image / group scores and foil accuracy."""

    text_score: float | None = None
    image_score: float | None = None
    group_score: float | None = None
    n_pairs: int = 0
    foil_accuracy: float | None = None
    n_foils: int = 0

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "text_score": "fraction",
        "image_score": "fraction",
        "group_score": "fraction",
        "n_pairs": "count",
        "foil_accuracy": "fraction",
        "n_foils": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "text_score": "Winoground text score",
        "image_score": "Winoground image score",
        "group_score": "Winoground group score",
        "n_pairs": "n (Winoground pairs)",
        "foil_accuracy": "foil accuracy",
        "n_foils": "n (foils)",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "text_score": "Fraction of 2×2 examples where each image scores its own caption higher "
        "than the other caption: s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1). Chance is 0.25.",
        "image_score": "Fraction of 2×2 examples where each caption scores its own image higher "
        "than the other image: s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0). Chance is 0.25.",
        "group_score": "Fraction of 2×2 examples that pass both the text and the image test. "
        "Chance is 1/6.",
        "n_pairs": "Number of 2×2 examples.",
        "foil_accuracy": "Fraction of examples where the true caption scores strictly higher "
        "than its foil (a minimally edited wrong caption); ties count as failures. Chance is 0.5.",
        "n_foils": "Number of caption/foil pairs.",
    }


# ---------------------------------------------------------------------------------------
# causal effect (dowhy bridge)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefutationResult(Result):
    """One refutation check of a causal estimate, with its verdict in words.

    A refuter *passes* when its p-value is not significant (p >= ``significance_level``): the
    check found no evidence against the estimate. A low p-value means the check found a
    problem, not that the effect is real.
    """

    name: str
    new_effect: float | None
    p_value: float | None
    passed: bool | None
    expectation: str
    verdict: str
    estimate_method: str = ""
    significance_level: float = 0.05

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "new_effect": "real",
        "p_value": "fraction",
        "significance_level": "fraction",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectEstimate(Result):
    """Estimated causal effect of a (spurious) treatment on an outcome, with refutations."""

    value: float
    method: str
    treatment: str
    outcome: str
    backdoor_variables: tuple[str, ...]
    refutations: tuple[RefutationResult, ...] = ()
    n: int = 0
    elapsed_s: float = 0.0
    seed: int | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "value": "real",
        "n": "count",
        "elapsed_s": "nonnegative",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "value": "causal effect of the cue on correctness",
        "n": "n (causal estimate)",
        "elapsed_s": "time for estimate and refutations, s",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "value": "Average treatment effect of the treatment column on the outcome column after "
        "backdoor adjustment for the common causes (dowhy); for a 0/1 outcome such as "
        "'correct' it is the change in the probability of being correct caused by the cue.",
        "n": "Number of rows used.",
        "elapsed_s": "Wall-clock seconds spent on the estimate and all refutations.",
    }

    @property
    def all_passed(self) -> bool:
        """True when every refutation with a verdict passed."""
        return all(r.passed is not False for r in self.refutations)


# ---------------------------------------------------------------------------------------
# dataset audit
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditCategoryScore(Result):
    """Held-out accuracy of one blind scorer on one category, with a 95% Wilson interval.

    ``accuracy`` counts a tie (the scorer cannot tell the two texts apart) as half right, the
    expected score of a coin flip, so chance is exactly 0.5 in pairwise mode.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    n: int

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "accuracy": "fraction",
        "ci_low": "fraction",
        "ci_high": "fraction",
        "n": "count",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditScorer(Result):
    """One blind scorer's held-out accuracy: overall, macro over categories, per category."""

    name: str
    description: str
    macro_accuracy: float
    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    categories: Mapping[str, AuditCategoryScore]

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "macro_accuracy": "fraction",
        "accuracy": "fraction",
        "ci_low": "fraction",
        "ci_high": "fraction",
        "n": "count",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditCue(Result):
    """A named cue: a feature that gives the answer away in one category, with an example.

    ``weight`` is the feature's weight in the scorer fitted on the whole category: positive
    when the feature marks the true text, negative when it marks the negative (pairwise), or
    the weight towards ``label`` (single-text mode). ``example`` holds one pair (``true`` /
    ``negative``) or one text (``text`` / ``label``) showing the feature.
    """

    category: str
    scorer: str
    feature: str
    weight: float
    description: str
    example: Mapping[str, str]
    accuracy: float | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {"weight": "real", "accuracy": "fraction"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlindSolvabilityAudit(Result):
    """How much of a benchmark a model that never sees the image can solve.

    ``scorers`` maps each blind scorer (``tfidf``, ``embedding``, ``length``, ``format``,
    ``bigram_lm``, and in single-text mode ``majority`` / ``majority_per_question_type``) to
    its held-out scores; ``cues`` names what gives the answer away; ``protocol`` records how
    the numbers were obtained (mode, folds, grouping, seed). The flat fields
    (``text_model_accuracy`` ...) summarise the TF-IDF scorer against the chance / majority
    baseline.
    """

    text_model_accuracy: float
    text_model_accuracy_std: float
    majority_per_question_type_accuracy: float | None
    majority_class_accuracy: float
    blind_gain: float
    n: int
    n_classes: int
    folds: int
    seed: int
    text_source: str = ""
    benchmark: str = "custom"
    mode: str = "single"
    n_items: int = 0
    protocol: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scorers: Mapping[str, AuditScorer] = dataclasses.field(default_factory=dict)
    cues: tuple[AuditCue, ...] = ()
    notes: tuple[str, ...] = ()

    KINDS: ClassVar[dict[str, MetricKind]] = {
        "text_model_accuracy": "fraction",
        "text_model_accuracy_std": "fraction",
        "majority_per_question_type_accuracy": "fraction",
        "majority_class_accuracy": "fraction",
        "blind_gain": "difference",
        "n": "count",
        "n_classes": "count",
        "folds": "count",
    }
    LABELS: ClassVar[dict[str, str]] = {
        "text_model_accuracy": "text-only model accuracy",
        "text_model_accuracy_std": "text-only model accuracy, std over folds",
        "majority_per_question_type_accuracy": "majority answer per question type",
        "majority_class_accuracy": "majority answer overall (chance in pairwise mode)",
        "blind_gain": "text-only gain over majority / chance",
        "n": "n (audit)",
        "n_classes": "number of answers",
        "folds": "cross-validation folds",
    }
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "text_model_accuracy": "Held-out accuracy of a blind model (TF-IDF of word unigrams and "
        "bigrams + logistic regression on the text only), macro-averaged over categories, "
        "under grouped cross-validation (or fitted on a training split and scored on a test "
        "split): how much of the benchmark its language prior alone solves.",
        "text_model_accuracy_std": "Standard deviation of the text-only accuracy over folds.",
        "majority_per_question_type_accuracy": "Held-out accuracy of answering the most common "
        "training answer of the question's type (the classic VQA 'prior' baseline).",
        "majority_class_accuracy": "Held-out accuracy of always answering the most common "
        "training answer; 0.5 (chance) in pairwise mode, where each pair is shown in a random "
        "order.",
        "blind_gain": "Text-only accuracy minus majority-class (or chance) accuracy; large values "
        "mean the texts alone give the answer away, negative values mean the text model does "
        "worse than the trivial baseline.",
        "n": "Number of scored items (pairs in pairwise mode, texts in single-text mode).",
        "n_classes": "Number of distinct answers (2 in pairwise mode: which text is true).",
        "folds": "Number of cross-validation folds (0 when fitted on one split and scored on "
        "another).",
    }

    @property
    def best_scorer(self) -> AuditScorer | None:
        """The blind scorer with the highest macro accuracy (None without scorers)."""
        blind = [s for n, s in self.scorers.items() if not n.startswith("majority")]
        return max(blind, key=lambda s: s.macro_accuracy) if blind else None

    def summary(self) -> str:
        """One sentence: the best blind scorer against chance, worded by the sign of the gain."""
        best = self.best_scorer
        if best is None:
            return "No blind scorer ran."
        base = self.majority_class_accuracy
        if self.mode != "pairwise" and "majority" in self.scorers:
            base = self.scorers["majority"].macro_accuracy
        what = "chance" if self.mode == "pairwise" else "the most common answer"
        gain = best.macro_accuracy - base
        head = (
            f"The best blind text-only model ({best.name}) reaches {best.macro_accuracy:.3f} macro "
            f"accuracy vs {base:.3f} for {what}"
        )
        if best.ci_low > base:
            return (
                f"{head}: {gain:+.3f}, significantly above {what}; that much of the benchmark can "
                "be solved without the image."
            )
        if gain < 0:
            return (
                f"{head}: {gain:+.3f}, below {what}; no blind scorer finds a cue (a score below "
                f"{what} is noise or a protocol problem, not a finding)."
            )
        return (
            f"{head}: {gain:+.3f}, within the 95% interval of {what}; no blind scorer finds a "
            "reliable cue."
        )


# ---------------------------------------------------------------------------------------
# extra tables (e.g. hallucination / POPE) and the containers
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricRow(Result):
    """One row of a :class:`MetricTable`: a named number per column, with its definition."""

    name: str
    values: tuple[float | int | None, ...]
    definition: str = ""
    kind: MetricKind = "fraction"

    def _validate(self) -> None:
        if self.kind not in _RANGES:
            raise DataError(
                f"MetricRow({self.name!r}).kind = {self.kind!r}; choose one of {sorted(_RANGES)}."
            )
        checked = tuple(
            check_number(f"MetricRow({self.name!r})", f"values[{i}]", v, self.kind)
            for i, v in enumerate(self.values)
        )
        object.__setattr__(self, "values", checked)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricTable(Result):
    """A named table of numbers with definitions: the way to add sections to a report.

    Columns are whatever the numbers vary over (settings such as POPE's random / popular /
    adversarial splits, or models); rows are metrics.

        >>> t = MetricTable.from_mapping(
        ...     "Hallucination (POPE)",
        ...     {"random": {"accuracy": 0.85, "yes_ratio": 0.52}},
        ...     definitions={"accuracy": "Fraction of yes/no object questions answered right."},
        ... )
        >>> t.rows[0].name, t.rows[0].values
        ('accuracy', (0.85,))
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[MetricRow, ...]
    description: str = ""

    def _validate(self) -> None:
        for row in self.rows:
            if len(row.values) != len(self.columns):
                raise DataError(
                    f"MetricTable({self.title!r}): row {row.name!r} has {len(row.values)} values "
                    f"for {len(self.columns)} columns {list(self.columns)}."
                )

    @classmethod
    def from_mapping(
        cls,
        title: str,
        values: Mapping[str, Mapping[str, float | int | None]],
        *,
        definitions: Mapping[str, str] | None = None,
        kinds: Mapping[str, MetricKind] | None = None,
        description: str = "",
    ) -> MetricTable:
        """Build from ``{column: {metric: value}}``; metrics missing in a column are ``None``.

        Kinds default to ``"fraction"`` for values in [0, 1] and ``"real"`` otherwise.
        """
        if not isinstance(values, Mapping) or not all(
            isinstance(v, Mapping) for v in values.values()
        ):
            raise DataError(
                f"MetricTable.from_mapping({title!r}) expects {{column: {{metric: value}}}}, got "
                f"{type(values).__name__}."
            )
        definitions = dict(definitions or {})
        kinds = dict(kinds or {})
        columns = tuple(str(c) for c in values)
        names: list[str] = []
        for col in values.values():
            for name in col:
                if name not in names:
                    names.append(str(name))
        rows = []
        for name in names:
            vals = tuple(values[c].get(name) for c in values)
            kind = kinds.get(name)
            if kind is None:
                nums = [v for v in vals if v is not None]
                kind = "fraction" if all(0 <= v <= 1 for v in nums) else "real"
            rows.append(
                MetricRow(name=name, values=vals, definition=definitions.get(name, ""), kind=kind)
            )
        return cls(title=str(title), columns=columns, rows=tuple(rows), description=description)


def makes_metric_table(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`MetricTable` or a result that makes one
    (``to_metric_table()``, e.g. a :class:`~causalvl.decoding.POPEResult`)."""
    if isinstance(obj, MetricTable):
        return True
    return callable(getattr(obj, "to_metric_table", None)) and not isinstance(obj, type)


def as_metric_table(obj: Any, *, what: str = "a table") -> MetricTable:
    """``obj`` as a :class:`MetricTable`: itself, or what its ``to_metric_table()`` returns
    (e.g. a :class:`~causalvl.decoding.POPEResult`); ``what`` names ``obj`` in the error.

    Raises:
        DataError: ``obj`` is neither (or its ``to_metric_table()`` returns something else).
    """
    if isinstance(obj, MetricTable):
        return obj
    if makes_metric_table(obj):
        table = obj.to_metric_table()
        if isinstance(table, MetricTable):
            return table
    raise DataError(
        f"{what} must be a MetricTable or a result with to_metric_table() (such as a "
        f"POPEResult), got {type(obj).__name__}; build one with "
        "MetricTable.from_mapping(title, {column: {metric: value}})."
    )


Distribution = Literal["id", "ood", "unspecified"]

DISTRIBUTION_LABELS: dict[str, str] = {
    "id": "in-distribution",
    "ood": "out-of-distribution",
    "unspecified": "unspecified distribution",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitDiagnostics(Result):
    """Every diagnostic of one model on one evaluation split.

    ``distribution`` says whether the split is in-distribution (``"id"``: the answer/context
    statistics match training) or out-of-distribution (``"ood"``: they are shifted, as in
    VQA-CP). Parts that do not apply to the data or model are ``None``.
    """

    name: str
    distribution: Distribution
    n: int
    accuracy: float
    groups: GroupMetrics | None = None
    bias: BiasAlignment | None = None
    language_prior: LanguagePriorReliance | None = None
    context: ContextReliance | None = None
    calibration: CalibrationResult | None = None
    effects: EffectMagnitudes | None = None
    compositional: CompositionalScores | None = None
    effect_estimate: EffectEstimate | None = None

    KINDS: ClassVar[dict[str, MetricKind]] = {"accuracy": "fraction", "n": "count"}
    LABELS: ClassVar[dict[str, str]] = {"accuracy": "accuracy", "n": "n (examples)"}
    DEFINITIONS: ClassVar[dict[str, str]] = {
        "accuracy": "Fraction of examples whose predicted answer (arg-max of the logits) is the "
        "label; with soft VQA scores, the mean score of the predicted answer.",
        "n": "Number of examples evaluated.",
    }

    def __repr__(self) -> str:
        """The split's headline numbers on one line; :meth:`to_frame` has every number."""
        return f"SplitDiagnostics({self.name!r}, {self._headline()})"

    def _headline(self) -> str:
        items = [f"distribution={self.distribution!r}", f"n={self.n}"]
        items.append(f"accuracy={_short(self.accuracy)}")
        picks = (
            ("worst_group_accuracy", self.groups, "worst_group_accuracy"),
            ("bias_gap", self.bias, "gap"),
            ("prior_agreement", self.language_prior, "prior_agreement"),
            ("context_flip_rate", self.context, "flip_rate"),
            ("ece", self.calibration, "ece"),
            ("effect_estimate", self.effect_estimate, "value"),
        )
        for label, part, field in picks:
            value = None if part is None else getattr(part, field)
            if value is not None:
                items.append(f"{label}={_short(float(value))}")
        if self.effects is not None:
            items.append(f"effects=({', '.join(self.effects.effects)})")
        if self.compositional is not None:
            items.append("compositional=CompositionalScores(…)")
        return ", ".join(items)

    def _validate(self) -> None:
        if self.distribution not in DISTRIBUTION_LABELS:
            raise DataError(
                f"SplitDiagnostics.distribution = {self.distribution!r}; choose one of "
                f"{sorted(DISTRIBUTION_LABELS)}."
            )

    def metrics(self, prefix: str = "") -> list[Metric]:
        out = super().metrics(prefix)
        for part in (
            "groups",
            "bias",
            "language_prior",
            "context",
            "calibration",
            "effects",
            "compositional",
            "effect_estimate",
        ):
            value = getattr(self, part)
            if value is not None:
                out.extend(value.metrics(f"{prefix}{part}."))
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Diagnostics(Result):
    """Diagnostics of one model on one or several named splits.

    Index by split name (``d["ood"]``); ``d.splits`` keeps the order the splits were given.
    ``extras`` holds additional named tables (e.g. hallucination / POPE results) that reports
    show as their own sections.

        >>> from causalvl.diagnostics.results import Diagnostics, SplitDiagnostics
        >>> d = Diagnostics(splits={"ood": SplitDiagnostics(name="ood", distribution="ood",
        ...                                                   n=10, accuracy=0.4)})
        >>> d["ood"].accuracy
        0.4
    """

    splits: Mapping[str, SplitDiagnostics]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extras: tuple[MetricTable, ...] = ()

    def _validate(self) -> None:
        if not self.splits:
            raise DataError("Diagnostics needs at least one split.")
        for key, split in self.splits.items():
            if not isinstance(split, SplitDiagnostics):
                raise DataError(
                    f"Diagnostics.splits[{key!r}] is a {type(split).__name__}, expected "
                    "SplitDiagnostics."
                )

    def __repr__(self) -> str:
        """One line per split with its headline numbers; :meth:`to_frame` has every number."""
        lines = [f"Diagnostics({len(self.splits)} split{'s' if len(self.splits) != 1 else ''}"]
        lines[0] += f", {len(self.extras)} extra tables)" if self.extras else ")"
        width = max(len(repr(name)) for name in self.splits)
        for name, split in self.splits.items():
            lines.append(f"  {repr(name).ljust(width)}: {split._headline()}")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """Every number as a ``pandas.DataFrame``: one row per metric key (e.g.
        ``"groups.worst_group_accuracy"``), one column per split, plus ``label``."""
        pd = _pandas()
        values: dict[str, dict[str, Any]] = {}
        labels: dict[str, str] = {}
        for name, split in self.splits.items():
            for m in split.metrics():
                values.setdefault(name, {})[m.key] = m.value
                labels.setdefault(m.key, m.label)
        frame = pd.DataFrame(values, index=pd.Index(list(labels), name="metric"))
        frame["label"] = pd.Series(labels)
        return frame

    def __getitem__(self, name: str) -> SplitDiagnostics:
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(
                f"no split named {name!r}; this Diagnostics has {list(self.splits)}."
            ) from None

    def __iter__(self):
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)

    def split_of(self, distribution: Distribution) -> SplitDiagnostics | None:
        """The first split with the given distribution label, or ``None``."""
        for split in self.splits.values():
            if split.distribution == distribution:
                return split
        return None

    def metrics(self, prefix: str = "") -> list[Metric]:
        """Metrics of every split, keyed ``"<split>/<metric>"``."""
        out: list[Metric] = []
        for name, split in self.splits.items():
            out.extend(split.metrics(f"{prefix}{name}/"))
        return out

    @classmethod
    def join(cls, *parts: Diagnostics, extras: Sequence[MetricTable] = ()) -> Diagnostics:
        """Join diagnostics of the same model computed on different splits (e.g. ID and OOD).

        Raises:
            DataError: when two parts have a split of the same name.
        """
        splits: dict[str, SplitDiagnostics] = {}
        config: dict[str, Any] = {}
        all_extras: list[MetricTable] = []
        for part in parts:
            for name, split in part.splits.items():
                if name in splits:
                    raise DataError(
                        f"Diagnostics.join: split {name!r} appears twice; give the splits "
                        "distinct names (diagnose(..., name='id') / name='ood')."
                    )
                splits[name] = split
            config = config or dict(part.config)
            all_extras.extend(part.extras)
        all_extras.extend(extras)
        return cls(splits=splits, config=config, extras=tuple(all_extras))

    @classmethod
    def combine(cls, *parts: Diagnostics, extras: Sequence[MetricTable] = ()) -> Diagnostics:
        """Deprecated name of :meth:`join` (``combine`` is the intervention protocol's step)."""
        warn_at_caller(
            "Diagnostics.combine is deprecated and will be removed in the next release; use "
            "Diagnostics.join (same arguments)."
        )
        return cls.join(*parts, extras=extras)

    def with_extras(self, *tables: Any) -> Diagnostics:
        """A copy with more extra tables attached: :class:`MetricTable` objects, or results
        that convert to one with ``to_metric_table()`` (e.g. a
        :class:`~causalvl.decoding.POPEResult`)."""
        converted = [as_metric_table(t, what="a with_extras table") for t in tables]
        return dataclasses.replace(self, extras=(*self.extras, *converted))

    def with_split_results(self, split: str, **parts: Any) -> Diagnostics:
        """A copy with results added to one split, e.g. ``compositional=`` or ``effect_estimate=``."""
        current = self[split]
        splits = dict(self.splits)
        splits[split] = dataclasses.replace(current, **parts)
        return dataclasses.replace(self, splits=splits)


__all__ = [
    "AccuracyResult",
    "AuditCategoryScore",
    "AuditCue",
    "AuditScorer",
    "BiasAlignment",
    "BlindSolvabilityAudit",
    "CalibrationResult",
    "CompositionalScores",
    "ContextReliance",
    "DISTRIBUTION_LABELS",
    "Diagnostics",
    "EFFECT_NAMES",
    "EffectEstimate",
    "EffectMagnitudes",
    "EffectSummary",
    "GroupMetrics",
    "GroupScore",
    "LanguagePriorReliance",
    "Metric",
    "MetricRow",
    "MetricTable",
    "as_metric_table",
    "makes_metric_table",
    "RefutationResult",
    "Result",
    "SplitDiagnostics",
]
