"""One decoding branch: its own token ids, model kwargs, KV cache, positions and model state.

A :class:`DecodingBranch` advances a generative model token by token with the same internal
steps Hugging Face ``generate()`` uses (``_prepare_position_ids_for_generation``,
``prepare_inputs_for_generation`` with ``is_first_iteration`` only on its own prefill,
``_update_model_kwargs_for_generation``), but on state it owns: every tensor is cloned on entry,
the cache is created by its own prefill and never shared, and mutable model attributes listed by
the adapter (Qwen2-VL's ``rope_deltas``) are swapped in and out around each of its forwards.

Example:
    >>> import torch
    >>> from causalvl.decoding.tiny import tiny_generative_model
    >>> model, inputs = tiny_generative_model("llava")
    >>> branch = DecodingBranch(model, inputs)
    >>> first = branch.prefill()                       # (batch, vocab) next-token logits
    >>> second = branch.advance(first.argmax(-1))      # feed the chosen token
    >>> second.shape
    torch.Size([1, 256])
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError, InterventionStateError


def _fresh(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_fresh(v) for v in value)
    return value


class DecodingBranch:
    """A second generation state for a model (see module docs).

    Args:
        model: a Hugging Face generative model (``GenerationMixin``).
        inputs: this branch's prompt inputs (``input_ids`` ``(B, L)`` plus pixel inputs etc.);
            deep-copied, never modified. Must not hold a cache.
        adapter: the model's :class:`~causalvl.adapters.generative.GenerativeAdapter` (for
            ``isolated_state``); ``None`` when the model keeps no mutable generation state.

    Attributes:
        input_ids: ``(B, L + steps)`` the branch's sequence so far.
        logits: the latest ``(B, vocab)`` float32 next-token logits, or ``None``.
    """

    def __init__(
        self, model: nn.Module, inputs: Mapping[str, Any], adapter: Any | None = None
    ) -> None:
        if not hasattr(model, "prepare_inputs_for_generation"):
            raise InputError(
                f"{type(model).__name__} is not a generative model (no "
                "prepare_inputs_for_generation); contrastive decoding needs a "
                "...ForConditionalGeneration model."
            )
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise InputError(
                "a decoding branch needs input_ids of shape (batch, length); got "
                f"{type(ids).__name__}."
            )
        for key in ("cache", "past_key_values"):
            if inputs.get(key) is not None:
                raise InputError(
                    f"the branch inputs hold {key!r}; a counterfactual branch builds its own "
                    "cache. Pass the prompt inputs without a cache."
                )
        self.model = model
        self.adapter = adapter
        self.input_ids = ids.detach().clone()
        self.kwargs: dict[str, Any] = {k: _fresh(v) for k, v in inputs.items() if k != "input_ids"}
        self.kwargs["use_cache"] = True
        self.logits: torch.Tensor | None = None
        self.steps = 0
        self._state: dict[str, Any] = {}
        forward = getattr(model, "forward", model)
        self._accepts_positions = "position_ids" in inspect.signature(forward).parameters

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def _isolated(self) -> Any:
        guard = getattr(self.adapter, "isolated_state", None)
        if guard is None:
            import contextlib

            return contextlib.nullcontext()
        return guard(self._state)

    def _run(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        out = self.model(**model_inputs, return_dict=True)
        self.kwargs = self.model._update_model_kwargs_for_generation(
            out, self.kwargs, is_encoder_decoder=False
        )
        self.logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)
        return self.logits

    @torch.no_grad()
    def prefill(self) -> torch.Tensor:
        """Run the prompt through the model; returns the ``(B, vocab)`` next-token logits."""
        if self.steps:
            raise InterventionStateError(
                "this decoding branch has already been prefilled; create a new branch per prompt."
            )
        with self._isolated():
            if self._accepts_positions and self.kwargs.get("position_ids") is None:
                self.kwargs["position_ids"] = self.model._prepare_position_ids_for_generation(
                    self.input_ids, self.kwargs
                )
            model_inputs = self.model.prepare_inputs_for_generation(
                self.input_ids, is_first_iteration=True, **self.kwargs
            )
            logits = self._run(model_inputs)
        self.steps = 1
        return logits

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``(B,)`` (the tokens chosen at this step) and return the next logits."""
        if not self.steps:
            raise InterventionStateError("call prefill() before advance().")
        tokens = torch.as_tensor(tokens, device=self.input_ids.device).reshape(-1)
        if tokens.numel() != self.batch_size:
            raise InputError(
                f"advance got {tokens.numel()} tokens for a branch of batch size "
                f"{self.batch_size}; pass one token per row."
            )
        self.input_ids = torch.cat([self.input_ids, tokens.to(self.input_ids.dtype)[:, None]], 1)
        with self._isolated():
            model_inputs = self.model.prepare_inputs_for_generation(
                self.input_ids, next_sequence_length=1, **self.kwargs
            )
            logits = self._run(model_inputs)
        self.steps += 1
        return logits

    @property
    def cache(self) -> Any:
        """The branch's own KV cache object (``None`` before prefill)."""
        return self.kwargs.get("cache")
