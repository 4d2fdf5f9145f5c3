"""Intervention configs and implementations.

Built-in implementations are imported on first use by :func:`load_builtin`, so importing one
config does not import every family.
"""

from __future__ import annotations

import functools
import importlib

#: modules that define built-in intervention configs and implementations
BUILTIN_MODULES = (
    "causalvl.interventions.identity",
    "causalvl.interventions.counterfactual",
    "causalvl.interventions.rubi",
    "causalvl.interventions.ensembles",
    "causalvl.interventions.reweight",
    "causalvl.interventions.backdoor",
    "causalvl.interventions.group_dro",
    "causalvl.interventions.catt",
    "causalvl.decoding.intervention",
)


@functools.cache
def load_builtin() -> None:
    """Import every built-in implementation (idempotent)."""
    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a family not present in this build
            if exc.name is None or not name.startswith(exc.name):
                raise
