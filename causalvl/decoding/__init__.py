"""Counterfactual (visual contrastive) decoding for generative VLMs, and a POPE evaluator.

* :func:`vcd_scores` — the contrast formula (the single place it lives); :func:`pai_scores`
  — the same in PAI's ``gamma`` parameterisation.
* :class:`CounterfactualDecodingConfig` — the intervention; ``vl.generate(...)`` decodes with it.
* :class:`CounterfactualLogitsProcessor` — the same for a plain ``model.generate``.
* :mod:`causalvl.decoding.pope` — object-hallucination (POPE) questions, answer parsing, metrics.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

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

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
