"""A no-op intervention that proves the plumbing: logits equal the bare model's exactly."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import InterventionConfig
from .base import Intervention, implements


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


@implements(IdentityConfig)
class Identity(Intervention):
    """Implementation of :class:`IdentityConfig`."""

    @property
    def capture_roles(self) -> tuple[str, ...]:
        return self.config.capture_roles
