"""Counterfactual inference against language priors.

* :class:`CounterfactualConfig` (``"cfvqa"``) -- CF-VQA (Niu et al., CVPR 2021): question-only
  and vision-only branch heads on the model's own features, a fusion with the base logits, and
  the prediction by the total *indirect* effect ``TIE = Z_{q,v,k} − Z_{q,v*,k*}`` (what is left
  of the answer once the question's direct effect is taken out).
* :class:`PriorSubtractionConfig` (``"prior_subtraction"``) -- the model-agnostic version for
  models without a separable question branch (ViLT, CLIP, any ``nn.Module``): run the model
  again with the image removed and subtract that prediction,
  ``(1 + α)·factual − α·counterfactual``.

Both are used through :func:`causalvl.intervene`; formulas are in ``docs/concepts.md``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters.base import ModelAdapter
from ..config import InterventionConfig
from ..errors import ConfigError, InputError, InterventionStateError, NoMatchingModuleError
from ..losses import answer_cross_entropy
from ..outputs import InterventionOutput
from ..runtime import module_dtype_device
from .base import ForwardState, Intervention, implements
from .branches import (
    BranchMLP,
    BranchWarmup,
    infer_feature_dim,
    infer_num_answers,
    refuse_generative,
    stop_gradient_into,
)
from .fusion import effects, fuse
from .seeding import init_rng

logger = logging.getLogger(__name__)


def _check_hidden(cfg: Any, name: str = "hidden_sizes") -> None:
    value = getattr(cfg, name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        cfg._fail(name, "must be a list of hidden-layer widths, e.g. (1024, 1024) or ()")
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value):
        cfg._fail(name, "every hidden width must be an integer >= 1")
    cfg._normalise(name, tuple(value))


def _check_role(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, str) or not value:
            cfg._fail(name, "must be a role name or module path, e.g. 'language_features'")


def _check_optional_int(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) is not None:
            cfg._check_int(name, minimum=1)


class AnswerBranch(nn.Module):
    """A branch head reading one role feature (``stop_gradient_into`` it) and scoring answers.

    Classifier models: ``BranchMLP(dim -> A)`` gives the branch scores ``z`` ``(B, A)`` and an
    output head ``Linear(A, A)`` gives the branch's own prediction (``logits_q`` / ``logits_v``
    of the published code).

    Contrastive models (answers = candidate texts): the MLP scores each candidate from its own
    feature, ``z[i, t] = mlp(feature[t])``, broadcast over the ``num_images`` rows; there is no
    fixed answer set, so there is no output head and the prediction is ``z`` itself.

    Args:
        in_dim: width of the pooled role feature.
        num_answers: ``A`` for classifiers; ``None`` for contrastive models.
        hidden: hidden widths of the MLP.
    """

    def __init__(self, in_dim: int, num_answers: int | None, hidden: Sequence[int]) -> None:
        super().__init__()
        self.contrastive = num_answers is None
        self.mlp = BranchMLP(in_dim, 1 if num_answers is None else num_answers, hidden)
        self.head = None if num_answers is None else nn.Linear(num_answers, num_answers)

    def scores(self, feature: torch.Tensor, like: torch.Tensor, role: str) -> torch.Tensor:
        """Branch scores shaped like the base logits ``like``."""
        weight = self.mlp.net[0].weight
        x = stop_gradient_into(feature).to(weight.dtype)
        if x.dim() != 2:
            raise InputError(
                f"role {role!r} gave a feature of shape {tuple(feature.shape)}; the branch needs "
                "one vector per example (batch, dim). Point the role at a module whose output "
                "pools to (batch, dim)."
            )
        if x.shape[-1] != weight.shape[1]:
            raise InputError(
                f"role {role!r} gives features of width {x.shape[-1]}, the branch expects "
                f"{weight.shape[1]}; set the config's feature dimension to {x.shape[-1]}."
            )
        z = self.mlp(x)
        if self.contrastive:
            if z.shape[0] != like.shape[-1]:
                raise InputError(
                    f"role {role!r} gave {z.shape[0]} candidate features for {like.shape[-1]} "
                    "candidate texts; the role must be the per-text feature."
                )
            return z[:, 0].unsqueeze(0).expand(like.shape[0], -1).to(like.dtype)
        if z.shape[0] != like.shape[0]:
            raise InputError(
                f"role {role!r} gave {z.shape[0]} feature rows for a batch of {like.shape[0]}."
            )
        if z.shape[-1] != like.shape[-1]:
            raise InputError(
                f"the model gives {like.shape[-1]} answer logits but the branch was built for "
                f"{z.shape[-1]}; set num_answers={like.shape[-1]} in the config."
            )
        return z.to(like.dtype)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """The branch's own answer prediction (the output head, or ``z`` when there is none)."""
        if self.head is None:
            return z
        return self.head(z.to(self.head.weight.dtype)).to(z.dtype)


