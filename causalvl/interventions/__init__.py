"""Intervention configs and implementations.

The built-in configs and implementations are found through tables of ``"module:Class"``
strings (:data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS` and
:data:`causalvl.interventions.base.BUILTIN_IMPLEMENTATIONS`) and imported on first use, so
importing one config does not import every family (nor ``causalvl.decoding``). The
implementation table is separate from the config table so that a config can live in a module
that does not build the implementation.
"""

from __future__ import annotations
