"""The no-op intervention (:class:`Identity`); its config is in :mod:`.config`."""

from __future__ import annotations

from ..base import Intervention, implements
from .config import IdentityConfig

__all__ = ["Identity", "IdentityConfig"]


@implements(IdentityConfig)
class Identity(Intervention):
    """Implementation of :class:`IdentityConfig`."""

    @property
    def capture_roles(self) -> tuple[str, ...]:
        return self.config.capture_roles
