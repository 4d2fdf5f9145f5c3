"""Exceptions raised by causalvl.

Every exception subclasses :class:`CausalVLError` *and* the matching builtin
(``ValueError``, ``RuntimeError``, ``ImportError``), so callers can catch either.
Messages say what was wrong, the offending value, and how to fix it.
"""

from __future__ import annotations


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
]
