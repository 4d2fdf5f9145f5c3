"""Config of RUBi (:class:`RUBiConfig`, ``"rubi"``).

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config import InterventionConfig
from ..checks import _check_hidden, _check_optional_int, _check_role

__all__ = ["RUBiConfig"]


@dataclass(kw_only=True)
class RUBiConfig(InterventionConfig):
    """RUBi: reduce unimodal biases with a question-only mask during training.

    ``logits_rubi = Z_k ⊙ σ(Z_q)``, ``logits_q = Linear_{A→A}(Z_q)`` and

    ``L = CE(logits_rubi, a) + λ_q · CE(logits_q, a)``.

    ``Z_k`` (the base model) gets gradient only through the first term; the question MLP from
    both; the ``A→A`` classifier from the second only; the question encoder from neither.

    Args:
        num_answers: answer count ``A`` (default: read from the model); unused for contrastive
            models, where the branch scores each candidate text from its own feature and has no
            ``A→A`` classifier (``logits_q = Z_q``).
        question_role: role (or module path) of the question feature.
        feature_dim: width of that feature (default: inferred). Formerly
            ``question_feature_dim`` (accepted with a ``FutureWarning`` for one release).
        hidden_sizes: hidden widths of the question MLP (published: ``(1024, 1024)``).
            Formerly ``hidden`` (accepted with a ``FutureWarning`` for one release).
        question_loss_weight: ``λ_q`` (published: 1.0).
        branch_warmup_epochs: train only the question branch (``"question_ce"``, on the
            stop-gradient feature) for this many first epochs, so that it holds the prior
            before the base model learns; 0 (published) trains both from the start. See
            :class:`~causalvl.interventions.branches.BranchWarmup`.

    Output: ``logits`` = ``factual_logits`` (inference uses the base model);
    ``branch_logits`` = ``{"question": Z_q, "question_head": logits_q, "fused": logits_rubi}``.
    Labels: class ids ``(B,)`` or VQA soft scores ``(B, A)`` (soft-target CE).

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.RUBiConfig(hidden_sizes=(32,)))
        >>> batch = {"pixel_values": torch.rand(2, 3, 8, 8),
        ...          "input_ids": torch.randint(1, 20, (2, 5)), "labels": torch.tensor([0, 3])}
        >>> out = vl(**batch)
        >>> sorted(vl.objective(out, batch).parts)
        ['question_ce', 'rubi_ce']
        >>> torch.equal(out.logits, out.factual_logits)
        True
    """

    type = "rubi"
    _renamed = {"hidden": "hidden_sizes", "question_feature_dim": "feature_dim"}
    num_answers: int | None = None
    question_role: str = "language_features"
    feature_dim: int | None = None
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    question_loss_weight: float = 1.0
    branch_warmup_epochs: int = 0

    def validate(self) -> None:
        self._check_int("branch_warmup_epochs", minimum=0)
        _check_optional_int(self, "num_answers", "feature_dim")
        _check_role(self, "question_role")
        _check_hidden(self)
        self._check_positive("question_loss_weight", allow_zero=True)
