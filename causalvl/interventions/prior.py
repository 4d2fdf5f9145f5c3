"""The question-type answer prior table shared by LMH, BiasProduct, GGE and Reweight.

* ``_PriorTableMixin`` holds the ``(num_question_types, num_answers)`` prior as buffers (saved
  with the weights) and declares :attr:`~causalvl.Intervention.uses_prior`;
* :func:`set_bias_prior` installs a fitted table (the same as ``vl.set_bias_prior``);
* ``_check_prior_fields`` validates the prior fields of their configs.

The table itself is computed by :func:`causalvl.interventions.losses.question_type_prior`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError, InputError, InterventionStateError
from .base import Intervention
from .checks import _check_prior_fields  # noqa: F401  (its former home; kept for imports)

__all__ = ["set_bias_prior"]


class _PriorTableMixin(Intervention):
    """Holds the ``(num_question_types, num_answers)`` prior as buffers (saved with the
    weights): ``prior`` and ``prior_is_set``."""

    prior: torch.Tensor
    prior_is_set: torch.Tensor

    @property
    def uses_prior(self) -> bool:
        """These interventions read the question-type prior table (see :meth:`set_prior`)."""
        return True

    def _init_prior(self, num_answers: int, dtype: torch.dtype, device: torch.device) -> None:
        cfg = self.config
        rows = cfg.num_types() or 0
        if cfg.prior is not None:
            table = torch.tensor(cfg.prior, dtype=dtype, device=device)
            if table.shape[1] != num_answers:
                raise ConfigError(
                    f"{type(cfg).__name__}.prior has {table.shape[1]} columns but the model "
                    f"has {num_answers} answers; build the prior for this answer vocabulary."
                )
            is_set = True
        else:
            table = torch.zeros(rows, num_answers, dtype=dtype, device=device)
            is_set = False
        self.register_buffer("prior", table)
        self.register_buffer("prior_is_set", torch.tensor(is_set, device=device))

    def set_prior(self, table: torch.Tensor) -> None:
        """Install the prior table ``(num_question_types, num_answers)`` with entries in [0, 1].

        When the number of question types was not configured, the first table fixes it and
        is recorded in this intervention's own ``config.num_question_types`` (a copy: the
        caller's config is never changed), so saving and loading restore the shape.
        """
        cfg = self.config
        t = torch.as_tensor(table)
        if t.dim() != 2 or not t.is_floating_point():
            raise InputError(
                f"the prior must be a (num_question_types, num_answers) float tensor, got dtype "
                f"{t.dtype} and shape {tuple(t.shape)}; build it with question_type_prior()."
            )
        if t.shape[1] != self.prior.shape[1]:
            raise InputError(
                f"the prior has {t.shape[1]} answer columns but the model has "
                f"{self.prior.shape[1]} answers."
            )
        if not torch.isfinite(t).all() or bool((t < 0).any()) or bool((t > 1).any()):
            raise InputError(
                f"prior entries must be finite and in [0, 1] (got range [{float(t.min()):.4g}, "
                f"{float(t.max()):.4g}]); use mean soft scores per type (question_type_prior)."
            )
        rows = self.prior.shape[0]
        if rows and t.shape[0] != rows:
            raise InputError(
                f"the prior has {t.shape[0]} question types but this {type(cfg).__name__} was "
                f"built for {rows} (num_question_types); rebuild the wrapper with "
                f"num_question_types={t.shape[0]}."
            )
        if not rows:
            self.prior = t.detach().to(self.prior.device, self.prior.dtype).clone()
            self.config = cfg.replace(num_question_types=int(t.shape[0]))
        else:
            with torch.no_grad():
                self.prior.copy_(t.to(self.prior.device, self.prior.dtype))
        self.prior_is_set.fill_(True)

    def _batch_prior(self, batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
        """The prior rows of the batch's question types, ``(B, A)``."""
        name = type(self.config).__name__
        if not bool(self.prior_is_set):
            raise InterventionStateError(
                f"{name} has no question-type prior yet; compute it from the training data with "
                "question_type_prior(question_types, labels, num_types, num_answers) and install "
                "it with vl.set_bias_prior(prior) (or pass a small table as prior=...)."
            )
        qt = batch.get("question_type") if isinstance(batch, Mapping) else None
        if qt is None:
            raise InputError(
                f"{name} needs the batch key 'question_type' ((B,) long question-type ids that "
                f"index the prior rows); got keys {sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}."
            )
        qt = torch.as_tensor(qt)
        if qt.is_floating_point() or qt.dim() != 1 or qt.shape[0] != batch_size:
            raise InputError(
                f"batch['question_type'] must be ({batch_size},) integer ids, got dtype {qt.dtype} "
                f"and shape {tuple(qt.shape)}."
            )
        num = self.prior.shape[0]
        if qt.numel() and (int(qt.min()) < 0 or int(qt.max()) >= num):
            raise InputError(
                f"batch['question_type'] holds ids in [{int(qt.min())}, {int(qt.max())}] but the "
                f"prior has {num} question types."
            )
        return self.prior[qt.to(self.prior.device).long()]


def set_bias_prior(vl: Any, prior: torch.Tensor) -> None:
    """Install the question-type prior on every LMH / BiasProduct / GGE / Reweight intervention
    of ``vl`` (every intervention that :attr:`~causalvl.Intervention.uses_prior`).

    The same as ``vl.set_bias_prior(prior)``. The table becomes a buffer of the intervention,
    so ``vl.save_pretrained`` and :func:`causalvl.load` keep it.

    Args:
        vl: an :class:`~causalvl.IntervenedModel` (or one intervention).
        prior: ``(num_question_types, num_answers)`` in ``[0, 1]``, e.g. from
            :func:`question_type_prior`.

    Example:
        >>> import causalvl
        >>> vl = causalvl.intervene(causalvl.models.TinyVQA(vocab_size=9, num_answers=3),
        ...                         causalvl.LMHConfig())
        >>> set_bias_prior(vl, torch.tensor([[0.5, 0.5, 0.0]]))
        >>> vl.interventions["0_lmh"].prior.shape
        torch.Size([1, 3])
    """
    if isinstance(vl, Intervention):
        if not vl.uses_prior:
            raise ConfigError(
                f"set_bias_prior: {type(vl).__name__} uses no question-type prior; pass an "
                "LMH, BiasProduct, Reweight or GGE (bias='distribution' or 'both') intervention."
            )
        vl.set_prior(prior)
        return
    install = getattr(vl, "set_bias_prior", None)
    if not callable(install):
        raise ConfigError(
            f"set_bias_prior expects a wrapped model (causalvl.intervene) or an LMH / GGE "
            f"intervention, got {type(vl).__name__}."
        )
    install(prior)
