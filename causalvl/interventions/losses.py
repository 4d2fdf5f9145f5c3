"""The pure loss functions of the training-time interventions, on plain tensors.

One home for the maths that the intervention modules run through :func:`causalvl.intervene`
(they import it from here; the former paths ``causalvl.interventions.ensembles``,
``.reweight`` and ``.group_dro`` re-export every name):

* the question-type prior: :func:`question_type_prior`, :func:`prior_log_probs`;
* LMH / BiasProduct: :func:`lmh_bce_loss`, :func:`lmh_softmax_loss`, :func:`bias_product_loss`;
* GGE: :func:`gge_pseudo_label`, :func:`greedy_gradient_loss`,
  :func:`greedy_gradient_softmax_ce_loss`, :func:`gge_decompose_loss`,
  :func:`gge_schedule_weight`;
* reweighting by the prior: :func:`reweight_loss`;
* Group DRO: :func:`group_mean_losses`, :func:`group_dro_update`.

Formulas and their sources are in ``docs/ensembles.md`` and the modules of each method.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError

# the names of the GGE loss forms are defined with its config (pure Python)
from .gge.config import GGELoss, PseudoLabel  # noqa: F401

logger = logging.getLogger(__name__)

__all__ = [
    "GGE_SCHEDULE_OFFSET",
    "bias_product_loss",
    "gge_decompose_loss",
    "gge_pseudo_label",
    "gge_schedule_weight",
    "greedy_gradient_loss",
    "greedy_gradient_softmax_ce_loss",
    "group_dro_update",
    "group_mean_losses",
    "lmh_bce_loss",
    "lmh_softmax_loss",
    "prior_log_probs",
    "question_type_prior",
    "reweight_loss",
]


# ----------------------------------------------------------------------------------------
# the prior
# ----------------------------------------------------------------------------------------
def question_type_prior(
    question_types: torch.Tensor,
    labels: torch.Tensor,
    num_types: int,
    num_answers: int,
) -> torch.Tensor:
    """The per-question-type answer prior of the training data (LMH / GGE "distribution bias").

    ``b[t, a] = (1 / N_t) * sum over training examples i of type t of score_i[a]``, where
    ``N_t`` counts every example of type ``t`` (also those whose scores are all zero). Rows are
    **not** renormalised: with VQA soft scores they need not sum to 1. A type with no example
    gets a row of zeros (and a warning-level log message).

    Args:
        question_types: ``(N,)`` integer type ids in ``[0, num_types)``.
        labels: ``(N,)`` integer answer ids (counted as one-hot scores) or ``(N, num_answers)``
            float soft scores in ``[0, 1]``.
        num_types: number of question types (rows).
        num_answers: number of answers (columns).

    Returns:
        ``(num_types, num_answers)`` float32 tensor on the device of ``labels``.

    Example:
        >>> question_type_prior(torch.tensor([0, 0, 1]), torch.tensor([2, 0, 1]), 2, 3)
        tensor([[0.5000, 0.0000, 0.5000],
                [0.0000, 1.0000, 0.0000]])
    """
    for name, value in (("num_types", num_types), ("num_answers", num_answers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"question_type_prior: {name} = {value!r}; pass an integer >= 1.")
    qt = torch.as_tensor(question_types)
    if qt.dim() != 1 or qt.is_floating_point() or qt.is_complex() or qt.dtype == torch.bool:
        raise InputError(
            f"question_type_prior: question_types must be a (N,) integer tensor, got dtype "
            f"{qt.dtype} and shape {tuple(qt.shape)}."
        )
    scores = _as_scores(labels, num_answers, qt.shape[0], where="question_type_prior")
    qt = qt.to(scores.device).long()
    if qt.numel() and (int(qt.min()) < 0 or int(qt.max()) >= num_types):
        raise InputError(
            f"question_type_prior: question type ids span [{int(qt.min())}, {int(qt.max())}] but "
            f"num_types = {num_types}; ids must lie in [0, {num_types - 1}]."
        )
    sums = torch.zeros(num_types, num_answers, dtype=torch.float64, device=scores.device)
    sums.index_add_(0, qt, scores.double())
    counts = torch.bincount(qt, minlength=num_types).to(sums)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        logger.warning("question_type_prior: question types %s have no example; zero rows", empty)
    return (sums / counts.clamp_min(1).unsqueeze(1)).float()


def prior_log_probs(prior: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Log-probabilities of a prior table, for the softmax form of LMH.

    Each row is divided by its sum (the prior of :func:`question_type_prior` is not
    normalised), clamped from below at ``floor`` (so answers never seen with a type get
    ``log(floor)`` instead of ``-inf``) and logged. A row that sums to zero becomes uniform.
    Renormalising does not change the loss (``g * log b`` shifts by a per-example constant,
    which the softmax ignores); the floor does.

    Args:
        prior: ``(..., num_answers)`` non-negative.
        floor: smallest probability, in ``(0, 1)``.

    Returns:
        ``(..., num_answers)`` log-probabilities, same dtype as ``prior``.

    Example:
        >>> prior_log_probs(torch.tensor([[0.5, 0.5, 0.0]]), floor=1e-4).exp()
        tensor([[5.0000e-01, 5.0000e-01, 1.0000e-04]])
    """
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ConfigError(f"prior_log_probs: floor = {floor!r}; pass a number in (0, 1).")
    total = prior.sum(-1, keepdim=True)
    uniform = torch.full_like(prior, 1.0 / prior.shape[-1])
    probs = torch.where(total > 0, prior / total.clamp_min(1e-30), uniform)
    return probs.clamp_min(floor).log()


