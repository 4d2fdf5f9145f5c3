"""Model-agnostic prior subtraction: for models without a separable question branch (ViLT,
CLIP, any ``nn.Module``), run the model again with the image removed and subtract that
prediction, ``(1 + α)·factual − α·counterfactual`` (formulas in ``docs/concepts.md``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...adapters.transforms import COUNTERFACTUAL_MODES, get_transform
from ...config import InterventionConfig
from ...errors import ConfigError, InterventionStateError
from ..base import ForwardState, Intervention, implements
from ..fusion import plausibility_mask

logger = logging.getLogger(__name__)

__all__ = ["PriorSubtraction", "PriorSubtractionConfig"]


#: the vision modes that give the same counterfactual every call (no random draw)
_DETERMINISTIC_MODES = tuple(
    mode
    for (removed, mode), name in COUNTERFACTUAL_MODES.items()
    if removed == "vision" and not get_transform(name).needs_generator
)


@dataclass(kw_only=True)
class PriorSubtractionConfig(InterventionConfig):
    """Subtract what the model predicts without the image: a language prior, removed.

    For any model (ViLT, CLIP, LXMERT, your own ``nn.Module``), with no branch heads and no
    training of its own. A counterfactual pass runs the base model on the adapter's null-vision
    inputs (``adapter.counterfactual_inputs(inputs, remove="vision", mode=mode)``) and, with
    ``f`` the factual and ``g`` the counterfactual scores in the chosen ``space``,

    ``form="amplify"`` (default): ``logits = (1 + α)·f − α·g = f + α·(f − g)``;
    ``form="subtract"``: ``logits = f − α·g``.

    ``effects``: ``"tie" = f − g``, the effect of the image with the question held fixed, the
    same quantity as CF-VQA's TIE (``Z(q, v) − Z(q, v*)``), and ``"prior" = g``, the image-blind
    prediction (the language prior the subtraction removes; a prediction, not an effect).
    ``"te"`` / ``"nde"`` are not defined here: they need a pass with the question removed too.
    ``counterfactual_logits`` holds the raw counterfactual logits (averaged over
    ``num_samples`` draws).

    **When it can help.** Write the factual log-probabilities as ``f ≈ s(v, a) + log p(a | q)``
    (image evidence plus the learned prior) and the image-blind ones as ``g ≈ log p(a | q) + c``.
    ``"amplify"`` gives ``(1 + α) s + log p(a | q)``: the prior keeps its weight 1 and only the
    image evidence is scaled up, so the prediction changes only where the image evidence was
    already close to the prior's. ``"subtract"`` with ``α = 1`` in ``space="log_softmax"``
    removes the prior's weight entirely (``f − g ≈ s``: a logit adjustment by the model's own
    image-blind prior), which is what a uniform test prior needs. Both need a model that has
    learned the image: a model that ignores it has ``s ≈ 0`` and nothing to amplify. ``g`` must
    estimate the prior: a random other image (``"shuffle"``), averaged over ``num_samples``
    draws, does so for models that never saw an all-zero image; a zero image may be far from
    any training input.

    Args:
        alpha: strength ``α >= 0`` of the subtraction (0 = the factual model).
        form: ``"amplify"`` (``(1 + α) f − α g``, the contrastive form of counterfactual
            decoding) or ``"subtract"`` (``f − α g``, a logit adjustment by the image-blind
            prediction).
        num_samples: counterfactual draws averaged (in ``space``) for the random modes
            ``"shuffle"`` and ``"noise"`` (1 for the deterministic modes).
        plausibility: ``β`` in ``[0, 1)``: answers whose factual probability is below ``β``
            times the top answer's are left out of the comparison (their score becomes the
            dtype's lowest value), as in counterfactual decoding's plausibility constraint. A
            small ``β`` (e.g. ``1e-3``) keeps the answers valid for the question (the model
            knows its answer types) and stops the subtraction from promoting answers that are
            equally unlikely with and without the image (``f − g ≈ 0`` for both); ``0`` keeps
            every answer.
        mode: how the image is removed: ``"zeros"``, ``"mean"`` (the adapter's fitted mean, see
            ``vl.adapter.fit_vision_mean``), ``"shuffle"``, ``"noise"`` or ``"mask"``.
        space: ``"logits"`` (raw scores) or ``"log_softmax"`` (log-probabilities over answers;
            over the candidate texts for contrastive models).
        train_on: ``"factual"`` (default): in training mode ``logits`` are the factual logits
            (no counterfactual pass), the task loss trains the plain model and the subtraction
            applies at evaluation. ``"debiased"``: ``logits`` are the debiased scores in training
            too, and the task loss flows through both passes.
        cache: reuse counterfactual logits across calls, keyed by the question
            (``adapter.language_cache_key``; by candidate text for contrastive models), so a
            repeated question costs one forward. Used in eval mode only; cleared by
            ``vl.train()`` / ``vl.eval()`` and :meth:`PriorSubtraction.clear_cache` (call it
            after changing weights in eval mode). Requires a deterministic ``mode`` (zeros /
            mean / mask); ``"mean"`` additionally needs a fitted mean. It assumes the null-vision
            prediction depends on the language inputs only.
        cache_size: most entries kept (least recently used are dropped).

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.PriorSubtractionConfig(alpha=1.0)).eval()
        >>> out = vl(pixel_values=torch.rand(2, 3, 8, 8), input_ids=torch.randint(1, 20, (2, 5)))
        >>> torch.allclose(out.logits, 2 * out.factual_logits - out.counterfactual_logits)
        True
    """

    type = "prior_subtraction"
    alpha: float = 1.0
    form: Literal["amplify", "subtract"] = "amplify"
    num_samples: int = 1
    plausibility: float = 0.0
    mode: Literal["zeros", "mean", "shuffle", "noise", "mask"] = "zeros"
    space: Literal["logits", "log_softmax"] = "logits"
    train_on: Literal["factual", "debiased"] = "factual"
    cache: bool = False
    cache_size: int = 4096

    def validate(self) -> None:
        self._check_positive("alpha", allow_zero=True)
        self._check_int("cache_size", minimum=1)
        self._check_int("num_samples", minimum=1)
        if not (
            isinstance(self.plausibility, (int, float))
            and not isinstance(self.plausibility, bool)
            and 0 <= self.plausibility < 1
        ):
            self._fail("plausibility", "must be a number in [0, 1), e.g. 1e-3 (0: no constraint)")
        if self.num_samples > 1 and self.mode in _DETERMINISTIC_MODES:
            self._fail(
                "num_samples",
                f"averages random counterfactuals, but mode={self.mode!r} gives the same one "
                "every draw; use mode 'shuffle' or 'noise', or num_samples=1",
            )
        if not isinstance(self.cache, bool):
            self._fail("cache", "must be True or False")
        if self.cache and self.mode not in _DETERMINISTIC_MODES:
            raise ConfigError(
                f"PriorSubtractionConfig(cache=True, mode={self.mode!r}) is invalid: a "
                f"{self.mode!r} counterfactual changes from call to call, so cached values would "
                f"be wrong. Use mode 'zeros', 'mean' or 'mask' with the cache, or cache=False."
            )


@implements(PriorSubtractionConfig)
class PriorSubtraction(Intervention):
    """Implementation of :class:`PriorSubtractionConfig`."""

    def __init__(
        self, config: PriorSubtractionConfig, model: nn.Module, adapter: ModelAdapter
    ) -> None:
        super().__init__(config, model, adapter)
        self.kind = adapter.kind
        if config.mode == "mask" and not adapter.supports("vision_attention_mask"):
            raise ConfigError(
                f"PriorSubtractionConfig(mode='mask') needs a vision mask, and the "
                f"{adapter.family or 'generic'} adapter has none; use mode 'zeros' or 'mean'."
            )
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    # -- cache ------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every cached counterfactual (and reset the hit / miss counters)."""
        self._cache.clear()
        self.cache_hits = 0
        self.cache_misses = 0

    def train(self, mode: bool = True) -> PriorSubtraction:
        if mode or self.training:  # weights may change in training: start afresh
            self.clear_cache()
        return super().train(mode)

    def _remember(self, key: bytes, value: torch.Tensor) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def _cached_counterfactual(self, state: ForwardState) -> torch.Tensor:
        adapter, inputs = state.adapter, state.inputs
        if self.config.mode == "mean" and not adapter.vision_mean:
            raise InterventionStateError(
                "PriorSubtractionConfig(cache=True, mode='mean') needs a fitted vision mean (the "
                "batch mean changes from batch to batch); call vl.adapter.fit_vision_mean(batches) "
                "first, or use mode='zeros'."
            )
        keys = adapter.language_cache_key(inputs)
        missing: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in missing:
                missing[k] = i
        self.cache_hits += len(keys) - len(missing)
        self.cache_misses += len(missing)
        # this batch's values, read before storing new ones can evict them (more distinct
        # questions than cache_size in one batch)
        found = {k: self._cache[k] for k in keys if k in self._cache}
        if missing:
            rows = torch.tensor(list(missing.values()), dtype=torch.long)
            values = self._run_subset(state, rows)
            for j, k in enumerate(missing):
                found[k] = values[j].detach()
                self._remember(k, found[k])
        out = []
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
            out.append(found[k].to(state.factual_logits.device))
        stacked = torch.stack(out)  # (B, A) or (num_texts,)
        if self.kind == "contrastive":
            return stacked.unsqueeze(0).expand_as(state.factual_logits)
        return stacked

    def _run_subset(self, state: ForwardState, rows: torch.Tensor) -> torch.Tensor:
        """Counterfactual logits of the examples (texts, for contrastive models) in ``rows``."""
        adapter, inputs = state.adapter, state.inputs
        cf = adapter.counterfactual_inputs(
            inputs, remove="vision", mode=self.config.mode, generator=state.generator
        )
        if self.kind == "contrastive":
            lang = set(adapter.language_keys)
            n_text = int(state.factual_logits.shape[-1])
            n_img = int(state.factual_logits.shape[0])
            sub = {}
            for k, v in cf.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    if k in lang and v.shape[0] == n_text:
                        v = v[rows.to(v.device)]
                    elif k not in lang and v.shape[0] == n_img:
                        v = v[:1]
                sub[k] = v
            return state.run(sub)[0]
        n = adapter.batch_size(inputs)
        sub = {
            k: v[rows.to(v.device)]
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n
            else v
            for k, v in cf.items()
        }
        return state.run(sub)

    # -- forward ----------------------------------------------------------------------------
    def _space(self, z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(z, dim=-1) if self.config.space == "log_softmax" else z

    def combine(self, state: ForwardState) -> None:
        cfg = self.config
        if state.training and cfg.train_on == "factual":
            return
        if cfg.cache and not state.training:
            g_raw = self._cached_counterfactual(state)
            g = self._space(g_raw.to(state.logits.dtype))
        else:
            g_raw = state.counterfactual("vision", cfg.mode)
            g = self._space(g_raw.to(state.logits.dtype))
            if cfg.num_samples > 1:
                draws = [g_raw] + [
                    state.run(
                        state.adapter.counterfactual_inputs(
                            state.inputs, remove="vision", mode=cfg.mode, generator=state.generator
                        )
                    )
                    for _ in range(cfg.num_samples - 1)
                ]
                g_raw = torch.stack(draws).mean(0)
                g = torch.stack([self._space(d.to(state.logits.dtype)) for d in draws]).mean(0)
        f = self._space(state.logits)
        state.counterfactual_logits = g_raw
        state.effects.update(tie=f - g, prior=g)
        if cfg.form == "subtract":
            debiased = f - cfg.alpha * g
        else:
            debiased = (1.0 + cfg.alpha) * f - cfg.alpha * g
        # masked scores stay masked: (1 + a)(-inf) - a(-inf) would be NaN
        masked = torch.isneginf(f) | torch.isneginf(g)
        if bool(masked.any()):
            debiased = torch.where(masked, f, debiased)
        if cfg.plausibility > 0:
            keep = plausibility_mask(state.logits.detach(), cfg.plausibility)
            debiased = debiased.masked_fill(~keep, torch.finfo(debiased.dtype).min)
        state.logits = debiased

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"alpha={cfg.alpha}, form={cfg.form!r}, mode={cfg.mode!r}, space={cfg.space!r}, "
            f"num_samples={cfg.num_samples}, cache={cfg.cache}"
        )
