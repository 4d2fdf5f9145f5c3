"""``diagnose(model, data)``: every diagnostic of a model on one or several evaluation splits.

Works on a model wrapped with :func:`causalvl.intervene` (its debiased ``logits`` are
evaluated, and its TE / NDE / TIE effects summarised) and on a bare model (its adapter is
looked up, or passed with ``adapter=``). The model runs under ``torch.no_grad()`` in eval
mode; the train/eval mode of every submodule is restored afterwards.

    >>> import causalvl, torch
    >>> from causalvl.models import TinyVQA
    >>> batch = {"pixel_values": torch.rand(8, 3, 8, 8), "input_ids": torch.randint(1, 20, (8, 5)),
    ...          "labels": torch.randint(0, 4, (8,)), "group": torch.arange(8) % 2}
    >>> d = causalvl.diagnose(TinyVQA(vocab_size=20, num_answers=4), batch, name="id",
    ...                       progress=False)
    >>> 0.0 <= d["id"].accuracy <= 1.0 and d["id"].distribution
    'id'
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import CausalVLError, ConfigError, InputError, UnsupportedModelError
from ..runtime import module_device
from .calibration import calibration
from .effects import summarize_effect
from .metrics import bias_alignment, correctness, group_metrics
from .reliance import kl_divergence, replace_context
from .results import (
    ContextReliance,
    Diagnostics,
    EffectMagnitudes,
    LanguagePriorReliance,
    SplitDiagnostics,
)

logger = logging.getLogger("causalvl.diagnostics")

METRICS: tuple[str, ...] = (
    "groups",
    "bias",
    "calibration",
    "language_prior",
    "context",
    "effects",
    "causal",
)
DEFAULT_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m != "causal")

_ID_NAMES = {
    "id",
    "iid",
    "in_distribution",
    "in-distribution",
    "test_id",
    "val",
    "valid",
    "validation",
    "train",
    "dev",
}


@dataclasses.dataclass(kw_only=True)
class DiagnosticsConfig(Config):
    """Options of :func:`diagnose`.

    Attributes:
        metrics: which diagnostics to compute, from ``"groups"``, ``"bias"``,
            ``"calibration"``, ``"language_prior"``, ``"context"``, ``"effects"``, ``"causal"``.
            Accuracy is always computed. Each runs only when the data / model supports it
            (``groups`` needs the batch key ``group``; ``bias`` needs ``bias_aligned``;
            ``language_prior`` needs a model with a language input; ``context`` needs
            ``region_pixels``; ``effects`` needs a wrapped model with effects;
            ``causal`` (dowhy, a few seconds) needs ``bias_aligned``). Default: all but
            ``"causal"``.
        batch_size: batch size when ``data`` is a Dataset.
        ece_bins: equal-width confidence bins for ECE and the reliability curve.
        effect_bins: histogram bins of the predicted-class effect values.
        seed: seeds the null-vision noise, the image swap and the context swap (a private
            ``torch.Generator``; global RNGs are untouched).
        null_vision_mode: how the image is removed for the image-blind prediction (see
            ``ModelAdapter.counterfactual_inputs``).
        image_swap: also measure the flip rate when each image is swapped with another
            example's (a within-batch derangement).
        context_mode: ``"swap"`` (another example's context region) or ``"zeros"``.
        causal_common_causes: confounders for the dowhy estimate of the effect of
            ``bias_aligned`` on correctness (batch keys; missing ones are skipped).
        causal_method: a built-in dowhy estimator name.
        causal_num_simulations: simulations per refuter.
        min_group_size: worst-group accuracy is taken among groups of at least this many
            examples (default 20); smaller groups are listed separately
            (``GroupMetrics.small_groups``) because their accuracy is mostly noise.
        progress: show a progress bar.

    Example:
        >>> DiagnosticsConfig(ece_bins=10, metrics=("groups", "calibration")).ece_bins
        10
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    batch_size: int = 64
    ece_bins: int = 15
    effect_bins: int = 20
    seed: int = 0
    null_vision_mode: Literal["zeros", "mean", "shuffle", "noise", "mask"] = "zeros"
    image_swap: bool = True
    context_mode: Literal["swap", "zeros"] = "swap"
    causal_common_causes: tuple[str, ...] = ("question_type",)
    causal_method: str = "backdoor.linear_regression"
    causal_num_simulations: int = 100
    min_group_size: int = 20
    progress: bool = True

    def validate(self) -> None:
        if isinstance(self.metrics, str):
            self._normalise("metrics", (self.metrics,))
        self._normalise("metrics", tuple(self.metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError(
                f"DiagnosticsConfig.metrics = {self.metrics!r} has unknown entries {unknown}; "
                f"choose from {list(METRICS)} (accuracy is always computed)."
            )
        self._check_int(
            "batch_size", "ece_bins", "effect_bins", "causal_num_simulations", "min_group_size"
        )
        self._check_int("seed", minimum=0)
        self._normalise("causal_common_causes", tuple(self.causal_common_causes))
        from .causal import ESTIMATORS

        if self.causal_method not in ESTIMATORS:
            self._fail("causal_method", f"choose one of {list(ESTIMATORS)}")


def _is_intervened(model: Any) -> bool:
    return all(hasattr(model, a) for a in ("base_model", "adapter", "disable_interventions"))


def _image_blind_reason(model: Any) -> str | None:
    """Why the wrapped model's answer has no image-blind counterpart (see
    ``Intervention.image_blind_reason``), or None."""
    if not _is_intervened(model) or getattr(model, "_disabled", False):
        return None
    impls = getattr(model, "interventions", None)
    for impl in impls.values() if hasattr(impls, "values") else ():
        reason = getattr(impl, "image_blind_reason", None)
        if reason:
            return str(reason)
    return None


def _is_intervention_output(out: Any) -> bool:
    return hasattr(out, "factual_logits") and hasattr(out, "effects") and hasattr(out, "logits")


def _resolve_adapter(model: Any, adapter: Any) -> Any:
    if _is_intervened(model):
        return model.adapter if adapter is None else adapter
    from ..adapters import get_adapter

    try:
        return get_adapter(model, "auto" if adapter is None else adapter)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(
            f"diagnose could not find an adapter for {type(model).__name__}: {exc} Pass one "
            "with diagnose(model, data, adapter=causalvl.GenericAdapter(vision_keys=[...], "
            "language_keys=[...])), or wrap the model with causalvl.intervene first."
        ) from exc


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _loader(data: Any, batch_size: int, collate_fn: Callable | None) -> Iterable[Mapping[str, Any]]:
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Mapping):
        return [data]  # one batch
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], Mapping):
        labels = data[0].get("labels")
        if isinstance(labels, torch.Tensor) and labels.dim() >= 1:
            return data  # a list of batches (a list of examples has 0-d labels)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if len(data) == 0:
            raise InputError("the dataset is empty; there is nothing to diagnose.")
        collate = collate_fn or getattr(data, "collate", None)
        if collate is None:
            collate = _default_collate()
        return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    if isinstance(data, Iterable):
        return data
    raise InputError(
        f"data must be a Dataset, a DataLoader, an iterable of batches or a batch mapping, got "
        f"{type(data).__name__}."
    )


