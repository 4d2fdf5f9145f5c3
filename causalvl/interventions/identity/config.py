"""Config of the no-op intervention (:class:`IdentityConfig`, ``"identity"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config import InterventionConfig

__all__ = ["IdentityConfig"]


@dataclass(kw_only=True)
class IdentityConfig(InterventionConfig):
    """No intervention: the wrapped model predicts exactly what the bare model predicts.

    Args:
        capture_roles: roles whose features are captured into ``output.features`` (handy for
            inspecting a model; the logits are unaffected).

    Example:
        >>> import causalvl
        >>> causalvl.IdentityConfig().to_dict()["type"]
        'identity'
    """

    type = "identity"
    capture_roles: tuple[str, ...] = ()

    def validate(self) -> None:
        if isinstance(self.capture_roles, str) or not all(
            isinstance(r, str) for r in self.capture_roles
        ):
            self._fail("capture_roles", "must be a list of role names")
        self._normalise("capture_roles", tuple(self.capture_roles))
