"""Backdoor adjustment (NWGM edit hook over a confounder dictionary) and the VC R-CNN context objective.

The config and the implementation are in :mod:`.intervention`; built-in types are
looked up through :data:`causalvl.config.BUILTIN_INTERVENTION_CONFIGS`.
"""

from .intervention import (
    BackdoorAdjustment,
    BackdoorConfig,
    ConfounderDictionary,
    FeatureCollection,
    NWGMAttention,
    VCRCNNHead,
    checkpointed_ancestor,
    vc_rcnn_loss,
)

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
