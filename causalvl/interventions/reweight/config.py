"""Config of reweighting by the answer prior (:class:`ReweightConfig`, ``"reweight"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...config import InterventionConfig
from ..checks import _check_prior_fields

__all__ = ["ReweightConfig"]


@dataclass(kw_only=True)
class ReweightConfig(InterventionConfig):
    """Weight each example's loss by its answer's prior within its question type.

    Training only; ``logits`` stay the base model's logits.

    Args:
        kind: ``"inverse_prior"`` (``1 / p_train(a | t)``: the backdoor adjustment over the
            question type), ``"lmh_ce"`` (``1 - p_train(a | t)``, cross-entropy) or
            ``"lmh_bce"`` (per-answer BCE weighted by ``1 - b``), each divided by the weight sum.
        min_prior: smallest prior probability in ``"inverse_prior"`` (largest weight
            ``1 / min_prior``).
        num_question_types, num_answers, prior: the prior table, as in
            :class:`~causalvl.LMHConfig` (install it with
            :meth:`vl.set_bias_prior <causalvl.IntervenedModel.set_bias_prior>`).

    The batch passed to ``objective`` needs ``labels`` and ``question_type`` ``(B,)`` long.

    Example:
        >>> ReweightConfig(kind="lmh_ce", prior=[[0.9, 0.1]]).num_types()
        1
    """

    type = "reweight"
    kind: Literal["inverse_prior", "lmh_ce", "lmh_bce"] = "inverse_prior"
    min_prior: float = 1e-3
    num_question_types: int | None = None
    num_answers: int | None = None
    prior: tuple[tuple[float, ...], ...] | None = None

    def validate(self) -> None:
        if not (isinstance(self.min_prior, (int, float)) and 0 < self.min_prior <= 1):
            self._fail("min_prior", "must be a number in (0, 1], e.g. 1e-3")
        _check_prior_fields(self)

    def num_types(self) -> int | None:
        """Rows of the prior table, if known from the config."""
        if self.prior is not None:
            return len(self.prior)
        return self.num_question_types