def _default_collate() -> Callable:
    try:
        from ..datasets._common import collate
    except ImportError:  # pragma: no cover - fall back to torch's
        from torch.utils.data import default_collate as collate
    return collate


def _is_batch(data: Mapping[str, Any]) -> bool:
    return any(isinstance(v, torch.Tensor) for v in data.values())


def _infer_distribution(name: str) -> str:
    low = name.lower()
    if "ood" in low or "out" in low or low in {"cp", "vqa-cp", "vqa_cp", "shifted"}:
        return "ood"
    if low in _ID_NAMES or low.endswith("_id") or low.endswith("-id"):
        return "id"
    return "unspecified"


def _group_names(data: Any, names: Any) -> Any:
    if names is not None:
        return names
    base = getattr(data, "dataset", data)  # a DataLoader's dataset
    for attr in ("group_names",):
        value = getattr(base, attr, None)
        if isinstance(value, Mapping):
            return {int(k): str(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return {i: str(v) for i, v in enumerate(value)}
    fn = getattr(base, "group_name", None)
    if callable(fn):
        return fn
    return None


class _ModeGuard:
    """Put every submodule in eval mode; restore each one's own mode on exit."""

    def __init__(self, model: Any) -> None:
        self.modules = list(model.modules()) if isinstance(model, nn.Module) else []
        self.modes = [m.training for m in self.modules]

    def __enter__(self) -> None:
        for m in self.modules:
            m.training = False

    def __exit__(self, *exc: Any) -> None:
        for m, mode in zip(self.modules, self.modes):
            m.training = mode


class _Runner:
    def __init__(self, model: Any, adapter: Any) -> None:
        self.model = model
        self.adapter = adapter
        self.wrapped = _is_intervened(model)

    def __call__(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        inputs = self.adapter.model_inputs(batch)
        if not inputs:
            raise InputError(
                f"none of the batch keys {sorted(batch)} is an input of the model; the adapter "
                f"expects {list(getattr(self.adapter, 'required_keys', ()))}."
            )
        out = self.model(**inputs)
        if _is_intervention_output(out):
            return out.logits, dict(out.effects or {})
        if isinstance(out, torch.Tensor):
            return out, {}
        return self.adapter.logits(out, inputs), {}


def diagnose(
    model: Any,
    data: Any,
    config: DiagnosticsConfig | None = None,
    *,
    name: str | None = None,
    distribution: str | Mapping[str, str] | None = None,
    adapter: Any = None,
    group_names: Mapping[int, str] | Callable[[int], str] | None = None,
    train_group_weights: Mapping[int, float] | None = None,
    collate_fn: Callable | None = None,
    **options: Any,
) -> Diagnostics:
    """Measure accuracy, group robustness, prior / context reliance, calibration and effects.

    Args:
        model: an :class:`~causalvl.IntervenedModel` or a bare model whose family has an adapter.
        data: a Dataset (batched with ``batch_size`` and the dataset's ``collate``), a
            DataLoader, an iterable of batch dicts, one batch dict, or a mapping
            ``{split name: data}`` to diagnose several splits (e.g. ``{"id": ..., "ood": ...}``).
            Batches carry the model inputs plus ``labels`` ``(B,)`` (or ``(B, A)`` soft scores)
            and optionally ``group``, ``bias_aligned``, ``question_type``, ``region_pixels``.
        config: a :class:`DiagnosticsConfig`; keyword ``options`` override its fields.
        name: the split name when ``data`` is a single split (default ``"test"``).
        distribution: ``"id"`` (in-distribution) or ``"ood"`` (out-of-distribution) for a
            single split, or ``{split name: "id" | "ood"}``; by default inferred from the
            split names (``"id"``, ``"test_id"``, ``"val"`` -> id; names containing ``"ood"``
            -> ood; otherwise ``"unspecified"``).
        adapter: the model's adapter, for bare models without a registered family.
        group_names: group id -> readable name; default from the dataset's ``group_names``
            or ``group_name(g)``, else ``"group=<id>"``.
        train_group_weights: group id -> training share, for the train-weighted average.
        collate_fn: overrides the dataset's ``collate``.

    Returns:
        :class:`Diagnostics` with one :class:`SplitDiagnostics` per split.

    Raises:
        ConfigError: unknown options or invalid values.
        InputError: data without ``labels``, or empty.
    """
    if config is None:
        config = DiagnosticsConfig()
    elif not isinstance(config, DiagnosticsConfig):
        raise ConfigError(
            f"config must be a DiagnosticsConfig, got {type(config).__name__}; or pass the "
            "options as keywords, e.g. diagnose(model, data, ece_bins=10)."
        )
    if options:
        known = {f.name for f in dataclasses.fields(DiagnosticsConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"diagnose got unknown options {unknown}; DiagnosticsConfig fields are "
                f"{sorted(known)}."
            )
        config = config.replace(**options)

    if isinstance(data, Mapping) and not _is_batch(data):
        if not data:
            raise InputError("diagnose got an empty mapping of splits.")
        splits = {str(k): v for k, v in data.items()}
    else:
        splits = {name or "test": data}
    if isinstance(distribution, str) or distribution is None:
        dists = {k: distribution or _infer_distribution(k) for k in splits}
    else:
        dists = {k: distribution.get(k) or _infer_distribution(k) for k in splits}
    for k, v in dists.items():
        if v not in ("id", "ood", "unspecified"):
            raise ConfigError(
                f"distribution of split {k!r} is {v!r}; use 'id' (in-distribution), 'ood' "
                "(out-of-distribution) or 'unspecified'."
            )

    adapter_obj = _resolve_adapter(model, adapter)
    runner = _Runner(model, adapter_obj)
    results: dict[str, SplitDiagnostics] = {}
    with _ModeGuard(model), torch.no_grad():
        for split_name, split_data in splits.items():
            results[split_name] = _diagnose_split(
                runner,
                split_data,
                config,
                name=split_name,
                distribution=dists[split_name],
                group_names=_group_names(split_data, group_names),
                train_group_weights=train_group_weights,
                collate_fn=collate_fn,
            )
    return Diagnostics(splits=results, config=config.to_dict())


def _diagnose_split(
    runner: _Runner,
    data: Any,
    config: DiagnosticsConfig,
    *,
    name: str,
    distribution: str,
    group_names: Any,
    train_group_weights: Mapping[int, float] | None,
    collate_fn: Callable | None,
) -> SplitDiagnostics:
    from ..progress import progress_bar

    wanted = set(config.metrics)
    generator = torch.Generator().manual_seed(config.seed)
    device = module_device(runner.model)
    loader = _loader(data, config.batch_size, collate_fn)
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None

    acc: dict[str, list[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor) -> None:
        acc.setdefault(key, []).append(value.detach().cpu())

    # reliance on the language prior needs a language input: a vision-only model has none
    prior_ok = "language_prior" in wanted and bool(getattr(runner.adapter, "language_keys", True))
    not_applicable = _image_blind_reason(runner.model) if prior_ok else None
    context_ok = "context" in wanted
    effect_abs: dict[str, list[float]] = {}
    for batch in progress_bar(
        loader, enabled=config.progress, desc=f"diagnose {name}", total=total
    ):
        if not isinstance(batch, Mapping):
            raise InputError(
                f"batches must be dicts of tensors, got {type(batch).__name__}; use the "
                "dataset's collate function."
            )
        if "labels" not in batch:
            raise InputError(
                f"the batch has no 'labels' (keys {sorted(batch)}); diagnostics need the answers."
            )
        batch = _to(batch, device)
        logits, effects = runner(batch)
        logits = logits.detach().float()
        labels = batch["labels"]
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise InputError(
                f"the model returned logits of shape {tuple(logits.shape)} for {labels.shape[0]} "
                "labels; diagnose needs (batch, num_answers) answer scores. For image-text "
                "similarity models use causalvl.diagnostics.compositional_scores(score_fn, ...)."
            )
        preds = logits.argmax(-1)
        correct = correctness(preds.cpu(), labels.cpu())
        add("preds", preds)
        add("correct", correct)
        add("probs_top", F.softmax(logits.double(), -1).max(-1).values)
        for key in ("group", "bias_aligned", "question_type"):
            if isinstance(batch.get(key), torch.Tensor):
                add(key, batch[key].reshape(-1))
        if "causal" in wanted:  # any batch key may be a common cause
            for key in config.causal_common_causes:
                if isinstance(batch.get(key), torch.Tensor):
                    add(f"cause:{key}", batch[key].reshape(-1))
        b = int(preds.shape[0])

        if prior_ok:
            try:
                cf = runner.adapter.counterfactual_inputs(
                    runner.adapter.model_inputs(batch),
                    remove="vision",
                    mode=config.null_vision_mode,
                    generator=generator,
                )
                if not_applicable is None:
                    null_logits, _ = runner(cf)
                    null_logits = null_logits.detach().float()
                    null_preds = null_logits.argmax(-1)
                    add("null_agree", (null_preds == preds).double())
                    add("null_kl", kl_divergence(logits, null_logits))
                    add("null_correct", correctness(null_preds.cpu(), labels.cpu()))
                if config.image_swap and b >= 2:
                    sw = runner.adapter.counterfactual_inputs(
                        runner.adapter.model_inputs(batch),
                        remove="vision",
                        mode="shuffle",
                        generator=generator,
                    )
                    swap_logits, _ = runner(sw)
                    add("swap_flip", (swap_logits.argmax(-1) != preds).double())
            except CausalVLError as exc:
                prior_ok = False
                acc.pop("null_agree", None)
                warnings.warn(
                    f"language-prior reliance skipped: the image could not be removed ({exc}).",
                    UserWarning,
                    stacklevel=3,
                )

        if context_ok and isinstance(batch.get("region_pixels"), torch.Tensor):
            if b < 2 and config.context_mode == "swap":
                pass
            else:
                try:
                    edited = replace_context(batch, mode=config.context_mode, generator=generator)
                except InputError as exc:
                    context_ok = False
                    warnings.warn(f"context reliance skipped: {exc}", UserWarning, stacklevel=3)
                else:
                    ctx_logits, _ = runner(edited)
                    ctx_preds = ctx_logits.argmax(-1)
                    add("ctx_flip", (ctx_preds != preds).double())
                    add("ctx_correct", correctness(ctx_preds.cpu(), labels.cpu()))
                    add("ctx_factual_correct", correct)

        if "effects" in wanted and effects:
            for key, value in effects.items():
                if not isinstance(value, torch.Tensor) or value.shape[0] != b:
                    continue
                e = value.detach().double()
                e2 = e if e.dim() == 2 else e.reshape(b, -1)
                idx = preds if e2.shape[1] > 1 else torch.zeros_like(preds)
                add(f"effect:{key}", e2.gather(1, idx[:, None])[:, 0])
                effect_abs.setdefault(key, []).extend([float(e2.abs().sum()), float(e2.numel())])

    if "correct" not in acc:
        raise InputError(f"split {name!r} produced no batches; is the data empty?")
    cat = {k: torch.cat(v) for k, v in acc.items()}
    correct = cat["correct"]
    n = int(correct.numel())
    aligned = cat.get("bias_aligned")
    if aligned is not None and aligned.numel() != n:
        aligned = None

    groups = None
    if "groups" in wanted and "group" in cat and cat["group"].numel() == n:
        groups = group_metrics(
            correct,
            cat["group"],
            names=group_names,
            train_weights=train_group_weights,
            min_group_size=config.min_group_size,
        )
    bias = None
    if "bias" in wanted and aligned is not None:
        bias = bias_alignment(correct, aligned)
    calib = None
    if "calibration" in wanted:
        calib = calibration(cat["probs_top"], correct, n_bins=config.ece_bins, aligned=aligned)
    prior = None
    if prior_ok and not_applicable is not None:
        swap = cat.get("swap_flip")
        prior = LanguagePriorReliance(
            prior_agreement=None,
            mean_kl=None,
            image_swap_flip_rate=None if swap is None else float(swap.mean()),
            null_accuracy=None,
            null_mode=config.null_vision_mode,
            n=0,
            n_swapped=0 if swap is None else int(swap.numel()),
            not_applicable=not_applicable,
        )
    elif prior_ok and "null_agree" in cat:
        swap = cat.get("swap_flip")
        prior = LanguagePriorReliance(
            prior_agreement=float(cat["null_agree"].mean()),
            mean_kl=float(cat["null_kl"].mean()),
            image_swap_flip_rate=None if swap is None else float(swap.mean()),
            null_accuracy=float(cat["null_correct"].mean()),
            null_mode=config.null_vision_mode,
            n=int(cat["null_agree"].numel()),
            n_swapped=0 if swap is None else int(swap.numel()),
        )
    context = None
    if "ctx_flip" in cat:
        acc_f = float(cat["ctx_factual_correct"].mean())
        acc_r = float(cat["ctx_correct"].mean())
        context = ContextReliance(
            flip_rate=float(cat["ctx_flip"].mean()),
            accuracy_factual=acc_f,
            accuracy_replaced=acc_r,
            accuracy_change=acc_r - acc_f,
            mode=config.context_mode,
            n=int(cat["ctx_flip"].numel()),
        )
    effects_result = None
    if effect_abs:
        summaries = {}
        for key, parts in effect_abs.items():
            total_abs, count = sum(parts[0::2]), sum(parts[1::2])
            summaries[key] = summarize_effect(
                key, total_abs / max(count, 1.0), cat[f"effect:{key}"], bins=config.effect_bins
            )
        effects_result = EffectMagnitudes(effects=summaries)
    estimate = None
    if "causal" in wanted:
        estimate = _causal(cat, correct, config, name)

    return SplitDiagnostics(
        name=name,
        distribution=distribution,  # type: ignore[arg-type]
        n=n,
        accuracy=float(correct.mean()),
        groups=groups,
        bias=bias,
        language_prior=prior,
        context=context,
        calibration=calib,
        effects=effects_result,
        effect_estimate=estimate,
    )


def _causal(
    cat: Mapping[str, torch.Tensor], correct: torch.Tensor, config: DiagnosticsConfig, name: str
) -> Any:
    n = correct.numel()
    aligned = cat.get("bias_aligned")
    if aligned is None or aligned.numel() != n or aligned.bool().all() or not aligned.bool().any():
        warnings.warn(
            f"causal effect skipped on split {name!r}: it needs a 'bias_aligned' key with both "
            "aligned and conflicting examples.",
            UserWarning,
            stacklevel=4,
        )
        return None
    import pandas as pd

    from .causal import estimate_spurious_effect

    columns = {"correct": correct.numpy(), "bias_aligned": aligned.long().numpy()}
    causes = []
    for key in config.causal_common_causes:
        values = cat.get(f"cause:{key}")
        if values is None or values.numel() != n:
            continue
        values = values.long()
        levels = torch.unique(values).tolist()
        if len(levels) == 1:  # a constant carries no confounding; it would make the fit singular
            continue
        if len(levels) == 2:
            columns[key] = values.numpy()
            causes.append(key)
            continue
        for level in levels[1:]:  # a categorical confounder: one indicator per level
            col = f"{key}_{level}"
            columns[col] = (values == level).long().numpy()
            causes.append(col)
    df = pd.DataFrame(columns)
    return estimate_spurious_effect(
        df,
        treatment="bias_aligned",
        outcome="correct",
        common_causes=causes,
        method=config.causal_method,
        num_simulations=config.causal_num_simulations,
        seed=config.seed,
    )


__all__ = ["DEFAULT_METRICS", "METRICS", "DiagnosticsConfig", "diagnose"]
