"""CF-VQA: question-only and vision-only branch heads, fusion, and the total indirect effect.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    AnswerBranch,
    CFVQAConfig,
    Counterfactual,
    CounterfactualConfig,
    build_branch,
)

__all__ = [
    "AnswerBranch",
    "build_branch",
    "CFVQAConfig",
    "Counterfactual",
    "CounterfactualConfig",
]
