"""causalvl: causal interventions that remove spurious correlations from vision-language models.

    >>> import causalvl
    >>> vl = causalvl.intervene(model, causalvl.CFVQAConfig(num_answers=10))  # doctest: +SKIP
    >>> out = vl(**inputs)                                                              # doctest: +SKIP
    >>> out.logits, out.factual_logits, out.effects["tie"]                              # doctest: +SKIP

The top level holds the entry points, the configs, the result types and the extension API
(``Intervention``, ``implements``, ``ForwardState``, ``ModelAdapter``, ...). Everything else
lives in its subpackage, imported by one path: reference models in ``causalvl.models``, data in
``causalvl.datasets``, metric functions in ``causalvl.diagnostics``, training tools in
``causalvl.training``, decoding tools in ``causalvl.decoding``.

Public names are loaded on first use so that ``import causalvl`` stays fast: torch,
transformers, dowhy and matplotlib are only imported by the parts that need them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ._version import __version__
from .errors import warn_at_caller

logging.getLogger("causalvl").addHandler(logging.NullHandler())

# public name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    # errors
    "CausalVLError": ".errors",
    "ConfigError": ".errors",
    "InputError": ".errors",
    "UnsupportedModelError": ".errors",
    "NoMatchingModuleError": ".errors",
    "AlreadyIntervenedError": ".errors",
    "InterventionStateError": ".errors",
    "CheckpointError": ".errors",
    "DataError": ".errors",
    "OptionalDependencyError": ".errors",
    # configuration and outputs
    "Config": ".config",
    "InterventionConfig": ".config",
    "InterventionOutput": ".outputs",
    "ObjectiveOutput": ".outputs",
    # the wrapper
    "intervene": ".wrapper",
    "load": ".wrapper",
    "IntervenedModel": ".wrapper",
    "inspect_targets": ".wrapper",
    # adapters
    "ModelAdapter": ".adapters",
    "GenericAdapter": ".adapters",
    "register_adapter": ".adapters",
    "get_adapter": ".adapters",
    # interventions
    "Intervention": ".interventions.base",
    "ForwardState": ".interventions.base",
    "HookContext": ".interventions.base",
    "implements": ".interventions.base",
    "IdentityConfig": ".interventions.identity.config",
    # backdoor adjustment
    "BackdoorConfig": ".interventions.backdoor.config",
    # causal attention (front-door)
    "CATTConfig": ".interventions.catt.config",
    "ConfounderDictionary": ".interventions.confounders",
    "FeatureCollection": ".interventions.confounders",
    "CFVQAConfig": ".interventions.cfvqa.config",
    "PriorSubtractionConfig": ".interventions.prior_subtraction.config",
    "RUBiConfig": ".interventions.rubi.config",
    "LMHConfig": ".interventions.lmh.config",
    "BiasProductConfig": ".interventions.lmh.config",
    "GGEConfig": ".interventions.gge.config",
    "ReweightConfig": ".interventions.reweight.config",
    "question_type_prior": ".interventions.losses",
    "set_bias_prior": ".interventions.prior",
    "GroupDROConfig": ".interventions.group_dro.config",
    # training
    "Trainer": ".training.trainer",
    "TrainConfig": ".training.config",
    "TrainResult": ".training.trainer",
    "Callback": ".training.trainer",
    "CurriculumConfig": ".training.curriculum",
    "train_jtt": ".training.jtt",
    "JTTResult": ".training.jtt",
    "refit_last_layer": ".training.dfr",
    "RefitResult": ".training.dfr",
    # diagnostics and reports
    "diagnose": ".diagnostics",
    "Diagnostics": ".diagnostics",
    "DiagnosticsConfig": ".diagnostics",
    "SplitDiagnostics": ".diagnostics",
    "MetricTable": ".diagnostics",
    "estimate_spurious_effect": ".diagnostics",
    "EffectEstimate": ".diagnostics",
    "RefutationResult": ".diagnostics",
    "audit_blind_solvability": ".diagnostics",
    "BlindSolvabilityAudit": ".diagnostics",
    "BiasReport": ".reports",
    # counterfactual decoding for generative VLMs
    "CounterfactualDecodingConfig": ".decoding.config",
    "CounterfactualDecodingOutput": ".decoding.intervention",
    "CounterfactualLogitsProcessor": ".decoding.processor",
    "POPEEvaluator": ".decoding.pope",
    "POPEResult": ".decoding.pope",
}

#: subpackages reachable as attributes (``causalvl.datasets.PriorShiftVQA``), imported on use
_SUBMODULES = frozenset(
    {
        "adapters",
        "batch",
        "datasets",
        "decoding",
        "diagnostics",
        "efficacy",
        "hooks",
        "interventions",
        "losses",
        "models",
        "pretrained",
        "reports",
        "runtime",
        "training",
    }
)

#: deprecated names that still resolve (constructing them warns), kept out of ``__all__``
_DEPRECATED: dict[str, str] = {"CounterfactualConfig": ".interventions.cfvqa.config"}

#: names that were top-level before and now live only in their subpackage: they resolve for
#: one more release, with a FutureWarning naming the path to import them from
_MOVED: dict[str, str] = {
    "HookManager": "hooks",
    "BackdoorAdjustment": "interventions.backdoor",
    "NWGMAttention": "interventions.backdoor",
    "VCRCNNHead": "interventions.backdoor",
    "vc_rcnn_loss": "interventions.backdoor",
    "TinyVQA": "models",
    "TinyContrastive": "models",
    "TinyRegionClassifier": "models",
    "FrozenFeatureVQA": "models",
    "DifficultySchedule": "training",
    "CurriculumContrastiveObjective": "training",
    "ComparativeObjective": "training",
    "HardNegativeGenerator": "training",
    "jtt_error_set": "training",
    "upsample": "training",
    "group_metrics": "diagnostics",
    "GroupAccuracy": "diagnostics",
    "worst_group_accuracy": "diagnostics",
    "prior_agreement": "diagnostics",
    "counterfactual_flip_rate": "diagnostics",
    "expected_calibration_error": "diagnostics",
    "winoground_scores": "diagnostics",
    "compositional_scores": "diagnostics",
    "foil_accuracy": "diagnostics",
    "effect_magnitudes": "diagnostics",
    "vcd_scores": "decoding",
    "pai_scores": "decoding",
    "build_pope_questions": "decoding",
    "pope_metrics": "decoding",
    "digits": "datasets",
    "cifar10": "datasets",
    "ArraySource": "datasets",
    "ImageSource": "datasets",
    "PriorShiftVQA": "datasets",
    "FeatureVQA": "datasets",
    "ContextShift": "datasets",
    "CompositionalPairs": "datasets",
    "ComparativePairs": "datasets",
    "perturb_caption": "datasets",
    "collate": "datasets",
    "WordTokenizer": "datasets",
    "load_winoground": "datasets",
    "load_vqacp": "datasets",
    "load_valse": "datasets",
    "load_sugarcrepe": "datasets",
    "load_nlvr": "datasets",
    "load_nlvr2": "datasets",
    "load_aro": "datasets",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        return getattr(importlib.import_module(_DEPRECATED[name], __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _MOVED:
        home = f"causalvl.{_MOVED[name]}"
        warn_at_caller(
            f"causalvl.{name} moved to {home}.{name}; the top-level name will be removed in the "
            f"next release (use: from {home} import {name})."
        )
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'causalvl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
