"""Deprecated module name: the wrapper lives in :mod:`causalvl.wrapper` (``model.py`` beside
``models.py`` read as one thing). Importing this module warns; it is removed in the next
release."""

from __future__ import annotations

from .errors import warn_at_caller
from .losses import task_loss
from .wrapper import *  # noqa: F403
from .wrapper import __all__ as _wrapper_names

warn_at_caller(
    "causalvl.model is renamed causalvl.wrapper (the wrapper) and the task loss lives in "
    "causalvl.losses; the old module is removed in the next release."
)

__all__ = [*_wrapper_names, "task_loss"]  # noqa: PLE0604