# ----------------------------------------------------------------------------------------
# pure loss functions
# ----------------------------------------------------------------------------------------
def _as_scores(labels: Any, num_answers: int, batch: int, *, where: str) -> torch.Tensor:
    """Class ids ``(B,)`` -> one-hot ``(B, A)`` float; soft scores ``(B, A)`` pass through."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        if labels.shape != (batch, num_answers):
            raise InputError(
                f"{where}: soft-score labels have shape {tuple(labels.shape)}, expected "
                f"({batch}, {num_answers}) (batch, num_answers)."
            )
        return labels
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise InputError(
            f"{where}: class-id labels have shape {tuple(labels.shape)}, expected ({batch},); "
            "pass class ids (B,) or soft scores (B, num_answers)."
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_answers):
        raise InputError(
            f"{where}: class ids span [{int(labels.min())}, {int(labels.max())}], outside "
            f"[0, {num_answers - 1}] (num_answers = {num_answers})."
        )
    return F.one_hot(labels.long(), num_answers).float()


def _gate_column(gate: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    g = torch.as_tensor(gate, dtype=like.dtype, device=like.device)
    if g.dim() == 0:
        return g.expand(like.shape[0], 1)
    return g.reshape(like.shape[0], 1)


def lmh_bce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor,
    gate: torch.Tensor | float,
    *,
    smoothing: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned-Mixin for per-answer sigmoid (VQA) models: the binary mixture NLL and entropy.

    With ``l1 = log sigma(f) + g log(b + smoothing)`` and ``l0 = log sigma(-f) + g log(1 - b +
    smoothing)``, renormalised so that ``exp(l1) + exp(l0) = 1``:

    * ``nll = mean_batch sum_answers -(y l1 + (1 - y) l0)``
    * ``entropy = mean_{batch, answers} H(softmax([g log(b + smoothing), g log(1 - b +
      smoothing)]))``

    The LMH loss is ``nll + w * entropy``; ``gate = 1`` and no entropy term is the BiasProduct
    (:func:`bias_product_loss`).

    Args:
        logits: ``(B, A)`` main-model logits ``f``.
        labels: ``(B,)`` class ids or ``(B, A)`` soft scores ``y``.
        bias: ``(B, A)`` per-example prior ``b`` in ``[0, 1]`` (the prior row of its type).
        gate: ``(B,)`` / ``(B, 1)`` values of ``g(x) >= 0``, or a number.
        smoothing: added to both bias entries (``sigma(s)`` plus any constant).

    Returns:
        ``(nll, entropy)`` scalars.

    Example:
        >>> f, b = torch.zeros(2, 3), torch.full((2, 3), 0.5)
        >>> nll, ent = lmh_bce_loss(f, torch.tensor([0, 1]), b, 1.0)
        >>> round(float(nll), 4), round(float(ent), 4)   # 3 * log 2, log 2
        (2.0794, 0.6931)
    """
    f = logits.float()
    y = _as_scores(labels, f.shape[-1], f.shape[0], where="lmh_bce_loss").to(f)
    b = bias.to(f)
    g = _gate_column(gate, f).to(f).unsqueeze(-1)  # (B, 1, 1)
    pair = torch.stack([b, 1 - b], dim=2) + torch.as_tensor(smoothing, dtype=f.dtype).to(f.device)
    scaled = pair.log() * g  # (B, A, 2)
    log_p = torch.stack([F.logsigmoid(f), F.logsigmoid(-f)], dim=2)
    mixed = log_p + scaled
    mixed = mixed - torch.logsumexp(mixed, dim=2, keepdim=True)
    nll = -(y * mixed[..., 0] + (1 - y) * mixed[..., 1]).sum(1).mean(0)
    bias_lp = scaled - torch.logsumexp(scaled, dim=2, keepdim=True)
    entropy = -(bias_lp.exp() * bias_lp).sum(2).mean()
    return nll, entropy