def build_branch(
    model: nn.Module,
    adapter: ModelAdapter,
    role: str,
    feature_dim: int | None,
    num_answers: int | None,
    hidden: Sequence[int],
) -> AnswerBranch:
    """An :class:`AnswerBranch` sized from the model (answers ignored for contrastive models)."""
    dim = feature_dim if feature_dim is not None else infer_feature_dim(model, adapter, role)
    if adapter.kind == "contrastive":
        answers = None
    else:
        answers = num_answers if num_answers is not None else infer_num_answers(model, adapter)
    return AnswerBranch(dim, answers, hidden)


# ---------------------------------------------------------------------------------------
# CF-VQA
# ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CounterfactualConfig(InterventionConfig):
    """CF-VQA: predict by the total indirect effect of the question (Niu et al., CVPR 2021).

    Adds a question-only branch on the captured question feature and, in the complete graph, a
    vision-only branch on the captured vision feature (both read their feature through
    :func:`~causalvl.interventions.branches.stop_gradient_into`, so the encoders get no
    gradient from them), an output head ``Linear(A, A)`` per branch, and one learned scalar
    ``c`` that stands in for every blocked branch. Training minimises

    ``L = CE(h(Z_k, Z_q, Z_v), a) + λ_q CE(logits_q, a) + λ_v CE(logits_v, a) + λ_kl L_kl``

    with ``L_kl = mean_b Σ_a −softmax(h(Z_k,Z_q,Z_v))_a · log softmax(h(c, Z_q, c))_a``, both
    distributions computed from detached branch scores so that only ``c`` learns from it. The
    logged ``"kl"`` is this cross-entropy form (the KL plus the entropy of the detached target),
    as in the published code; its gradient equals the KL's. Inference predicts by
    ``TIE = h(Z_k, Z_q, Z_v) − h(c, Z_q, c)``.

    Args:
        fusion: ``"harmonic"`` (default), ``"sum"`` or ``"rubi"`` (see
            :func:`~causalvl.interventions.fusion.fuse`).
        graph: ``"complete"`` (Q->A, V->A and K->A) or ``"simple"`` (no V->A branch).
            ``fusion="rubi"`` has no vision slot and needs ``graph="simple"``; contrastive models
            (CLIP, SigLIP) have no answer space an image alone could score, so they need
            ``graph="simple"`` too (a :class:`~causalvl.ConfigError` says so).
        inference: what ``output.logits`` holds, in training and evaluation alike: ``"tie"``
            (the CF-VQA answer), ``"te"`` (the fused TE, i.e. the plain ensemble) or
            ``"factual"`` (the base logits).
        num_answers: answer count ``A`` (default: read from the model); unused for contrastive
            models, whose branch scores each candidate text from its own feature.
        question_role / vision_role: roles (or module paths) of the question and image features.
        question_feature_dim / vision_feature_dim: widths of those features (default: inferred).
        hidden_sizes: hidden widths of the branch MLPs; the published heads use
            ``(1024, 1024)``. Formerly ``hidden`` (accepted with a ``FutureWarning`` for one
            release).
        question_loss_weight / vision_loss_weight / kl_weight: ``λ_q``, ``λ_v``, ``λ_kl``.
        c_init: initial value of ``c`` (published: 0.0).
        branch_warmup_epochs: train only the branch heads (``"question_ce"`` /
            ``"vision_ce"``, on stop-gradient features) for this many first epochs, so the
            question branch holds the prior before the base model learns; 0 (published) trains
            everything from the start. See
            :class:`~causalvl.interventions.branches.BranchWarmup`.

    Labels: class ids ``(B,)`` use softmax CE; VQA soft scores ``(B, A)`` use the soft-target
    CE of :func:`~causalvl.interventions.fusion.answer_cross_entropy`.

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.CounterfactualConfig(hidden_sizes=(32,)))
        >>> batch = {"pixel_values": torch.rand(2, 3, 8, 8),
        ...          "input_ids": torch.randint(1, 20, (2, 5)), "labels": torch.tensor([0, 3])}
        >>> out = vl(**batch)
        >>> sorted(vl.objective(out, batch).parts)
        ['fused_ce', 'kl', 'question_ce', 'vision_ce']
        >>> torch.allclose(out.logits, out.effects["tie"])
        True
    """

    type = "cfvqa"
    _renamed = {"hidden": "hidden_sizes"}
    fusion: Literal["rubi", "harmonic", "sum"] = "harmonic"
    graph: Literal["complete", "simple"] = "complete"
    inference: Literal["tie", "te", "factual"] = "tie"
    num_answers: int | None = None
    question_role: str = "language_features"
    vision_role: str = "vision_features"
    question_feature_dim: int | None = None
    vision_feature_dim: int | None = None
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    question_loss_weight: float = 1.0
    vision_loss_weight: float = 1.0
    kl_weight: float = 1.0
    c_init: float = 0.0
    branch_warmup_epochs: int = 0

    def validate(self) -> None:
        self._check_int("branch_warmup_epochs", minimum=0)
        _check_optional_int(self, "num_answers", "question_feature_dim", "vision_feature_dim")
        _check_role(self, "question_role", "vision_role")
        _check_hidden(self)
        self._check_positive(
            "question_loss_weight", "vision_loss_weight", "kl_weight", allow_zero=True
        )
        if (
            not isinstance(self.c_init, (int, float))
            or isinstance(self.c_init, bool)
            or not math.isfinite(self.c_init)
        ):
            self._fail("c_init", "must be a finite number")
        if self.fusion == "rubi" and self.graph == "complete":
            raise ConfigError(
                "CounterfactualConfig(fusion='rubi', graph='complete') is invalid: the RUBi mask "
                "h = Z_k * sigmoid(Z_q) has no vision slot. Set graph='simple' (or use fusion="
                "'harmonic' / 'sum' for the complete graph)."
            )


