"""Counterfactual (visual contrastive) decoding for generative VLMs, and a POPE evaluator.

* :func:`vcd_scores` — the contrast formula (the single place it lives); :func:`pai_scores`
  — the same in PAI's ``gamma`` parameterisation.
* :class:`CounterfactualDecodingConfig` — the intervention; ``vl.generate(...)`` decodes with it.
* :class:`CounterfactualLogitsProcessor` — the same for a plain ``model.generate``.
* :mod:`causalvl.decoding.pope` — object-hallucination (POPE) questions, answer parsing, metrics.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "vcd_scores": ".scores",
    "pai_scores": ".scores",
    "plausibility_mask": ".scores",
    "diffusion_noise": ".scores",
    "noise_schedule": ".scores",
    "DecodingBranch": ".branch",
    "CounterfactualLogitsProcessor": ".processor",
    "BatchedContrastProcessor": ".processor",
    "TokenSelector": ".processor",
    "StepRecord": ".processor",
    "CounterfactualDecodingConfig": ".config",
    "CounterfactualDecoding": ".intervention",
    "CounterfactualDecodingOutput": ".intervention",
    "POPEEvaluator": ".pope",
    "POPEQuestion": ".pope",
    "POPEResult": ".pope",
    "build_pope_questions": ".pope",
    "parse_yes_no": ".pope",
    "pope_metrics": ".pope",
    "tiny_generative_model": ".tiny",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'causalvl.decoding' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