def bias_product_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor,
    *,
    smoothing: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """BiasProduct (product of experts with the prior, no learned gate), per-answer sigmoid form.

    ``log p(1) = log sigma(f) + log(b + smoothing)``, ``log p(0) = log sigma(-f) + log1p(-b +
    smoothing)``, renormalised per answer; returns the binary NLL summed over answers and
    averaged over the batch. Equals :func:`lmh_bce_loss` with ``gate = 1`` (its ``nll``).

    Args:
        logits: ``(B, A)``. labels: ``(B,)`` class ids or ``(B, A)`` soft scores.
        bias: ``(B, A)`` prior rows in ``[0, 1]``. smoothing: added to the bias.

    Returns:
        The scalar loss.

    Example:
        >>> round(float(bias_product_loss(torch.zeros(1, 2), torch.tensor([0]),
        ...                               torch.full((1, 2), 0.5))), 4)
        1.3863
    """
    f = logits.float()
    y = _as_scores(labels, f.shape[-1], f.shape[0], where="bias_product_loss").to(f)
    b = bias.to(f)
    smooth = torch.as_tensor(smoothing, dtype=f.dtype).to(f.device)
    log_prob = F.logsigmoid(f) + torch.log(b + smooth)
    log_not = F.logsigmoid(-f) + torch.log1p(-b + smooth)
    norm = torch.logaddexp(log_prob, log_not)
    log_prob, log_not = log_prob - norm, log_not - norm
    return -(log_prob * y + (1 - y) * log_not).sum(1).mean(0)


