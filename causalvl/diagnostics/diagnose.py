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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch

from ..batch import collate_of, to_device
from ..config import Config
from ..errors import ConfigError, InputError, UnsupportedModelError
from ..runtime import eval_mode, module_device
from .metrics import DEFAULT_MIN_GROUP_SIZE
from .probes import PROBES, ProbeContext, StepOutputs
from .probes import is_intervened as _is_intervened
from .results import Diagnostics, SplitDiagnostics

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
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
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
        collate = collate_fn or collate_of(data) or _default_collate()
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
    with eval_mode(model), torch.no_grad():
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
    """Run the model once per batch and feed every applicable probe (see :mod:`.probes`)."""
    from ..progress import progress_bar

    context = ProbeContext(
        config=config,
        name=name,
        run=runner,
        adapter=runner.adapter,
        model=runner.model,
        generator=torch.Generator().manual_seed(config.seed),
        group_names=group_names,
        train_group_weights=train_group_weights,
    )
    probes = []
    for cls in PROBES:
        probe = cls.from_context(context)
        reason = probe.applies(context)
        if reason is None:
            probes.append(probe)
        else:  # its part of the result stays None (n/a in reports)
            logger.debug("split %r: %s not measured: %s", name, probe.field, reason)
    device = module_device(runner.model)
    loader = _loader(data, config.batch_size, collate_fn)
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    batches = 0
    for batch in progress_bar(
        loader, enabled=config.progress, desc=f"diagnose {name}", total=total
    ):
        batch = to_device(_check_batch(batch), device)
        logits, effects = runner(batch)
        labels = batch["labels"]
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise InputError(
                f"the model returned logits of shape {tuple(logits.shape)} for {labels.shape[0]} "
                "labels; diagnose needs (batch, num_answers) answer scores. For image-text "
                "similarity models use causalvl.diagnostics.compositional_scores(score_fn, ...)."
            )
        outputs = StepOutputs.of(logits, labels, effects)
        for probe in probes:
            probe.update(batch, outputs)
        batches += 1
    if not batches:
        raise InputError(f"split {name!r} produced no batches; is the data empty?")
    parts = {}
    for p in probes:  # a loop, not a comprehension: finish()'s warnings count on this frame
        parts[p.field] = p.finish()
    acc = parts.pop("accuracy")
    return SplitDiagnostics(
        name=name,
        distribution=distribution,  # type: ignore[arg-type]
        n=acc.n,
        accuracy=acc.accuracy,
        groups=acc.groups,
        **parts,
    )


def _check_batch(batch: Any) -> Mapping[str, Any]:
    if not isinstance(batch, Mapping):
        raise InputError(
            f"batches must be dicts of tensors, got {type(batch).__name__}; use the "
            "dataset's collate function."
        )
    if "labels" not in batch:
        raise InputError(
            f"the batch has no 'labels' (keys {sorted(batch)}); diagnostics need the answers."
        )
    return batch


__all__ = ["DEFAULT_METRICS", "METRICS", "DiagnosticsConfig", "diagnose"]
