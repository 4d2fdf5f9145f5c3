"""A no-op intervention that proves the plumbing: logits equal the bare model's exactly.

The config is in :mod:`.config` (pure Python, imported with the package) and the
implementation in :mod:`.intervention` (torch, imported when one of its names is first used).
"""

from __future__ import annotations

from ..._lazy import lazy_attributes
from .config import IdentityConfig

#: public name -> submodule it lives in (imported on first use, so importing the config does not
#: import torch)
_LAZY = {
    "Identity": ".intervention",
}

__all__ = [
    "Identity",
    "IdentityConfig",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