def lmh_softmax_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    log_bias: torch.Tensor,
    gate: torch.Tensor | float,
    support: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned-Mixin for softmax classifiers: ``CE(log_softmax(f) + g log b, a)`` and the mean
    entropy of ``softmax(g log b)``.

    Args:
        logits: ``(B, A)`` main-model logits ``f``.
        labels: ``(B,)`` class ids, or ``(B, A)`` soft scores (then the cross-entropy is
            ``-sum_a y_a log p_a``, averaged over the batch).
        log_bias: ``(B, A)`` bias log-probabilities ``log b`` (:func:`prior_log_probs`).
        gate: ``(B,)`` / ``(B, 1)`` values of ``g(x)``, or a number.
        support: optional ``(B, A)`` bool, the answers the prior speaks for (its question
            type's answers). Off the support the bias term is 0, so the main model alone has
            to learn that those answers are wrong (with a floored ``log b`` there, ``g log b``
            would explain them away and ``f`` would never learn it); the entropy is taken over
            the support.

    Returns:
        ``(nll, entropy)`` scalars; the LMH loss is ``nll + w * entropy``.

    Example:
        >>> nll, ent = lmh_softmax_loss(torch.zeros(1, 4), torch.tensor([2]),
        ...                             torch.full((1, 4), -math.log(4)), 1.0)
        >>> round(float(nll), 4), round(float(ent), 4)   # log 4, log 4
        (1.3863, 1.3863)
    """
    f = logits.float()
    g = _gate_column(gate, f).to(f)
    scaled = g * log_bias.to(f)
    if support is not None:
        support = support.to(device=f.device, dtype=torch.bool)
        support = support | ~support.any(-1, keepdim=True)  # a row with no support: all
        scaled = scaled.masked_fill(~support, 0.0)
    mixed = F.log_softmax(f, dim=-1) + scaled
    if labels.is_floating_point():
        y = _as_scores(labels, f.shape[-1], f.shape[0], where="lmh_softmax_loss").to(f)
        nll = -(y * F.log_softmax(mixed, dim=-1)).sum(-1).mean()
    else:
        _as_scores(labels, f.shape[-1], f.shape[0], where="lmh_softmax_loss")
        nll = F.cross_entropy(mixed, labels.long().to(f.device))
    if support is None:
        bias_lp = F.log_softmax(scaled, dim=-1)
        entropy = -(bias_lp.exp() * bias_lp).sum(-1).mean()
    else:  # the entropy of the prior over its support (finite values keep the gradient finite)
        bias_lp = F.log_softmax(scaled.masked_fill(~support, -1e9), dim=-1)
        bias_lp = torch.where(support, bias_lp, torch.zeros_like(bias_lp))
        entropy = -(bias_lp.exp() * bias_lp).masked_fill(~support, 0.0).sum(-1).mean()
    return nll, entropy


#: epochs added to both ``e`` and ``E`` in the official GGE weight schedule
GGE_SCHEDULE_OFFSET = 30


def gge_pseudo_label(
    labels: torch.Tensor, reference: torch.Tensor, form: PseudoLabel = "published"
) -> torch.Tensor:
    """GGE's pseudo label: what is left of the target after the bias ``reference`` explains it.

    * ``"published"``: ``2 y sigma(-2 y r)`` (the official code);
    * ``"corrected"``: ``clamp(y - sigma(r), 0, 1)``, the exact negative gradient of
      sigmoid + BCE with respect to the logit ``r``;
    * ``"softmax"``: ``clamp(y - r, 0, 1)`` with ``r`` already a probability (the bias
      model's softmax, plus the prior): the pseudo label of the official
      ``GreedyGradient_softmaxCE``. ``r`` is used as given (no sigmoid).

    Gradients flow into ``reference`` (the published code does not detach it).

    Args:
        labels: ``(B, A)`` soft scores (or one-hot) ``y``.
        reference: ``(B, A)`` the bias prediction ``r``.
        form: ``"published"``, ``"corrected"`` or ``"softmax"``.

    Returns:
        ``(B, A)`` pseudo labels in ``[0, 1]``.

    Example:
        >>> gge_pseudo_label(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
        tensor([[1., 0.]])
    """
    y = labels.to(reference.dtype) if labels.is_floating_point() else labels.float()
    if form == "published":
        return 2 * y * torch.sigmoid(-2 * y * reference)
    if form == "corrected":
        return torch.clamp(y - torch.sigmoid(reference), 0.0, 1.0)
    if form == "softmax":
        return torch.clamp(y - reference, 0.0, 1.0)
    raise ConfigError(
        f"gge_pseudo_label: form = {form!r}; choose 'published', 'corrected' or 'softmax'."
    )


def greedy_gradient_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reference: torch.Tensor,
    form: PseudoLabel = "published",
) -> torch.Tensor:
    """``A * BCE(logits, gge_pseudo_label(y, reference))``: BCE summed over answers, averaged over
    the batch.

    Args:
        logits: ``(B, A)`` logits being trained. labels: ``(B, A)`` scores ``y``.
        reference: ``(B, A)`` the bias prediction. form: see :func:`gge_pseudo_label`.

    Example:
        >>> round(float(greedy_gradient_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]),
        ...                                  torch.zeros(1, 2))), 4)   # 2 * log 2
        1.3863
    """
    f = logits.float()
    target = gge_pseudo_label(labels.to(f.device), reference.float(), form)
    return F.binary_cross_entropy_with_logits(f, target.to(f)) * f.shape[-1]


def greedy_gradient_softmax_ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """GGE's softmax cross-entropy form (official ``GreedyGradient_softmaxCE``):
    ``mean_i -sum_a clamp(y - r, 0, 1)_ia * log_softmax(f_i)_a``.

    The pseudo label ``clamp(y - r, 0, 1)`` is detached, as in the official code, so no
    gradient reaches the bias model through this loss.

    Args:
        logits: ``(B, A)`` logits ``f`` being trained.
        labels: ``(B,)`` class ids or ``(B, A)`` scores ``y``.
        reference: ``(B, A)`` bias probabilities ``r`` (e.g. ``softmax(q_out) + b``).

    Returns:
        The scalar loss.

    Example:
        >>> f = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
        >>> y, r = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.0]])
        >>> round(float(greedy_gradient_softmax_ce_loss(f, y, r)), 4)   # 0.5 * log 2
        0.3466
    """
    f = logits.float()
    y = _as_scores(labels, f.shape[-1], f.shape[0], where="greedy_gradient_softmax_ce_loss")
    if reference.shape != f.shape:
        raise InputError(
            f"greedy_gradient_softmax_ce_loss: reference {tuple(reference.shape)} must match the "
            f"logits {tuple(f.shape)} (batch, num_answers)."
        )
    target = gge_pseudo_label(y.to(f), reference.float().to(f.device), "softmax").detach()
    return -(target * F.log_softmax(f, dim=-1)).sum(-1).mean()


def gge_decompose_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reference: torch.Tensor,
    weight: float | torch.Tensor,
) -> torch.Tensor:
    """GGE's "Decompose" loss (official ``base_model_sfce.py``): the softmax cross-entropy on
    the labels minus ``w`` times the cross-entropy on the part of the labels the bias explains.

    ``L = A * [mean(-y log softmax f) - w * mean(-r log softmax f)]`` with
    ``r = clamp(reference, 0, 1) * y`` and the means over all ``B x A`` entries, i.e.
    ``(1/B) sum_i sum_a -(y - w r)_ia log softmax(f_i)_a``. Gradients flow into ``reference``
    unless the caller detaches it (:class:`GGEConfig` detaches by default).

    Args:
        logits: ``(B, A)`` logits ``f``.
        labels: ``(B,)`` class ids or ``(B, A)`` scores ``y``.
        reference: ``(B, A)`` bias probabilities (official: ``softmax(q_out) + b``).
        weight: ``w`` (official: :func:`gge_schedule_weight` of the epoch).

    Returns:
        The scalar loss.

    Example:
        >>> f = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> y, r = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
        >>> round(float(gge_decompose_loss(f, y, r, 1.0)), 4)   # (1 - 0.5) * log 2
        0.3466
    """
    f = logits.float()
    y = _as_scores(labels, f.shape[-1], f.shape[0], where="gge_decompose_loss").to(f)
    if reference.shape != f.shape:
        raise InputError(
            f"gge_decompose_loss: reference {tuple(reference.shape)} must match the logits "
            f"{tuple(f.shape)} (batch, num_answers)."
        )
    r = torch.clamp(reference.float().to(f.device), 0.0, 1.0) * y
    log_p = F.log_softmax(f, dim=-1)
    num = f.shape[-1]
    return num * ((-y * log_p).mean() - weight * (-r * log_p).mean())


def gge_schedule_weight(epoch: int, num_epochs: int) -> float:
    """The official GGE weight schedule ``sin(pi/2 * (e + 30) / (E + 30))`` for 0-based epoch
    ``e`` of ``E``: it rises from ``sin(pi/2 * 30 / (E + 30))`` (0.756 at ``E = 25``) towards 1.

    Example:
        >>> round(gge_schedule_weight(0, 25), 4), round(gge_schedule_weight(24, 25), 4)
        (0.7557, 0.9996)
    """
    for name, value, low in (("epoch", epoch, 0), ("num_epochs", num_epochs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"gge_schedule_weight: {name} = {value!r}; pass an integer >= {low}.")
    off = GGE_SCHEDULE_OFFSET
    return math.sin(math.pi / 2 * (epoch + off) / (num_epochs + off))


# ----------------------------------------------------------------------------------------
# reweighting by the prior
# ----------------------------------------------------------------------------------------
def reweight_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor,
    kind: Literal["inverse_prior", "lmh_ce", "lmh_bce"] = "inverse_prior",
    *,
    min_prior: float = 1e-3,
) -> torch.Tensor:
    """The reweighted task loss (see the module docstring for the three forms).

    Args:
        logits: ``(B, A)`` answer logits.
        labels: ``(B,)`` class ids (``"lmh_bce"`` also takes ``(B, A)`` soft scores).
        bias: ``(B, A)`` prior rows ``b`` of the examples' question types, in ``[0, 1]``.
        kind: ``"inverse_prior"``, ``"lmh_ce"`` or ``"lmh_bce"``.
        min_prior: ``"inverse_prior"`` clamps ``b[a]`` from below (an answer never seen with its
            type in training would get an infinite weight); the largest weight is ``1 /
            min_prior``.

    Returns:
        A scalar loss.

    Example:
        >>> f = torch.zeros(2, 2)
        >>> b = torch.tensor([[0.8, 0.2], [0.8, 0.2]])
        >>> round(float(reweight_loss(f, torch.tensor([0, 1]), b)), 4)  # log 2
        0.6931
    """
    f = logits.float()
    b = bias.to(f)
    if kind == "lmh_bce":
        y = _as_scores(labels, f.shape[-1], f.shape[0], where="reweight_loss").to(f)
        w = 1.0 - b
        per = F.binary_cross_entropy_with_logits(f, y, reduction="none")
        return (w * per).sum() / w.sum().clamp_min(1e-12)
    if labels.is_floating_point():
        raise InputError(
            f"ReweightConfig(kind={kind!r}) needs class-id labels (B,); got soft scores "
            f"{tuple(labels.shape)}. Use kind='lmh_bce' for VQA soft scores."
        )
    _as_scores(labels, f.shape[-1], f.shape[0], where="reweight_loss")
    labels = labels.long().to(f.device)
    p = b.gather(1, labels[:, None]).squeeze(1)
    w = 1.0 / p.clamp_min(min_prior) if kind == "inverse_prior" else 1.0 - p
    ce = F.cross_entropy(f, labels, reduction="none")
    return (w * ce).sum() / w.sum().clamp_min(1e-12)


# ----------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------
def group_mean_losses(
    losses: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean losses of one batch.

    Args:
        losses: ``(B,)`` per-example losses.
        groups: ``(B,)`` integer group ids in ``[0, num_groups)``.
        num_groups: ``G``.

    Returns:
        ``(group_loss, counts)``, both ``(G,)``: ``group_loss[g] = sum_{i in g} l_i /
        max(counts[g], 1)`` (0 for a group absent from the batch; differentiable), and the
        number of examples of each group in the batch (float).

    Example:
        >>> group_mean_losses(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]), 3)
        (tensor([2., 0., 5.]), tensor([2., 0., 1.]))
    """
    groups = groups.to(losses.device).long()
    counts = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device)
    counts = counts.index_add(0, groups, torch.ones_like(losses))
    sums = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device)
    sums = sums.index_add(0, groups, losses)
    return sums / counts.clamp_min(1), counts


