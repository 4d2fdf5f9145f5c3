"""Counterfactual decoding as Hugging Face logits processors.

Two integration patterns share :func:`~causalvl.decoding.scores.vcd_scores`:

* :class:`CounterfactualLogitsProcessor` (for a plain ``model.generate(...,
  logits_processor=[...])``): the processor owns a second :class:`DecodingBranch` on the
  counterfactual inputs, advances it with the token generate chose, and returns the contrast.
  ``generate`` then applies temperature / top-k / top-p (in transformers 5.x custom processors
  run before the sampling warpers), exactly VCD's order.
* :class:`BatchedContrastProcessor` (used by :class:`~causalvl.decoding.CounterfactualDecoding`
  when both branches' inputs have the same length): ``generate`` runs once on the batch
  ``[factual; counterfactual]`` (one forward of ``2B`` rows per step, each row with its own
  cache slot); the processor combines the two halves, picks the token itself and returns a
  one-hot (``0`` / ``-inf``) row for both halves so they stay in lockstep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .branch import DecodingBranch
from .scores import SPACES, Space, vcd_scores

try:  # transformers is a hard dependency, but keep import errors readable
    from transformers import LogitsProcessor
except ImportError as exc:  # pragma: no cover
    from ..errors import OptionalDependencyError

    raise OptionalDependencyError(
        "causalvl.decoding needs transformers>=5; pip install 'transformers>=5,<6'."
    ) from exc


@dataclass
class StepRecord:
    """One decoding step: the factual scores the processor received, the counterfactual
    branch's logits and the combined scores (all ``(B, vocab)`` float32)."""

    factual: torch.Tensor
    counterfactual: torch.Tensor
    scores: torch.Tensor


