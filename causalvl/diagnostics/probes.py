"""Probes: one diagnostic each, fed batch by batch.

:func:`causalvl.diagnose` runs the model once per batch and hands every probe the batch and a
:class:`StepOutputs` (logits, predictions, per-example correctness, effects); a probe keeps
what it needs and turns it into its result with the pure metric functions of this package
(:func:`~causalvl.diagnostics.metrics.group_metrics`,
:func:`~causalvl.diagnostics.calibration.calibration`, ...). The Trainer's evaluation uses
:class:`AccuracyProbe`, so its ``<split>/accuracy`` and worst-group accuracy come from the
same code as ``diagnose``'s.

The protocol:

* ``applies(context) -> str | None``: ``None`` when the probe runs on this split, else why it
  does not (the metric was not requested, the model has no language input, ...). A probe that
  does not apply leaves its part of :class:`~causalvl.diagnostics.results.SplitDiagnostics`
  empty (``None``); reports show it as n/a, never as 0.
* ``update(batch, outputs)``: accumulate one batch (tensors, moved to the CPU).
* ``finish() -> Result | None``: the result, or ``None`` when the data never supported it
  (e.g. no batch carried ``bias_aligned``).

Adding a diagnostic is one :class:`Probe` subclass with its result class and an entry in
:data:`PROBES`.

    >>> import torch
    >>> probe = AccuracyProbe(min_group_size=1)
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> batch = {"labels": torch.tensor([0, 0, 0]), "group": torch.tensor([0, 0, 1])}
    >>> probe.update(batch, StepOutputs.of(logits, batch["labels"]))
    >>> r = probe.finish()
    >>> round(r.accuracy, 3), r.groups.worst_group_accuracy
    (0.667, 0.5)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..batch import correctness
from ..errors import CausalVLError, InputError
from .calibration import calibration
from .effects import summarize_effect
from .metrics import DEFAULT_MIN_GROUP_SIZE, bias_alignment, group_metrics
from .reliance import kl_divergence, replace_context
from .results import (
    AccuracyResult,
    BiasAlignment,
    CalibrationResult,
    ContextReliance,
    EffectEstimate,
    EffectMagnitudes,
    LanguagePriorReliance,
    Result,
)

# a probe's warning points at the caller of diagnose(): probe -> _diagnose_split -> diagnose
_STACKLEVEL = 4

RunFn = Callable[[Mapping[str, Any]], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


@dataclasses.dataclass(frozen=True)
class ProbeContext:
    """What a probe may use besides the batches: the options, the split and the model.

    Attributes:
        config: the :class:`~causalvl.diagnostics.DiagnosticsConfig`.
        name: the split name (for messages).
        run: ``run(batch) -> (logits, effects)``: the model on an edited batch.
        adapter: the model's adapter (``counterfactual_inputs``, ``model_inputs``).
        model: the model (wrapped or bare).
        generator: the seeded generator shared by every probe that draws (null-vision noise,
            image swap, context swap), in the order of :data:`PROBES`.
        group_names: group id -> name (mapping or function), or ``None``.
        train_group_weights: group id -> training share, or ``None``.
    """

    config: Any
    name: str = "test"
    run: RunFn | None = None
    adapter: Any = None
    model: Any = None
    generator: torch.Generator | None = None
    group_names: Any = None
    train_group_weights: Mapping[int, float] | None = None

    def wants(self, metric: str) -> bool:
        """Whether ``metric`` is among ``config.metrics``."""
        return metric in tuple(getattr(self.config, "metrics", ()))


@dataclasses.dataclass(frozen=True)
class StepOutputs:
    """The model's answer on one batch, as every probe reads it.

    Attributes:
        logits: ``(B, A)`` float answer scores (detached, on the model's device).
        preds: ``(B,)`` arg-max answers (same device).
        correct: ``(B,)`` float64 correctness in [0, 1] on the CPU (see
            :func:`causalvl.batch.correctness`).
        effects: effect name -> ``(B, ...)`` tensor from a wrapped model (may be empty).
    """

    logits: torch.Tensor
    preds: torch.Tensor
    correct: torch.Tensor
    effects: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        effects: Mapping[str, torch.Tensor] | None = None,
        *,
        correct: torch.Tensor | None = None,
    ) -> StepOutputs:
        """From ``(B, A)`` logits and either the labels or an already computed ``correct``."""
        logits = logits.detach().float()
        preds = logits.argmax(-1)
        if correct is None:
            if labels is None:
                raise InputError("StepOutputs.of needs labels or correct; pass one of them.")
            correct = correctness(preds.cpu(), labels.cpu())
        return cls(logits=logits, preds=preds, correct=correct, effects=dict(effects or {}))

    @property
    def size(self) -> int:
        return int(self.preds.shape[0])


class Probe:
    """One diagnostic accumulated over batches (see the module docstring).

    Attributes:
        field: the :class:`~causalvl.diagnostics.results.SplitDiagnostics` field the result
            fills.
        metric: the ``DiagnosticsConfig.metrics`` entry that turns the probe on (``None``:
            always on).
    """

    field: ClassVar[str]
    metric: ClassVar[str | None] = None

    @classmethod
    def from_context(cls, context: ProbeContext) -> Probe:
        """The probe as :func:`~causalvl.diagnose` builds it for one split."""
        return cls()

    def applies(self, context: ProbeContext) -> str | None:
        """``None`` when the probe runs on this split, else the reason it does not."""
        if self.metric is not None and not context.wants(self.metric):
            return f"{self.metric!r} is not in DiagnosticsConfig.metrics"
        return None

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        """Accumulate one batch."""
        raise NotImplementedError

    def finish(self) -> Result | None:
        """The result over every batch seen, or ``None`` when the data did not support it."""
        raise NotImplementedError


def _cpu(value: torch.Tensor) -> torch.Tensor:
    return value.detach().cpu()


def _metadata(batch: Mapping[str, Any], key: str) -> torch.Tensor | None:
    value = batch.get(key)
    return _cpu(value).reshape(-1) if isinstance(value, torch.Tensor) else None


def _aligned(parts: list[torch.Tensor], n: int) -> torch.Tensor | None:
    """The bias-aligned flags when every example has one, else ``None``."""
    if not parts:
        return None
    aligned = torch.cat(parts)
    return aligned if aligned.numel() == n else None


# -- accuracy and groups --------------------------------------------------------------------
class AccuracyProbe(Probe):
    """Accuracy over the split and, with a ``group`` key, per-group and worst-group accuracy
    (worst group among groups of at least ``min_group_size`` examples).

    Args:
        groups: compute :class:`~causalvl.diagnostics.results.GroupMetrics` (needs every batch
            to carry ``group`` ``(B,)``; otherwise ``groups`` is ``None``).
        min_group_size: see :func:`~causalvl.diagnostics.metrics.group_metrics`.
        names: group id -> name.
        train_weights: group id -> training share.
    """

    field = "accuracy"

    def __init__(
        self,
        *,
        groups: bool = True,
        min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
        names: Any = None,
        train_weights: Mapping[int, float] | None = None,
    ) -> None:
        self.groups = groups
        self.min_group_size = min_group_size
        self.names = names
        self.train_weights = train_weights
        self._correct: list[torch.Tensor] = []
        self._group: list[torch.Tensor] = []
        self._every_batch_grouped = True

    @classmethod
    def from_context(cls, context: ProbeContext) -> AccuracyProbe:
        return cls(
            groups=context.wants("groups"),
            min_group_size=context.config.min_group_size,
            names=context.group_names,
            train_weights=context.train_group_weights,
        )

    @property
    def n(self) -> int:
        """Examples seen so far."""
        return sum(int(c.numel()) for c in self._correct)

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        group = _metadata(batch, "group") if isinstance(batch, Mapping) else None
        self.add(outputs.correct, group)

    def add(self, correct: torch.Tensor, group: Any = None) -> None:
        """Add one batch's ``(B,)`` correctness (see :func:`causalvl.batch.correctness`) and
        its ``(B,)`` group ids (``None`` or not a tensor: the batch has none), without building
        :class:`StepOutputs` (what :meth:`update` does with ``outputs.correct`` and the
        batch's ``group``)."""
        correct = _cpu(correct)
        self._correct.append(correct)
        if not self.groups:
            return
        group = _cpu(group).reshape(-1) if isinstance(group, torch.Tensor) else None
        if group is None or group.numel() != correct.numel():
            self._every_batch_grouped = False
        else:
            self._group.append(group)

    def finish(self) -> AccuracyResult:
        if not self._correct:
            raise InputError("AccuracyProbe.finish() before any update(); add a batch first.")
        correct = torch.cat(self._correct)
        groups = None
        if self.groups and self._every_batch_grouped and self._group:
            groups = group_metrics(
                correct,
                torch.cat(self._group),
                names=self.names,
                train_weights=self.train_weights,
                min_group_size=self.min_group_size,
            )
        return AccuracyResult(accuracy=float(correct.mean()), n=int(correct.numel()), groups=groups)


# -- bias alignment -------------------------------------------------------------------------
class BiasProbe(Probe):
    """Accuracy on bias-aligned vs. bias-conflicting examples (batch key ``bias_aligned``)."""

    field = "bias"
    metric = "bias"

    def __init__(self) -> None:
        self._correct: list[torch.Tensor] = []
        self._aligned: list[torch.Tensor] = []

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        self._correct.append(_cpu(outputs.correct))
        aligned = _metadata(batch, "bias_aligned")
        if aligned is not None:
            self._aligned.append(aligned)

    def finish(self) -> BiasAlignment | None:
        correct = torch.cat(self._correct)
        aligned = _aligned(self._aligned, int(correct.numel()))
        return None if aligned is None else bias_alignment(correct, aligned)


# -- calibration ----------------------------------------------------------------------------
class CalibrationProbe(Probe):
    """ECE and the reliability curve of the top-label confidence (softmax of the logits)."""

    field = "calibration"
    metric = "calibration"

    def __init__(self, n_bins: int = 15) -> None:
        self.n_bins = n_bins
        self._confidence: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._aligned: list[torch.Tensor] = []

    @classmethod
    def from_context(cls, context: ProbeContext) -> CalibrationProbe:
        return cls(n_bins=context.config.ece_bins)

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        probs = F.softmax(outputs.logits.double(), -1)
        self._confidence.append(_cpu(probs.max(-1).values))
        self._correct.append(_cpu(outputs.correct))
        aligned = _metadata(batch, "bias_aligned")
        if aligned is not None:
            self._aligned.append(aligned)

    def finish(self) -> CalibrationResult:
        correct = torch.cat(self._correct)
        aligned = _aligned(self._aligned, int(correct.numel()))
        return calibration(
            torch.cat(self._confidence), correct, n_bins=self.n_bins, aligned=aligned
        )


# -- reliance on the language prior ---------------------------------------------------------
def is_intervened(model: Any) -> bool:
    """Whether ``model`` is a wrapped :class:`~causalvl.IntervenedModel` (duck-typed)."""
    return all(hasattr(model, a) for a in ("base_model", "adapter", "disable_interventions"))


def image_blind_reason(model: Any) -> str | None:
    """Why the wrapped model's answer has no image-blind counterpart (see
    ``Intervention.image_blind_reason``), or None."""
    if not is_intervened(model) or getattr(model, "_disabled", False):
        return None
    impls = getattr(model, "interventions", None)
    for impl in impls.values() if hasattr(impls, "values") else ():
        reason = getattr(impl, "image_blind_reason", None)
        if reason:
            return str(reason)
    return None


class LanguagePriorProbe(Probe):
    """Agreement with the image-blind answer, KL and accuracy without the image, and the
    image-swap flip rate.

    Needs a model with a language input. For a wrapped model whose answer has no image-blind
    counterpart (CF-VQA's TIE) the image-blind measures are n/a with the reason
    (``LanguagePriorReliance.not_applicable``); the image swap is still measured. When the
    adapter cannot remove the image the probe warns and gives no result.
    """

    field = "language_prior"
    metric = "language_prior"

    def __init__(self, context: ProbeContext, *, blind_reason: str | None = None) -> None:
        """``blind_reason``: why the image-blind measures are n/a (``None``: they apply);
        :meth:`from_context` takes it from the model (:func:`image_blind_reason`)."""
        if context.run is None or context.adapter is None:
            raise InputError("LanguagePriorProbe needs a context with run and adapter.")
        self.context = context
        self.config = context.config
        self.blind_reason = blind_reason
        self.failed = False
        self._agree: list[torch.Tensor] = []
        self._kl: list[torch.Tensor] = []
        self._null_correct: list[torch.Tensor] = []
        self._swap_flip: list[torch.Tensor] = []

    @classmethod
    def from_context(cls, context: ProbeContext) -> LanguagePriorProbe:
        return cls(context, blind_reason=image_blind_reason(context.model))

    def applies(self, context: ProbeContext) -> str | None:
        reason = super().applies(context)
        if reason is not None:
            return reason
        if not bool(getattr(context.adapter, "language_keys", True)):
            return "the model has no language input (its adapter has no language_keys)"
        return None

    def _inputs(self, batch: Mapping[str, Any], mode: str) -> Mapping[str, Any]:
        adapter = self.context.adapter
        return adapter.counterfactual_inputs(
            adapter.model_inputs(batch),
            remove="vision",
            mode=mode,
            generator=self.context.generator,
        )

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        if self.failed:
            return
        run = self.context.run
        assert run is not None
        try:
            # drawn even when the image-blind answer does not apply: the generator's stream
            # stays the same for the image swap and the context probe
            null_inputs = self._inputs(batch, self.config.null_vision_mode)
            if self.blind_reason is None:
                null_logits, _ = run(null_inputs)
                null_logits = null_logits.detach().float()
                null_preds = null_logits.argmax(-1)
                self._agree.append(_cpu((null_preds == outputs.preds).double()))
                self._kl.append(_cpu(kl_divergence(outputs.logits, null_logits)))
                self._null_correct.append(correctness(null_preds.cpu(), batch["labels"].cpu()))
            if self.config.image_swap and outputs.size >= 2:
                swap_logits, _ = run(self._inputs(batch, "shuffle"))
                self._swap_flip.append(_cpu((swap_logits.argmax(-1) != outputs.preds).double()))
        except CausalVLError as exc:
            self.failed = True
            warnings.warn(
                f"language-prior reliance skipped: the image could not be removed ({exc}).",
                UserWarning,
                stacklevel=_STACKLEVEL,
            )

    def finish(self) -> LanguagePriorReliance | None:
        if self.failed:
            return None
        swap = torch.cat(self._swap_flip) if self._swap_flip else None
        swap_rate = None if swap is None else float(swap.mean())
        n_swapped = 0 if swap is None else int(swap.numel())
        mode = self.config.null_vision_mode
        if self.blind_reason is not None:
            return LanguagePriorReliance(
                prior_agreement=None,
                mean_kl=None,
                image_swap_flip_rate=swap_rate,
                null_accuracy=None,
                null_mode=mode,
                n=0,
                n_swapped=n_swapped,
                not_applicable=self.blind_reason,
            )
        if not self._agree:
            return None
        agree = torch.cat(self._agree)
        return LanguagePriorReliance(
            prior_agreement=float(agree.mean()),
            mean_kl=float(torch.cat(self._kl).mean()),
            image_swap_flip_rate=swap_rate,
            null_accuracy=float(torch.cat(self._null_correct).mean()),
            null_mode=mode,
            n=int(agree.numel()),
            n_swapped=n_swapped,
        )


# -- reliance on context --------------------------------------------------------------------
class ContextProbe(Probe):
    """Flip rate and accuracy change when only the context region is replaced
    (:func:`~causalvl.diagnostics.reliance.replace_context`; batches with ``region_pixels``).

    A batch whose context cannot be located stops the probe with a warning; the batches
    measured before it are kept.
    """

    field = "context"
    metric = "context"

    def __init__(self, context: ProbeContext) -> None:
        if context.run is None:
            raise InputError("ContextProbe needs a context with run.")
        self.context = context
        self.mode = context.config.context_mode
        self.stopped = False
        self._flip: list[torch.Tensor] = []
        self._replaced_correct: list[torch.Tensor] = []
        self._factual_correct: list[torch.Tensor] = []

    @classmethod
    def from_context(cls, context: ProbeContext) -> ContextProbe:
        return cls(context)

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        if self.stopped or not isinstance(batch.get("region_pixels"), torch.Tensor):
            return
        if outputs.size < 2 and self.mode == "swap":
            return  # one example has no other context to swap in
        try:
            edited = replace_context(batch, mode=self.mode, generator=self.context.generator)
        except InputError as exc:
            self.stopped = True
            warnings.warn(f"context reliance skipped: {exc}", UserWarning, stacklevel=_STACKLEVEL)
            return
        run = self.context.run
        assert run is not None
        ctx_logits, _ = run(edited)
        ctx_preds = ctx_logits.argmax(-1)
        self._flip.append(_cpu((ctx_preds != outputs.preds).double()))
        self._replaced_correct.append(correctness(ctx_preds.cpu(), batch["labels"].cpu()))
        self._factual_correct.append(_cpu(outputs.correct))

    def finish(self) -> ContextReliance | None:
        if not self._flip:
            return None
        flip = torch.cat(self._flip)
        acc_f = float(torch.cat(self._factual_correct).mean())
        acc_r = float(torch.cat(self._replaced_correct).mean())
        return ContextReliance(
            flip_rate=float(flip.mean()),
            accuracy_factual=acc_f,
            accuracy_replaced=acc_r,
            accuracy_change=acc_r - acc_f,
            mode=self.mode,
            n=int(flip.numel()),
        )


# -- effects --------------------------------------------------------------------------------
class EffectsProbe(Probe):
    """Mean |effect| and the predicted-class effect values of a wrapped model's effects
    (TE / NDE / TIE / NIE); effects whose first dimension is not the batch are skipped."""

    field = "effects"
    metric = "effects"

    def __init__(self, bins: int = 20) -> None:
        self.bins = bins
        self._picked: dict[str, list[torch.Tensor]] = {}
        self._abs_sum: dict[str, float] = {}  # per effect: running sum of |effect|
        self._count: dict[str, float] = {}  # per effect: running count of values

    @classmethod
    def from_context(cls, context: ProbeContext) -> EffectsProbe:
        return cls(bins=context.config.effect_bins)

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        b = outputs.size
        for key, value in outputs.effects.items():
            if not isinstance(value, torch.Tensor) or value.shape[0] != b:
                continue
            e = value.detach().double()
            e2 = e if e.dim() == 2 else e.reshape(b, -1)
            idx = outputs.preds if e2.shape[1] > 1 else torch.zeros_like(outputs.preds)
            self._picked.setdefault(key, []).append(_cpu(e2.gather(1, idx[:, None])[:, 0]))
            self._abs_sum[key] = self._abs_sum.get(key, 0) + float(e2.abs().sum())
            self._count[key] = self._count.get(key, 0) + float(e2.numel())

    def finish(self) -> EffectMagnitudes | None:
        if not self._abs_sum:
            return None
        summaries = {}
        for key, total_abs in self._abs_sum.items():
            count = self._count[key]
            summaries[key] = summarize_effect(
                key, total_abs / max(count, 1.0), torch.cat(self._picked[key]), bins=self.bins
            )
        return EffectMagnitudes(effects=summaries)


# -- the causal effect of bias alignment (dowhy) --------------------------------------------
class CausalProbe(Probe):
    """The dowhy estimate of the effect of ``bias_aligned`` on correctness, adjusted for the
    batch keys in ``DiagnosticsConfig.causal_common_causes`` (missing ones are skipped)."""

    field = "effect_estimate"
    metric = "causal"

    def __init__(self, context: ProbeContext) -> None:
        self.config = context.config
        self.name = context.name
        self._correct: list[torch.Tensor] = []
        self._columns: dict[str, list[torch.Tensor]] = {}

    @classmethod
    def from_context(cls, context: ProbeContext) -> CausalProbe:
        return cls(context)

    def update(self, batch: Mapping[str, Any], outputs: StepOutputs) -> None:
        self._correct.append(_cpu(outputs.correct))
        for key in ("bias_aligned", *self.config.causal_common_causes):
            value = _metadata(batch, key)
            if value is not None:
                self._columns.setdefault(key, []).append(value)

    def _column(self, key: str, n: int) -> torch.Tensor | None:
        parts = self._columns.get(key)
        if not parts:
            return None
        value = torch.cat(parts)
        return value if value.numel() == n else None

    def finish(self) -> EffectEstimate | None:
        correct = torch.cat(self._correct)
        n = int(correct.numel())
        aligned = self._column("bias_aligned", n)
        if aligned is None or aligned.bool().all() or not aligned.bool().any():
            warnings.warn(
                f"causal effect skipped on split {self.name!r}: it needs a 'bias_aligned' key "
                "with both aligned and conflicting examples.",
                UserWarning,
                stacklevel=_STACKLEVEL,
            )
            return None
        import pandas as pd

        from .causal import estimate_spurious_effect

        columns = {"correct": correct.numpy(), "bias_aligned": aligned.long().numpy()}
        causes = []
        for key in self.config.causal_common_causes:
            column = self._column(key, n)
            if column is None:
                continue
            values = column.long()
            levels = torch.unique(values).tolist()
            if len(levels) == 1:  # a constant carries no confounding; the fit would be singular
                continue
            if len(levels) == 2:
                columns[key] = values.numpy()
                causes.append(key)
                continue
            for level in levels[1:]:  # a categorical confounder: one indicator per level
                col = f"{key}_{level}"
                columns[col] = (values == level).long().numpy()
                causes.append(col)
        return estimate_spurious_effect(
            pd.DataFrame(columns),
            treatment="bias_aligned",
            outcome="correct",
            common_causes=causes,
            method=self.config.causal_method,
            num_simulations=self.config.causal_num_simulations,
            seed=self.config.seed,
        )


#: the probes :func:`~causalvl.diagnose` runs, in this order (the image-blind and image-swap
#: draws come before the context swap on the shared generator)
PROBES: tuple[type[Probe], ...] = (
    AccuracyProbe,
    BiasProbe,
    CalibrationProbe,
    LanguagePriorProbe,
    ContextProbe,
    EffectsProbe,
    CausalProbe,
)


__all__ = [
    "PROBES",
    "AccuracyProbe",
    "BiasProbe",
    "CalibrationProbe",
    "CausalProbe",
    "ContextProbe",
    "EffectsProbe",
    "LanguagePriorProbe",
    "Probe",
    "ProbeContext",
    "StepOutputs",
    "image_blind_reason",
    "is_intervened",
]