@implements(CounterfactualConfig)
class Counterfactual(BranchWarmup, Intervention):
    """Implementation of :class:`CounterfactualConfig`.

    Output (every mode): ``logits`` = TIE / TE / factual per ``inference``; ``effects`` =
    ``{"te", "nde", "tie", "nie"}`` from :func:`~causalvl.interventions.fusion.effects`;
    ``branch_logits`` = ``{"question": Z_q, "question_head": logits_q, "fused":
    h(Z_k, Z_q, Z_v)}`` plus ``"vision"`` / ``"vision_head"`` in the complete graph. The base
    logits ``Z_k`` are the current prediction when this intervention runs (the factual logits
    unless an earlier intervention changed them).
    """

    replaces_task_loss = True

    def __init__(
        self, config: CounterfactualConfig, model: nn.Module, adapter: ModelAdapter
    ) -> None:
        super().__init__(config, model, adapter)
        refuse_generative(adapter, "CounterfactualConfig")
        self.kind = adapter.kind
        if adapter.kind == "contrastive" and config.graph == "complete":
            raise ConfigError(
                f"CounterfactualConfig(graph='complete') cannot be used with the contrastive "
                f"{adapter.family or 'generic'} adapter: its answers are the candidate texts, and "
                "an image alone cannot score a candidate it never sees. Use graph='simple' "
                "(question branch per candidate text)."
            )
        if adapter.kind == "contrastive" and config.num_answers is not None:
            warnings.warn(
                f"CounterfactualConfig.num_answers={config.num_answers} is ignored for contrastive "
                "models (the answers are the candidate texts of each batch).",
                UserWarning,
                stacklevel=2,
            )
        self.complete = config.graph == "complete"
        with init_rng(config.init_seed):  # the branch heads
            self.question = build_branch(
                model,
                adapter,
                config.question_role,
                config.question_feature_dim,
                config.num_answers,
                config.hidden_sizes,
            )
            self.vision = None
            if self.complete:
                try:
                    self.vision = build_branch(
                        model,
                        adapter,
                        config.vision_role,
                        config.vision_feature_dim,
                        config.num_answers,
                        config.hidden_sizes,
                    )
                except NoMatchingModuleError as exc:
                    roles = sorted(getattr(adapter, "roles", None) or {})
                    why = str(exc).rstrip(".")
                    if config.vision_role not in roles:
                        why = (
                            f"the adapter has no {config.vision_role!r} role (its roles: "
                            f"{', '.join(roles) or 'none'}) and {why}"
                        )
                    raise NoMatchingModuleError(
                        f"CounterfactualConfig(graph='complete') (the default) needs the image "
                        f"feature for its V->A branch, but {why}. Either give the adapter that role, e.g. "
                        f"GenericAdapter(roles={{{config.vision_role!r}: 'image_encoder', ...}}), or "
                        "set graph='simple', which needs only the question feature."
                    ) from exc
        self.c = nn.Parameter(torch.tensor(float(config.c_init)))
        dtype, device = module_dtype_device(model)
        self.to(device=device, dtype=dtype)

    @property
    def image_blind_reason(self) -> str | None:
        if self.config.inference != "tie":
            return None
        return (
            "CF-VQA answers with the TIE, the part of the prediction that goes through the "
            "image; with the image removed the TIE has no meaningful answer to agree with (the "
            "question-only answer is its NDE)"
        )

    @property
    def capture_roles(self) -> tuple[str, ...]:
        roles = (self.config.question_role,)
        return (*roles, self.config.vision_role) if self.complete else roles

    def combine(self, state: ForwardState) -> None:
        cfg = self.config
        z_k = state.logits
        z_q = self.question.scores(state.feature(cfg.question_role), z_k, cfg.question_role)
        branches = {"question": z_q, "question_head": self.question.predict(z_q)}
        z_v = None
        if self.vision is not None:
            z_v = self.vision.scores(state.feature(cfg.vision_role), z_k, cfg.vision_role)
            branches.update(vision=z_v, vision_head=self.vision.predict(z_v))
        fused = fuse(z_k, z_q, z_v, mode=cfg.fusion)
        eff = effects(z_k, z_q, z_v, c=self.c.to(z_k.dtype), mode=cfg.fusion)
        branches["fused"] = fused
        state.branch_logits.update(branches)
        state.effects.update(eff)
        state.logits = z_k if cfg.inference == "factual" else eff[cfg.inference]

    def kl_term(self, fused: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """``mean_b Σ_a −sg(p_te)_a log p_nde(a)`` with ``p_nde = softmax(h(c, sg Z_q, c))``.

        Only ``c`` receives gradient. Shapes: ``fused`` and ``z_q`` ``(B, A)``; returns 0-d.
        """
        z_q = z_q.detach()
        cc = self.c.to(z_q.dtype) * torch.ones_like(z_q)
        nde = fuse(cc, z_q, cc if self.complete else None, mode=self.config.fusion)
        p_te = F.softmax(fused.detach(), dim=-1)
        return -(p_te * F.log_softmax(nde, dim=-1)).sum(-1).mean()

    def loss(self, output: InterventionOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"fused_ce", "question_ce", "vision_ce" (complete graph), "kl"}``, each already
        multiplied by its weight (their sum is this intervention's loss)."""
        cfg = self.config
        br = output.branch_logits
        fused = br["fused"]
        parts = {
            "fused_ce": answer_cross_entropy(fused, batch, kind=self.kind),
            "question_ce": cfg.question_loss_weight
            * answer_cross_entropy(br["question_head"], batch, kind=self.kind),
        }
        if self.complete:
            parts["vision_ce"] = cfg.vision_loss_weight * answer_cross_entropy(
                br["vision_head"], batch, kind=self.kind
            )
        if self.warming_up():
            return {k: v for k, v in parts.items() if k in ("question_ce", "vision_ce")}
        parts["kl"] = cfg.kl_weight * self.kl_term(fused, br["question"])
        return parts

    def extra_repr(self) -> str:
        cfg = self.config
        return f"fusion={cfg.fusion!r}, graph={cfg.graph!r}, inference={cfg.inference!r}"


# ---------------------------------------------------------------------------------------
# Model-agnostic prior subtraction
# ---------------------------------------------------------------------------------------

_DETERMINISTIC_MODES = ("zeros", "mean", "mask")


@dataclass(kw_only=True)
class PriorSubtractionConfig(InterventionConfig):
    """Subtract what the model predicts without the image: a language prior, removed.

    For any model (ViLT, CLIP, LXMERT, your own ``nn.Module``), with no branch heads and no
    training of its own. A counterfactual pass runs the base model on the adapter's null-vision
    inputs (``adapter.counterfactual_inputs(inputs, remove="vision", mode=mode)``) and, with
    ``f`` the factual and ``g`` the counterfactual scores in the chosen ``space``,

    ``form="amplify"`` (default): ``logits = (1 + α)·f − α·g = f + α·(f − g)``;
    ``form="subtract"``: ``logits = f − α·g``.

    ``effects``: ``"tie" = f − g``, the effect of the image with the question held fixed, the
    same quantity as CF-VQA's TIE (``Z(q, v) − Z(q, v*)``), and ``"prior" = g``, the image-blind
    prediction (the language prior the subtraction removes; a prediction, not an effect).
    ``"te"`` / ``"nde"`` are not defined here: they need a pass with the question removed too.
    ``counterfactual_logits`` holds the raw counterfactual logits (averaged over
    ``num_samples`` draws).

    **When it can help.** Write the factual log-probabilities as ``f ≈ s(v, a) + log p(a | q)``
    (image evidence plus the learned prior) and the image-blind ones as ``g ≈ log p(a | q) + c``.
    ``"amplify"`` gives ``(1 + α) s + log p(a | q)``: the prior keeps its weight 1 and only the
    image evidence is scaled up, so the prediction changes only where the image evidence was
    already close to the prior's. ``"subtract"`` with ``α = 1`` in ``space="log_softmax"``
    removes the prior's weight entirely (``f − g ≈ s``: a logit adjustment by the model's own
    image-blind prior), which is what a uniform test prior needs. Both need a model that has
    learned the image: a model that ignores it has ``s ≈ 0`` and nothing to amplify. ``g`` must
    estimate the prior: a random other image (``"shuffle"``), averaged over ``num_samples``
    draws, does so for models that never saw an all-zero image; a zero image may be far from
    any training input.

    Args:
        alpha: strength ``α >= 0`` of the subtraction (0 = the factual model).
        form: ``"amplify"`` (``(1 + α) f − α g``, the contrastive form of counterfactual
            decoding) or ``"subtract"`` (``f − α g``, a logit adjustment by the image-blind
            prediction).
        num_samples: counterfactual draws averaged (in ``space``) for the random modes
            ``"shuffle"`` and ``"noise"`` (1 for the deterministic modes).
        plausibility: ``β`` in ``[0, 1)``: answers whose factual probability is below ``β``
            times the top answer's are left out of the comparison (their score becomes the
            dtype's lowest value), as in counterfactual decoding's plausibility constraint. A
            small ``β`` (e.g. ``1e-3``) keeps the answers valid for the question (the model
            knows its answer types) and stops the subtraction from promoting answers that are
            equally unlikely with and without the image (``f − g ≈ 0`` for both); ``0`` keeps
            every answer.
        mode: how the image is removed: ``"zeros"``, ``"mean"`` (the adapter's fitted mean, see
            ``vl.adapter.fit_vision_mean``), ``"shuffle"``, ``"noise"`` or ``"mask"``.
        space: ``"logits"`` (raw scores) or ``"log_softmax"`` (log-probabilities over answers;
            over the candidate texts for contrastive models).
        train_on: ``"factual"`` (default): in training mode ``logits`` are the factual logits
            (no counterfactual pass), the task loss trains the plain model and the subtraction
            applies at evaluation. ``"debiased"``: ``logits`` are the debiased scores in training
            too, and the task loss flows through both passes.
        cache: reuse counterfactual logits across calls, keyed by the question
            (``adapter.language_cache_key``; by candidate text for contrastive models), so a
            repeated question costs one forward. Used in eval mode only; cleared by
            ``vl.train()`` / ``vl.eval()`` and :meth:`PriorSubtraction.clear_cache` (call it
            after changing weights in eval mode). Requires a deterministic ``mode`` (zeros /
            mean / mask); ``"mean"`` additionally needs a fitted mean. It assumes the null-vision
            prediction depends on the language inputs only.
        cache_size: most entries kept (least recently used are dropped).

    Example:
        >>> import torch, causalvl
        >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
        >>> vl = causalvl.intervene(net, causalvl.PriorSubtractionConfig(alpha=1.0)).eval()
        >>> out = vl(pixel_values=torch.rand(2, 3, 8, 8), input_ids=torch.randint(1, 20, (2, 5)))
        >>> torch.allclose(out.logits, 2 * out.factual_logits - out.counterfactual_logits)
        True
    """

    type = "prior_subtraction"
    alpha: float = 1.0
    form: Literal["amplify", "subtract"] = "amplify"
    num_samples: int = 1
    plausibility: float = 0.0
    mode: Literal["zeros", "mean", "shuffle", "noise", "mask"] = "zeros"
    space: Literal["logits", "log_softmax"] = "logits"
    train_on: Literal["factual", "debiased"] = "factual"
    cache: bool = False
    cache_size: int = 4096

    def validate(self) -> None:
        self._check_positive("alpha", allow_zero=True)
        self._check_int("cache_size", minimum=1)
        self._check_int("num_samples", minimum=1)
        if not (
            isinstance(self.plausibility, (int, float))
            and not isinstance(self.plausibility, bool)
            and 0 <= self.plausibility < 1
        ):
            self._fail("plausibility", "must be a number in [0, 1), e.g. 1e-3 (0: no constraint)")
        if self.num_samples > 1 and self.mode in _DETERMINISTIC_MODES:
            self._fail(
                "num_samples",
                f"averages random counterfactuals, but mode={self.mode!r} gives the same one "
                "every draw; use mode 'shuffle' or 'noise', or num_samples=1",
            )
        if not isinstance(self.cache, bool):
            self._fail("cache", "must be True or False")
        if self.cache and self.mode not in _DETERMINISTIC_MODES:
            raise ConfigError(
                f"PriorSubtractionConfig(cache=True, mode={self.mode!r}) is invalid: a "
                f"{self.mode!r} counterfactual changes from call to call, so cached values would "
                f"be wrong. Use mode 'zeros', 'mean' or 'mask' with the cache, or cache=False."
            )


@implements(PriorSubtractionConfig)
class PriorSubtraction(Intervention):
    """Implementation of :class:`PriorSubtractionConfig`."""

    def __init__(
        self, config: PriorSubtractionConfig, model: nn.Module, adapter: ModelAdapter
    ) -> None:
        super().__init__(config, model, adapter)
        self.kind = adapter.kind
        if (
            config.mode == "mask"
            and adapter.vision_mask_key is None
            and type(adapter)._mask_vision is ModelAdapter._mask_vision
        ):
            raise ConfigError(
                f"PriorSubtractionConfig(mode='mask') needs a vision mask, and the "
                f"{adapter.family or 'generic'} adapter has none; use mode 'zeros' or 'mean'."
            )
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    # -- cache ------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every cached counterfactual (and reset the hit / miss counters)."""
        self._cache.clear()
        self.cache_hits = 0
        self.cache_misses = 0

    def train(self, mode: bool = True) -> PriorSubtraction:
        if mode or self.training:  # weights may change in training: start afresh
            self.clear_cache()
        return super().train(mode)

    def _remember(self, key: bytes, value: torch.Tensor) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def _cached_counterfactual(self, state: ForwardState) -> torch.Tensor:
        adapter, inputs = state.adapter, state.inputs
        if self.config.mode == "mean" and not adapter.vision_mean:
            raise InterventionStateError(
                "PriorSubtractionConfig(cache=True, mode='mean') needs a fitted vision mean (the "
                "batch mean changes from batch to batch); call vl.adapter.fit_vision_mean(batches) "
                "first, or use mode='zeros'."
            )
        keys = adapter.language_cache_key(inputs)
        missing: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in missing:
                missing[k] = i
        self.cache_hits += len(keys) - len(missing)
        self.cache_misses += len(missing)
        # this batch's values, read before storing new ones can evict them (more distinct
        # questions than cache_size in one batch)
        found = {k: self._cache[k] for k in keys if k in self._cache}
        if missing:
            rows = torch.tensor(list(missing.values()), dtype=torch.long)
            values = self._run_subset(state, rows)
            for j, k in enumerate(missing):
                found[k] = values[j].detach()
                self._remember(k, found[k])
        out = []
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
            out.append(found[k].to(state.factual_logits.device))
        stacked = torch.stack(out)  # (B, A) or (num_texts,)
        if self.kind == "contrastive":
            return stacked.unsqueeze(0).expand_as(state.factual_logits)
        return stacked

    def _run_subset(self, state: ForwardState, rows: torch.Tensor) -> torch.Tensor:
        """Counterfactual logits of the examples (texts, for contrastive models) in ``rows``."""
        adapter, inputs = state.adapter, state.inputs
        cf = adapter.counterfactual_inputs(
            inputs, remove="vision", mode=self.config.mode, generator=state.generator
        )
        if self.kind == "contrastive":
            lang = set(adapter.language_keys)
            n_text = int(state.factual_logits.shape[-1])
            n_img = int(state.factual_logits.shape[0])
            sub = {}
            for k, v in cf.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    if k in lang and v.shape[0] == n_text:
                        v = v[rows.to(v.device)]
                    elif k not in lang and v.shape[0] == n_img:
                        v = v[:1]
                sub[k] = v
            return state.run(sub)[0]
        n = adapter.batch_size(inputs)
        sub = {
            k: v[rows.to(v.device)]
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n
            else v
            for k, v in cf.items()
        }
        return state.run(sub)

    # -- forward ----------------------------------------------------------------------------
    def _space(self, z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(z, dim=-1) if self.config.space == "log_softmax" else z

    def combine(self, state: ForwardState) -> None:
        cfg = self.config
        if state.training and cfg.train_on == "factual":
            return
        if cfg.cache and not state.training:
            g_raw = self._cached_counterfactual(state)
            g = self._space(g_raw.to(state.logits.dtype))
        else:
            g_raw = state.counterfactual("vision", cfg.mode)
            g = self._space(g_raw.to(state.logits.dtype))
            if cfg.num_samples > 1:
                draws = [g_raw] + [
                    state.run(
                        state.adapter.counterfactual_inputs(
                            state.inputs, remove="vision", mode=cfg.mode, generator=state.generator
                        )
                    )
                    for _ in range(cfg.num_samples - 1)
                ]
                g_raw = torch.stack(draws).mean(0)
                g = torch.stack([self._space(d.to(state.logits.dtype)) for d in draws]).mean(0)
        f = self._space(state.logits)
        state.counterfactual_logits = g_raw
        state.effects.update(tie=f - g, prior=g)
        if cfg.form == "subtract":
            debiased = f - cfg.alpha * g
        else:
            debiased = (1.0 + cfg.alpha) * f - cfg.alpha * g
        # masked scores stay masked: (1 + a)(-inf) - a(-inf) would be NaN
        masked = torch.isneginf(f) | torch.isneginf(g)
        if bool(masked.any()):
            debiased = torch.where(masked, f, debiased)
        if cfg.plausibility > 0:
            from ..decoding.scores import plausibility_mask

            keep = plausibility_mask(state.logits.detach(), cfg.plausibility)
            debiased = debiased.masked_fill(~keep, torch.finfo(debiased.dtype).min)
        state.logits = debiased

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"alpha={cfg.alpha}, form={cfg.form!r}, mode={cfg.mode!r}, space={cfg.space!r}, "
            f"num_samples={cfg.num_samples}, cache={cfg.cache}"
        )


__all__ = [
    "AnswerBranch",
    "Counterfactual",
    "CounterfactualConfig",
    "PriorSubtraction",
    "PriorSubtractionConfig",
    "build_branch",
]
