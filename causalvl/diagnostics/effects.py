"""Magnitudes of the causal effects (TE, NDE, TIE, NIE) a wrapped model reports.

>>> import torch
>>> from causalvl.diagnostics.effects import effect_magnitudes
>>> m = effect_magnitudes({"te": torch.tensor([[1.0, -3.0], [2.0, 0.0]])}, torch.tensor([1, 0]))
>>> m.effects["te"].mean_abs, m.effects["te"].mean_predicted
(1.5, -0.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import InputError
from .results import EffectMagnitudes, EffectSummary


def effect_magnitudes(
    effects: Mapping[str, Any], preds: Any, *, bins: int = 20
) -> EffectMagnitudes:
    """Mean |effect| and mean predicted-class effect per effect tensor.

    Args:
        effects: effect name -> ``(N, A)`` tensor (e.g. ``output.effects``).
        preds: ``(N,)`` predicted answer ids.
        bins: histogram bins for the predicted-class entries.
    """
    preds = torch.as_tensor(preds).detach().cpu().long().reshape(-1)
    out: dict[str, EffectSummary] = {}
    for name, value in effects.items():
        e = torch.as_tensor(value).detach().cpu().to(torch.float64)
        if e.dim() == 1:
            e = e[:, None]
        if e.dim() != 2 or e.shape[0] != preds.shape[0]:
            raise InputError(
                f"effect {name!r} must be (N, A) with N = {preds.shape[0]}, got {tuple(e.shape)}."
            )
        idx = preds if e.shape[1] > 1 else torch.zeros_like(preds)
        picked = e.gather(1, idx[:, None])[:, 0]
        out[str(name)] = summarize_effect(str(name), e.abs().mean(), picked, bins=bins)
    return EffectMagnitudes(effects=out)


def summarize_effect(
    name: str, mean_abs: Any, predicted: torch.Tensor, *, bins: int = 20
) -> EffectSummary:
    """An :class:`EffectSummary` from the mean |value| and the predicted-class entries ``(N,)``."""
    predicted = predicted.detach().cpu().to(torch.float64)
    lo, hi = float(predicted.min()), float(predicted.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(predicted, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return EffectSummary(
        effect=name,
        mean_abs=float(mean_abs),
        mean_predicted=float(predicted.mean()),
        n=int(predicted.numel()),
        hist_edges=tuple(float(x) for x in edges),
        hist_counts=tuple(int(c) for c in counts),
    )


__all__ = ["effect_magnitudes", "summarize_effect"]
