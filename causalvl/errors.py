"""Exceptions raised by causalvl.

Every exception subclasses :class:`CausalVLError` *and* the matching builtin
(``ValueError``, ``RuntimeError``, ``ImportError``), so callers can catch either.
Messages say what was wrong, the offending value, and how to fix it.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any


class CausalVLError(Exception):
    """Base class of every error raised by causalvl."""


class ConfigError(CausalVLError, ValueError):
    """A configuration field holds an invalid value."""


class InputError(CausalVLError, ValueError):
    """A batch passed to a wrapped model is malformed (missing keys, wrong dtype, empty)."""


class UnsupportedModelError(CausalVLError, ValueError):
    """No adapter knows this model family."""


class NoMatchingModuleError(CausalVLError, ValueError):
    """A role name or module path matched no module of the model."""


class AlreadyIntervenedError(CausalVLError, ValueError):
    """``intervene`` was called on a model that is already wrapped."""


class InterventionStateError(CausalVLError, RuntimeError):
    """An operation does not fit the wrapper's current state."""


class CheckpointError(CausalVLError, RuntimeError):
    """A saved file is missing, corrupted, or does not match the model."""


class DataError(CausalVLError, ValueError):
    """A dataset file or record is malformed."""


class OptionalDependencyError(CausalVLError, ImportError):
    """An optional dependency is missing."""


def _importlib(frame: Any) -> bool:
    # the frames warnings.warn itself skips when it counts stacklevel
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def _ours(frame: Any) -> bool:
    # causalvl's own code, including dataclass-generated methods (their file is "<string>")
    module = frame.f_globals.get("__name__", "")
    return module == "causalvl" or module.startswith("causalvl.") or _importlib(frame)


def warn_at_caller(message: str, category: type[Warning] = FutureWarning) -> None:
    """Warn with the user's line as the location: the first caller outside the causalvl
    package, however deep inside causalvl the warning was reached (a config's metaclass or
    generated ``__init__``, ``from_dict``, ``causalvl.load``, a deprecated module's import).
    Deprecations use the default ``FutureWarning``."""
    frame = sys._getframe(1)
    level = 2  # 1 is this function, 2 its caller
    while frame.f_back is not None and _ours(frame):
        frame = frame.f_back
        if not _importlib(frame):
            level += 1
    warnings.warn(message, category, stacklevel=level)


__all__ = [
    "AlreadyIntervenedError",
    "CausalVLError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "InterventionStateError",
    "NoMatchingModuleError",
    "OptionalDependencyError",
    "UnsupportedModelError",
    "warn_at_caller",
]
