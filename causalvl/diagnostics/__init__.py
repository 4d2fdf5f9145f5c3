"""Diagnostics: how much a vision-language model relies on spurious correlations.

Pure metric functions (accuracy, groups, reliance, calibration, compositional scores, effect
magnitudes) work on tensors; :func:`diagnose` runs a model over data and returns a
:class:`Diagnostics` of frozen, JSON-ready results, one probe per diagnostic
(:mod:`causalvl.diagnostics.probes`; the Trainer's evaluation shares the accuracy probe);
:func:`estimate_spurious_effect` bridges to dowhy; :func:`audit_blind_solvability` measures
a benchmark's own language prior.
pandas, dowhy and scikit-learn are imported only by the functions that use them.
"""

from .audit import audit_blind_solvability
from .calibration import calibration, expected_calibration_error, reliability_curve
from .causal import estimate_spurious_effect
from .compositional import (
    compositional_scores,
    foil_accuracy,
    winoground_outcomes,
    winoground_scores,
)
from .diagnose import DiagnosticsConfig, diagnose
from .effects import effect_magnitudes
from .metrics import (
    GroupAccuracy,
    accuracy,
    bias_alignment,
    correctness,
    group_accuracy,
    group_metrics,
    worst_group_accuracy,
)
from .reliance import (
    counterfactual_flip_rate,
    kl_divergence,
    mean_kl,
    prior_agreement,
    replace_context,
)
from .results import (
    BiasAlignment,
    BlindSolvabilityAudit,
    CalibrationResult,
    CompositionalScores,
    ContextReliance,
    Diagnostics,
    EffectEstimate,
    EffectMagnitudes,
    EffectSummary,
    GroupMetrics,
    GroupScore,
    LanguagePriorReliance,
    Metric,
    MetricRow,
    MetricTable,
    RefutationResult,
    SplitDiagnostics,
)

__all__ = [
    "BiasAlignment",
    "BlindSolvabilityAudit",
    "CalibrationResult",
    "CompositionalScores",
    "ContextReliance",
    "Diagnostics",
    "DiagnosticsConfig",
    "EffectEstimate",
    "EffectMagnitudes",
    "EffectSummary",
    "GroupAccuracy",
    "GroupMetrics",
    "GroupScore",
    "LanguagePriorReliance",
    "Metric",
    "MetricRow",
    "MetricTable",
    "RefutationResult",
    "SplitDiagnostics",
    "accuracy",
    "audit_blind_solvability",
    "bias_alignment",
    "calibration",
    "compositional_scores",
    "correctness",
    "counterfactual_flip_rate",
    "diagnose",
    "effect_magnitudes",
    "estimate_spurious_effect",
    "expected_calibration_error",
    "foil_accuracy",
    "group_accuracy",
    "group_metrics",
    "kl_divergence",
    "mean_kl",
    "prior_agreement",
    "reliability_curve",
    "replace_context",
    "winoground_outcomes",
    "winoground_scores",
    "worst_group_accuracy",
]