@dataclass
class TokenSelector:
    """Picks the next token from combined scores: greedy, or sampling after the HF warpers
    (temperature, then top-k, top-p, min-p, as ``generate`` orders them) with its own generator.

    Example:
        >>> sel = TokenSelector(do_sample=False)
        >>> sel(torch.tensor([[0.0, 2.0, -float("inf")]])).tolist()
        [1]
    """

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    generator: torch.Generator | None = None
    warpers: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import (
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        if not self.do_sample:
            return
        if self.temperature is not None and self.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k is not None and self.top_k != 0:
            self.warpers.append(TopKLogitsWarper(top_k=self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=self.top_p))
        if self.min_p is not None:
            self.warpers.append(MinPLogitsWarper(min_p=self.min_p))

    def warp(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        return scores

    def __call__(self, scores: torch.Tensor, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, vocab)`` scores -> ``(B,)`` token ids."""
        if not self.do_sample:
            return scores.argmax(dim=-1)
        probs = torch.softmax(self.warp(input_ids, scores), dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def one_hot_scores(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B, vocab)`` scores that are ``0`` at ``tokens`` and ``-inf`` elsewhere."""
    out = torch.full_like(like, float("-inf"))
    return out.scatter_(1, tokens[:, None].to(out.device), 0.0)


def _check_coeffs(alpha: float, beta: float, space: str) -> None:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
        raise ConfigError(f"alpha = {alpha!r} is invalid; pass a number >= 0 (VCD uses 1).")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta <= 1:
        raise ConfigError(f"beta = {beta!r} is invalid; pass a number in [0, 1] (VCD uses 0.1).")
    if space not in SPACES:
        raise ConfigError(f"space = {space!r} is not allowed; choose one of {SPACES}.")


class CounterfactualLogitsProcessor(LogitsProcessor):
    """Visual contrastive decoding for a plain ``model.generate(..., logits_processor=[...])``.

    At every step the processor advances its own counterfactual branch (a separate KV cache,
    never shared with generate's) with the token generate chose and returns
    ``vcd_scores(scores, l_cf, alpha, beta, space)``. Create one processor per ``generate``
    call (it resets itself when it sees a shorter sequence than before).

    Args:
        model: the generative model ``generate`` is called on.
        cf_inputs: the counterfactual branch's prompt inputs (e.g. from
            :meth:`GenerativeAdapter.decoding_counterfactual`, or :meth:`from_inputs`); the
            batch size must equal generate's (no beams, one sequence per prompt).
        alpha, beta, space: as in :func:`~causalvl.decoding.scores.vcd_scores`.
        adapter: the model's adapter (``"auto"``: found by ``model.config.model_type``; used to
            keep per-branch model state such as Qwen2-VL's ``rope_deltas`` apart).
        record: keep a :class:`StepRecord` per step in :attr:`history`.
        selector: internal use — pick the token here and return one-hot scores.

    Example:
        >>> from causalvl.decoding.tiny import tiny_generative_model
        >>> model, inputs = tiny_generative_model("llava")
        >>> proc = CounterfactualLogitsProcessor.from_inputs(model, inputs, counterfactual="noise")
        >>> out = model.generate(**inputs, max_new_tokens=4, do_sample=False, logits_processor=[proc])
        >>> out.shape[1] - inputs["input_ids"].shape[1]
        4
    """

    def __init__(
        self,
        model: nn.Module,
        cf_inputs: Mapping[str, Any],
        *,
        alpha: float = 1.0,
        beta: float = 0.1,
        space: Space = "logits",
        adapter: Any = "auto",
        record: bool = False,
        selector: TokenSelector | None = None,
    ) -> None:
        _check_coeffs(alpha, beta, space)
        if not isinstance(cf_inputs, Mapping) or "input_ids" not in cf_inputs:
            raise InputError(
                "cf_inputs must be a mapping with the counterfactual prompt's input_ids; build "
                "it with CounterfactualLogitsProcessor.from_inputs(model, inputs, ...)."
            )
        self.model = model
        self.adapter = _generative_adapter(model, adapter)
        self.cf_inputs = dict(cf_inputs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.space = space
        self.record = record
        self.selector = selector
        self.history: list[StepRecord] = []
        self.branch: DecodingBranch | None = None
        self._seen = 0

    @classmethod
    def from_inputs(
        cls,
        model: nn.Module,
        inputs: Mapping[str, Any],
        *,
        counterfactual: str = "noise",
        noise_step: int = 500,
        seed: int = 0,
        disturbance_ids: Any = None,
        adapter: Any = "auto",
        **kwargs: Any,
    ) -> CounterfactualLogitsProcessor:
        """Build the counterfactual inputs from the factual ``inputs`` with the model's adapter
        (``counterfactual`` = ``"noise"``, ``"blank"``, ``"no_image"`` or ``"instruction"``;
        the noise is drawn from ``torch.Generator().manual_seed(seed)``), then the processor."""
        bound = _generative_adapter(model, adapter)
        g = torch.Generator().manual_seed(int(seed))
        cf = bound.decoding_counterfactual(
            bound.model_inputs(inputs),
            counterfactual,
            noise_step=noise_step,
            generator=g,
            disturbance_ids=disturbance_ids,
        )
        return cls(model, cf, adapter=bound, **kwargs)

    def reset(self) -> None:
        """Forget the counterfactual branch (the next call starts a new one)."""
        self.branch = None
        self.history = []
        self._seen = 0

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.branch is not None and input_ids.shape[1] <= self._seen:
            self.reset()
        if self.branch is None:
            self.branch = DecodingBranch(self.model, self.cf_inputs, self.adapter)
            if self.branch.batch_size != input_ids.shape[0]:
                raise InputError(
                    f"generate runs {input_ids.shape[0]} rows but the counterfactual inputs have "
                    f"{self.branch.batch_size}; contrastive decoding supports one sequence per "
                    "prompt (num_beams=1, num_return_sequences=1)."
                )
            cf_logits = self.branch.prefill()
        else:
            new = input_ids[:, self._seen :]
            cf_logits = self.branch.logits
            for j in range(new.shape[1]):
                cf_logits = self.branch.advance(new[:, j])
        self._seen = int(input_ids.shape[1])
        cf_logits = cf_logits.to(scores.device)
        combined = vcd_scores(scores, cf_logits, self.alpha, self.beta, self.space)
        if self.record:
            self.history.append(StepRecord(scores.clone(), cf_logits.clone(), combined.clone()))
        if self.selector is not None:
            return one_hot_scores(self.selector(combined, input_ids), combined)
        return combined


class BatchedContrastProcessor(LogitsProcessor):
    """Combines the halves of a ``[factual; counterfactual]`` batch and keeps them in lockstep.

    ``generate`` must run greedily (``do_sample=False``) on ``2B`` rows: rows ``:B`` carry the
    factual inputs, rows ``B:`` the counterfactual ones (same length). Sampling, when asked
    for, happens here through ``selector``.

    Args:
        batch_size: ``B``, the number of factual rows.
        alpha, beta, space: as in :func:`~causalvl.decoding.scores.vcd_scores`.
        selector: picks the token from the combined ``(B, vocab)`` scores.
        record: keep a :class:`StepRecord` per step in :attr:`history`.
    """

    def __init__(
        self,
        batch_size: int,
        *,
        alpha: float = 1.0,
        beta: float = 0.1,
        space: Space = "logits",
        selector: TokenSelector | None = None,
        record: bool = False,
    ) -> None:
        _check_coeffs(alpha, beta, space)
        self.batch_size = int(batch_size)
        self.alpha, self.beta, self.space = float(alpha), float(beta), space
        self.selector = selector or TokenSelector()
        self.record = record
        self.history: list[StepRecord] = []

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b = self.batch_size
        if scores.shape[0] != 2 * b:
            raise InputError(
                f"the batched contrast expects {2 * b} rows ([factual; counterfactual]), got "
                f"{scores.shape[0]}; use num_beams=1 and num_return_sequences=1."
            )
        factual, cf = scores[:b], scores[b:]
        combined = vcd_scores(factual, cf, self.alpha, self.beta, self.space)
        if self.record:
            self.history.append(StepRecord(factual.clone(), cf.clone(), combined.clone()))
        tokens = self.selector(combined, input_ids[:b])
        return one_hot_scores(torch.cat([tokens, tokens]), scores)


def _generative_adapter(model: nn.Module, adapter: Any) -> Any:
    from ..adapters.base import ModelAdapter, get_adapter
    from ..adapters.generative import GenerativeAdapter, generative_families
    from ..errors import UnsupportedModelError

    if isinstance(adapter, ModelAdapter) and adapter.model is model:
        bound = adapter
    else:
        try:
            bound = get_adapter(model, adapter)
        except UnsupportedModelError as exc:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            raise UnsupportedModelError(
                f"contrastive decoding has no adapter for {type(model).__name__} "
                f"(model_type={model_type!r}); supported generative families: "
                f"{', '.join(generative_families())}. Subclass "
                "causalvl.adapters.generative.GenerativeAdapter and register it with "
                "causalvl.register_adapter('<model_type>')."
            ) from exc
    if not isinstance(bound, GenerativeAdapter):
        raise UnsupportedModelError(
            f"contrastive decoding needs a generative adapter, but {type(model).__name__} has "
            f"{type(bound).__name__}; supported generative families: "
            f"{', '.join(generative_families())}."
        )
    return bound
