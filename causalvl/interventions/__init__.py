"""Intervention configs and implementations.

The built-in configs and implementations are found through tables of ``"module:Class"``
strings (:data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS` and
:data:`causalvl.interventions.base.BUILTIN_IMPLEMENTATIONS`) and imported on first use, so
importing one config does not import every family (nor ``causalvl.decoding``).
"""

from __future__ import annotations

import functools
import importlib

from ..config import BUILTIN_INTERVENTION_CONFIGS

#: modules that define built-in intervention configs and implementations
BUILTIN_MODULES = tuple(
    dict.fromkeys(target.partition(":")[0] for target in BUILTIN_INTERVENTION_CONFIGS.values())
)


@functools.cache
def load_builtin() -> None:
    """Import every built-in config and implementation (idempotent). Nothing in causalvl
    needs it: types are imported one by one when they are looked up."""
    for target in BUILTIN_INTERVENTION_CONFIGS.values():
        module, _, name = target.partition(":")
        getattr(importlib.import_module(module), name)
