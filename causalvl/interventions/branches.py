"""Building blocks shared by the interventions that add branch heads (CF-VQA, RUBi, GGE, LMH).

* :func:`stop_gradient_into` — identity forward, zero gradient backward (the published
  ``GradMulConst(x, 0)``), so branch heads never train the encoders they read from.
* :class:`BranchMLP` — the question-only / vision-only MLP of the published code.
* :func:`infer_feature_dim` / :func:`infer_num_answers` — size heads from the model so users
  rarely have to.
* :func:`check_feature_width` — a clear error when a captured feature is not the width a head
  was built for (e.g. a bidirectional GRU gives twice its ``hidden_size``).
* :func:`refuse_generative` — discriminative objectives refuse generative models.
* :class:`AnswerBranch` / :func:`build_branch` — the answer-scoring branch head of CF-VQA and
  RUBi; ``_check_*`` and ``_seeded_init`` — the config checks and seeded head init that the
  branch-head configs share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..adapters.base import ModelAdapter
from ..errors import ConfigError, InputError, InterventionStateError

# the config checks of the branch-head interventions (pure Python; their former home is here)
from .checks import _check_hidden, _check_optional_int, _check_role  # noqa: F401


class _GradMulConst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, const: float) -> torch.Tensor:  # type: ignore[override]
        ctx.const = const
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.const, None


def grad_mul_const(x: torch.Tensor, const: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``const`` in the backward pass."""
    return _GradMulConst.apply(x, const)


def stop_gradient_into(x: torch.Tensor) -> torch.Tensor:
    """Identity forward; the gradient flowing back into ``x`` is exactly zero.

    Unlike ``x.detach()``, the result stays in the graph, so parameters that read it still get
    gradients while whatever produced ``x`` gets zeros (the published ``GradMulConst(x, 0)``).
    """
    return grad_mul_const(x, 0.0)


class BranchMLP(nn.Module):
    """Linear -> ReLU -> ... -> Linear, mapping ``(batch, in_dim)`` to ``(batch, out_dim)``.

    Args:
        in_dim: input feature width.
        out_dim: output width (usually the number of answers).
        hidden: widths of the hidden layers (the published heads use ``(1024, 1024)``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (1024, 1024)) -> None:
        super().__init__()
        dims = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _width(module: nn.Module) -> int | None:
    for attr in (
        "out_features",
        "embedding_dim",
        "out_channels",
        "normalized_shape",
        "hidden_size",
    ):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, tuple) and value and isinstance(value[-1], int):
            return value[-1]
    return None


def infer_feature_dim(model: nn.Module, adapter: ModelAdapter, role: str) -> int:
    """Width of the pooled feature of ``role``: the last sized layer inside the role's module."""
    path, module = adapter.resolve(role, model)
    width = _width(module)
    if width is None:
        for sub in reversed(list(module.modules())):
            width = _width(sub)
            if width is not None:
                break
    if width is None:
        raise ConfigError(
            f"cannot infer the width of role {role!r} ({path}: {type(module).__name__}); "
            "set the config's feature dimension explicitly."
        )
    return width


def infer_num_answers(model: nn.Module, adapter: ModelAdapter) -> int:
    """Number of answers of a classifier model: ``config.num_labels`` / ``num_qa_labels``, else
    the ``out_features`` of the model's last linear layer."""
    cfg = getattr(model, "config", None)
    for name in ("num_qa_labels", "num_labels"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    raise ConfigError(
        f"cannot infer the number of answers of {type(model).__name__}; set num_answers in the config."
    )


def check_feature_width(
    feature: torch.Tensor, expected: int, role: str, *, owner: str, field: str
) -> torch.Tensor:
    """Check that a pooled role feature is ``(batch, expected)``; return it unchanged.

    Raises :class:`~causalvl.InputError` naming the role, the widths and the config field to set
    (``owner(field=...)``) instead of a raw matrix-multiplication error.
    """
    if feature.dim() != 2:
        raise InputError(
            f"{owner}: role {role!r} gave a feature of shape {tuple(feature.shape)}; the head "
            "needs one vector per example (batch, dim). Point the role at a module whose output "
            "pools to (batch, dim)."
        )
    if int(feature.shape[-1]) != int(expected):
        raise InputError(
            f"{owner}: role {role!r} gives features of width {feature.shape[-1]}, the head was "
            f"built for {expected} (inferred from the module, or set in the config); set "
            f"{owner}({field}={feature.shape[-1]})."
        )
    return feature


def refuse_generative(adapter: ModelAdapter, owner: str) -> None:
    """Raise :class:`~causalvl.ConfigError` when ``adapter`` describes a generative model.

    CF-VQA, RUBi, LMH and GGE score a fixed answer set ``(batch, num_answers)``; a generative
    model gives next-token logits ``(batch, length, vocab)``, and treating the vocabulary as the
    answer set repeats the question branch over tokens or crashes.
    """
    if getattr(adapter, "generative", False):
        raise ConfigError(
            f"{owner} trains a question branch over a fixed answer set (batch, num_answers); the "
            f"{adapter.family or 'generic'} model is generative (next-token logits (batch, "
            "length, vocab)), so there is no answer set to debias. Use counterfactual decoding "
            "instead: causalvl.intervene(model, causalvl.CounterfactualDecodingConfig(...)) and "
            "vl.generate(...), or PriorSubtractionConfig for a model-agnostic prior subtraction "
            "on the logits."
        )


class BranchWarmup:
    """Mixin for interventions with a question-only branch (CF-VQA, RUBi): during the first
    ``config.branch_warmup_epochs`` epochs only the branch's own loss is trained, on the
    stop-gradient question feature, so the branch has taken up the language prior before the
    base model starts learning. Without it, which of the two absorbs the prior is a race that
    the branch wins only with a faster learning rate, and not on every seed.

    The epoch comes from ``vl.set_epoch(epoch, num_epochs)`` (the Trainer calls it)."""

    _epoch: int | None = None

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        self._epoch = int(epoch)

    def warming_up(self) -> bool:
        """True while the branch is warmed up alone (training mode only)."""
        warmup = int(getattr(self.config, "branch_warmup_epochs", 0))  # type: ignore[attr-defined]
        if warmup == 0 or not self.training:  # type: ignore[attr-defined]
            return False
        if self._epoch is None:
            raise InterventionStateError(
                f"{type(self.config).__name__}(branch_warmup_epochs={warmup}) needs the epoch: "  # type: ignore[attr-defined]
                "call vl.set_epoch(epoch, num_epochs) before each epoch (causalvl.Trainer does)."
            )
        return self._epoch < warmup


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


def _seeded_init(module: nn.Module, seed: int | None) -> None:
    """Re-draw every ``nn.Linear`` of ``module`` with PyTorch's default init (uniform in
    ``±1/sqrt(fan_in)``) from a private generator, so heads do not depend on the global RNG.
    ``None`` keeps the init drawn from the global RNG."""
    if seed is None:
        return
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.in_features) if sub.in_features else 0.0
                for p in (sub.weight, sub.bias):
                    if p is not None:
                        draw = torch.empty(p.shape, dtype=torch.float32)
                        nn.init.uniform_(draw, -bound, bound, generator=gen)
                        p.copy_(draw.to(p.dtype))
