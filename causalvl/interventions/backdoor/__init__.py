"""Backdoor adjustment (NWGM edit hook over a confounder dictionary) and the VC R-CNN context objective.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used);
built-in types are looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import BackdoorConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "BackdoorAdjustment": ".intervention",
    "checkpointed_ancestor": ".intervention",
    "ConfounderDictionary": ".intervention",
    "FeatureCollection": ".intervention",
    "NWGMAttention": ".intervention",
    "vc_rcnn_loss": ".intervention",
    "VCRCNNHead": ".intervention",
}

__all__ = [
    "BackdoorAdjustment",
    "BackdoorConfig",
    "checkpointed_ancestor",
    "ConfounderDictionary",
    "FeatureCollection",
    "NWGMAttention",
    "vc_rcnn_loss",
    "VCRCNNHead",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
