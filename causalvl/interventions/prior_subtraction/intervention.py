"""Model-agnostic prior subtraction: for models without a separable question branch (ViLT,
CLIP, any ``nn.Module``), run the model again with the image removed and subtract that
prediction, ``(1 + α)·factual − α·counterfactual`` (formulas in ``docs/concepts.md``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...errors import ConfigError, InterventionStateError
from ..base import ForwardState, Intervention, implements
from ..fusion import plausibility_mask
from .config import PriorSubtractionConfig

logger = logging.getLogger(__name__)

__all__ = ["PriorSubtraction", "PriorSubtractionConfig"]


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