def group_dro_update(
    q: torch.Tensor,
    group_loss: torch.Tensor,
    present: torch.Tensor,
    eta: float,
    *,
    adjustment: torch.Tensor | None = None,
    normalize_loss: bool = False,
) -> torch.Tensor:
    """One online update of the group weights (exponentiated gradient ascent).

    ``a = group_loss + adjustment`` (``adjustment = C_g / sqrt(n_g)``, or none), divided by
    ``sum(a)`` when ``normalize_loss``; then ``q_g <- q_g * exp(eta * a_g)`` for the groups
    with ``present[g]`` (the others keep their weight) and ``q <- q / sum(q)``.

    Args:
        q: ``(G,)`` current weights (a probability vector).
        group_loss: ``(G,)`` group mean losses of the batch (detached inside).
        present: ``(G,)`` bool, groups with at least one example in the batch.
        eta: step size ``>= 0``.
        adjustment: ``(G,)`` added to the losses before the update.
        normalize_loss: divide the adjusted losses by their sum (official ``--normalize_loss``).

    Returns:
        The new ``(G,)`` weights (a new tensor; ``q`` is not modified).

    Example:
        >>> q = group_dro_update(torch.full((2,), 0.5), torch.tensor([1.0, 0.0]),
        ...                      torch.tensor([True, True]), eta=math.log(3))
        >>> q   # 0.5 * 3 : 0.5 * 1, normalised
        tensor([0.7500, 0.2500])
    """
    a = group_loss.detach().to(q.dtype)
    if adjustment is not None:
        a = a + adjustment.to(a)
    if normalize_loss:
        total = a[present].sum() if bool(present.any()) else a.sum()
        a = a / total.clamp_min(torch.finfo(a.dtype).tiny)
    factor = torch.where(present.to(a.device), torch.exp(eta * a), torch.ones_like(a))
    new = q * factor
    return new / new.sum()
