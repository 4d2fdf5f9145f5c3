"""Backdoor adjustment over a confounder dictionary (VC R-CNN, Wang et al., CVPR 2020).

The observed feature ``x`` of a model is combined with the expectation of the confounder
``z`` under its prior, approximated by the normalised weighted geometric mean (NWGM)::

    E_z[z] = sum_k P(z_k) * softmax_k( (W_y q)^T (W_z z_k) / sqrt(E) ) * z_k

where the query ``q`` is ``x`` itself (or a separate context feature), ``z_k`` are the rows of
a :class:`~causalvl.ConfounderDictionary` and ``P(z)`` its prior. This approximates
``P(Y | do(X)) = sum_z P(Y | X, z) P(z)`` by ``softmax(f(x, E_z[z]))``. The published code does
not renormalise ``P(z_k) * alpha_k`` (the weights sum to less than 1); ``normalize=True`` does.

Three pieces live here:

* :class:`NWGMAttention`: the expectation above, as a module holding ``W_y`` and ``W_z``;
* :class:`BackdoorConfig` / :class:`BackdoorAdjustment`: an edit hook that replaces a model's
  feature (a role or module path) by its adjusted value during :func:`causalvl.intervene`'s
  forward; for region features ``(B, N, D)`` it can instead replace the context regions by
  their dictionary expectation (``regions="context"``), cutting the co-occurrence path;
* :func:`vc_rcnn_loss` / :class:`VCRCNNHead`: the VC R-CNN self + context prediction objective
  for learning region features.

Example:
    >>> import torch, causalvl
    >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
    >>> d = causalvl.ConfounderDictionary.from_tensors(torch.randn(5, 16))
    >>> vl = causalvl.intervene(net, causalvl.BackdoorConfig(dictionary=d))
    >>> out = vl(pixel_values=torch.rand(2, 3, 8, 8), input_ids=torch.randint(1, 20, (2, 4)))
    >>> out.logits.shape, out.features["backdoor_expectation"].shape
    (torch.Size([2, 4]), torch.Size([2, 16]))
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...errors import ConfigError, InputError, InterventionStateError
from ...hooks import HookManager, did_not_run_message, get_primary, replace_primary
from ...runtime import module_dtype_device
from ..base import ForwardState, HookContext, Intervention, implements
from ..confounders import ConfounderDictionary, FeatureCollection
from ..seeding import init_rng
from .config import BackdoorConfig

__all__ = [
    "BackdoorAdjustment",
    "BackdoorConfig",
    "ConfounderDictionary",
    "FeatureCollection",
    "NWGMAttention",
    "VCRCNNHead",
    "vc_rcnn_loss",
]


# -- the NWGM expectation ------------------------------------------------------------------
class NWGMAttention(nn.Module):
    """The dictionary expectation ``E_z[z]`` queried by a feature (VC R-CNN's ``z_dic``).

    ``alpha = softmax_k((W_y q + b_y)^T (W_z z_k + b_z) / sqrt(E))``, weights
    ``w_k = P(z_k) * alpha_k`` (renormalised to sum to 1 when ``normalize``), and
    ``E_z[z] = sum_k w_k z_k``. ``W_y`` and ``W_z`` are initialised ``N(0, init_std)`` with zero
    bias, as published.

    Args:
        query_dim: dimension of the query feature ``q``.
        key_dim: dimension ``D_z`` of the prototypes.
        embed_dim: ``E``, the shared embedding of query and prototypes.
        normalize: renormalise ``P(z) * alpha`` (the published code does not).
        init_std: standard deviation of the weight initialisation.

    Shapes: ``query`` ``(..., query_dim)``, ``prototypes`` ``(K, key_dim)``, ``prior`` ``(K,)``
    -> ``expectation`` ``(..., key_dim)`` and ``weights`` ``(..., K)``.

    Example:
        >>> import torch
        >>> att = NWGMAttention(8, 4, 6, normalize=True)
        >>> e, w = att(torch.randn(3, 8), torch.randn(5, 4), torch.full((5,), 0.2))
        >>> e.shape, w.sum(-1).allclose(torch.ones(3))
        (torch.Size([3, 4]), True)
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        embed_dim: int,
        *,
        normalize: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, embed_dim)  # W_y
        self.key = nn.Linear(key_dim, embed_dim)  # W_z
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        self.embed_dim = embed_dim
        self.normalize = normalize

    def forward(
        self, query: torch.Tensor, prototypes: torch.Tensor, prior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.query(query)
        k = self.key(prototypes)
        alpha = torch.softmax(q @ k.transpose(0, 1) / math.sqrt(self.embed_dim), dim=-1)
        weights = alpha * prior
        if self.normalize:
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(
                torch.finfo(weights.dtype).tiny
            )
        return weights @ prototypes, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, normalize={self.normalize}"


# -- the intervention ----------------------------------------------------------------------
def checkpointed_ancestor(model: nn.Module, path: str) -> str | None:
    """The path of a gradient-checkpointed module that runs the module at ``path`` inside its
    checkpoint (``None`` when there is none).

    Hugging Face models mark them with ``gradient_checkpointing = True``: a layer that
    checkpoints itself (``GradientCheckpointingLayer``) holds its own descendants inside the
    checkpoint, and in older models an encoder with the flag checkpoints each of its layers
    (so everything below it).
    """
    parts = path.split(".") if path else []
    for depth in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:depth])
        module = model.get_submodule(prefix) if prefix else model
        if getattr(module, "gradient_checkpointing", False) is not True:
            continue
        self_checkpointing = any(
            k.__name__ == "GradientCheckpointingLayer" for k in type(module).__mro__
        )
        layered = any(
            any(k.__name__ == "GradientCheckpointingLayer" for k in type(m).__mro__)
            for m in module.modules()
            if m is not module
        )
        if self_checkpointing or not layered:
            return prefix or "(the model)"
    return None


@implements(BackdoorConfig)
class BackdoorAdjustment(Intervention):
    """Implementation of :class:`BackdoorConfig`: an edit hook on the target module.

    Parameters: ``attention`` (:class:`NWGMAttention`: ``query`` = ``W_y``, ``key`` = ``W_z``)
    and ``projection`` (the output projection, or ``None``). Buffers: ``prototypes``
    ``(K, D_z)``, ``prior`` ``(K,)`` and ``has_dictionary``. All follow the base model's dtype
    and device at construction and move with ``vl.to(...)``.

    The computed expectation of the factual pass is exposed as
    ``output.features["backdoor_expectation"]`` (``(B, D_z)`` or ``(B, N, D_z)``) and the
    weights ``P(z) * alpha`` as ``output.features["backdoor_weights"]`` (``(..., K)``); a second
    backdoor intervention in the same wrapper gets keys suffixed ``".1"``, ...
    """

    def __init__(self, config: BackdoorConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        dtype, device = module_dtype_device(model)
        k, dz = config.num_prototypes, config.feature_dim
        d = config.input_dim or dz
        dq = d if config.query == "self" else (config.query_dim or d)
        e = config.embed_dim or dz
        self._adapter = adapter
        self.target_path = adapter.resolve(config.target, model)[0]
        self.query_path = (
            adapter.resolve(config.query_target, model)[0] if config.query == "context" else None
        )
        self.input_dim, self.query_dim = d, dq
        with init_rng(config.init_seed):  # W_y, W_z and the projection
            self.attention = NWGMAttention(dq, dz, e, normalize=config.normalize)
            self.projection: nn.Linear | None = None
            if config.project:
                if config.merge == "concat_project":
                    proj = nn.Linear(d + dz, d)
                    nn.init.normal_(proj.weight, std=0.02)
                    with torch.no_grad():
                        proj.weight[:, :d] = torch.eye(d)
                else:
                    proj = nn.Linear(dz, d)
                    if config.merge == "replace" and dz == d:
                        nn.init.eye_(proj.weight)
                    else:
                        nn.init.normal_(proj.weight, std=0.02)
                nn.init.zeros_(proj.bias)
                self.projection = proj
        self.register_buffer("prototypes", torch.zeros(k, dz))
        self.register_buffer("prior", torch.zeros(k))
        self.register_buffer("has_dictionary", torch.tensor(False))
        self.to(device=device, dtype=dtype)
        if getattr(model, "training", False):
            self._refuse_checkpointed(model)
        if config.dictionary is not None:
            self.set_dictionary(config.dictionary)

    def _refuse_checkpointed(self, model: nn.Module) -> None:
        """Refuse a target that runs inside a gradient-checkpointed layer: the backward pass
        recomputes that layer without the edit hook, so the adjustment gets no gradient
        (re-entrant checkpointing) or the recomputation fails (non-re-entrant)."""
        owner = checkpointed_ancestor(model, self.target_path)
        if owner is None:
            return
        raise ConfigError(
            f"the backdoor target {self.target_path!r} runs inside {owner!r}, which uses "
            "gradient checkpointing: its backward pass recomputes the layer without the edit, "
            "so the adjustment would get no gradient or the recomputation would fail. Target "
            f"{owner!r} itself or a module outside the checkpointed layers, or turn "
            "checkpointing off (model.gradient_checkpointing_disable()) while training the "
            "backdoor."
        )

    # -- the dictionary --------------------------------------------------------------------
    def set_dictionary(self, dictionary: ConfounderDictionary) -> None:
        """Load ``dictionary``'s prototypes and prior into the buffers (shapes must match).

        Example:
            >>> import torch, causalvl
            >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, hidden=16)
            >>> cfg = causalvl.BackdoorConfig(num_prototypes=3, feature_dim=16)
            >>> vl = causalvl.intervene(net, cfg)
            >>> vl.interventions["0_backdoor"].set_dictionary(
            ...     causalvl.ConfounderDictionary(torch.randn(3, 16)))
        """
        if not isinstance(dictionary, ConfounderDictionary):
            raise ConfigError(
                f"set_dictionary expects a ConfounderDictionary, got {type(dictionary).__name__}."
            )
        shape = tuple(self.prototypes.shape)
        if (dictionary.num_prototypes, dictionary.feature_dim) != shape:
            raise ConfigError(
                f"the dictionary has shape ({dictionary.num_prototypes}, "
                f"{dictionary.feature_dim}) but this intervention was built for {shape}; "
                "build a new wrapper with BackdoorConfig(dictionary=...)."
            )
        with torch.no_grad():
            self.prototypes.copy_(dictionary.prototypes)
            self.prior.copy_(dictionary.prior)
            self.has_dictionary.fill_(True)
        # the tensors live in the buffers; the config keeps the names and drops the runtime
        # dictionary (a copy: the caller's config is never changed)
        self.config = self.config.replace(dictionary=None, prototype_names=tuple(dictionary.names))

    @property
    def dictionary(self) -> ConfounderDictionary:
        """The dictionary held in the buffers (a float32 CPU copy)."""
        self._require_dictionary()
        names = self.config.prototype_names or None
        return ConfounderDictionary(
            self.prototypes.detach().float().cpu(), self.prior.detach().float().cpu(), names
        )

    def _require_dictionary(self) -> None:
        if not bool(self.has_dictionary):
            raise InterventionStateError(
                "the backdoor intervention has no confounder dictionary yet; call "
                "vl.interventions[name].set_dictionary(ConfounderDictionary...) or build the "
                "wrapper with BackdoorConfig(dictionary=...)."
            )

    # -- the adjustment --------------------------------------------------------------------
    def adjust(
        self, x: torch.Tensor, query: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adjust a feature; used by the edit hook, callable directly.

        Args:
            x: ``(B, D)`` or ``(B, N, D)``.
            query: ``(B, query_dim)`` context feature for ``query="context"`` (else ``None``).

        Returns:
            ``(adjusted, expectation, weights)``: ``adjusted`` shaped and typed like ``x``;
            ``expectation`` ``(B, D_z)`` / ``(B, N, D_z)``; ``weights`` ``(..., K)``.
        """
        self._require_dictionary()
        cfg = self.config
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_dim:
            raise InputError(
                f"backdoor target {self.target_path!r} gives a feature of shape "
                f"{tuple(x.shape)}; expected (B, {self.input_dim}) or (B, N, {self.input_dim}). "
                "Set BackdoorConfig.input_dim to the feature size, or target a module whose "
                "output is a (batch, dim) or (batch, regions, dim) tensor."
            )
        ref = self.prototypes
        xin = x.to(device=ref.device, dtype=ref.dtype)
        if query is not None:
            query = query.to(device=ref.device, dtype=ref.dtype)
            if query.shape != (x.shape[0], self.query_dim):
                raise InputError(
                    f"the context query from {self.query_path!r} pools to shape "
                    f"{tuple(query.shape)}; expected ({x.shape[0]}, {self.query_dim}). Set "
                    "BackdoorConfig.query_dim, or pick a query_target with one row per example."
                )
        if cfg.regions == "context":
            if xin.dim() != 3 or xin.shape[1] < 2:
                raise InputError(
                    f"regions='context' needs region features (B, N, D) with N >= 2; "
                    f"{self.target_path!r} gives {tuple(x.shape)}. Use regions='all'."
                )
            n = xin.shape[1]
            t = cfg.target_index
            if not -n <= t < n:
                raise InputError(
                    f"target_index = {t} is out of range for {n} regions; pick 0..{n - 1}."
                )
            t = t % n
            q = xin[:, t] if query is None else query
            expectation, weights = self.attention(q, self.prototypes, self.prior)
            value = self.projection(expectation) if self.projection is not None else expectation
            is_context = torch.arange(n, device=xin.device) != t
            out = torch.where(is_context[None, :, None], value.unsqueeze(1).expand_as(xin), xin)
        else:
            q = xin if query is None else (query if xin.dim() == 2 else query.unsqueeze(1))
            expectation, weights = self.attention(q, self.prototypes, self.prior)
            expectation = expectation.expand(*xin.shape[:-1], expectation.shape[-1])
            weights = weights.expand(*xin.shape[:-1], weights.shape[-1])
            if cfg.merge == "residual":
                proj = self.projection(expectation) if self.projection is not None else expectation
                out = xin + proj
            elif cfg.merge == "concat_project":
                out = self.projection(torch.cat([xin, expectation], dim=-1))
            else:
                out = self.projection(expectation) if self.projection is not None else expectation
        return out.to(device=x.device, dtype=x.dtype), expectation, weights

    # -- hooks -----------------------------------------------------------------------------
    def install(self, hooks: HookManager, context: HookContext) -> None:
        store = context.storage(self)  # this call only; combine reads it from state.context
        store["installed"] = True
        base = self._adapter.model
        if base.training and torch.is_grad_enabled():  # checkpointing may be enabled later
            self._refuse_checkpointed(base)
        target = base.get_submodule(self.target_path)
        if self.query_path is not None:
            query_module = base.get_submodule(self.query_path)

            def _causalvl_backdoor_query(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
                store["query"] = get_primary(out)

            hooks.add_forward_hook(query_module, _causalvl_backdoor_query)

        def _causalvl_backdoor_edit(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
            query = None
            if self.query_path is not None:
                if "query" not in store:
                    raise InterventionStateError(
                        f"the context query module {self.query_path!r} had not run when the "
                        f"backdoor target {self.target_path!r} ran; query_target must be "
                        "computed before the target in the model's forward."
                    )
                query = self._adapter.pool(
                    self.config.query_target, store.pop("query"), context.inputs
                )
            new, expectation, weights = self.adjust(get_primary(out), query)
            store.setdefault("adjusted", (expectation, weights))  # the factual pass runs first
            return replace_primary(out, new)

        hooks.add_forward_hook(target, _causalvl_backdoor_edit)

    def combine(self, state: ForwardState) -> None:
        store = state.context.storage(self)
        found = store.get("adjusted")
        if found is None:
            if store.get("installed"):  # the edit hook was installed but its module never ran
                raise InterventionStateError(
                    did_not_run_message(
                        self._adapter.model, self.target_path, "the backdoor target"
                    )
                )
            return
        suffix, i = "", 0
        while f"backdoor_expectation{suffix}" in state.features:
            i += 1
            suffix = f".{i}"
        state.features[f"backdoor_expectation{suffix}"] = found[0]
        state.features[f"backdoor_weights{suffix}"] = found[1]

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"target={self.target_path!r}, K={c.num_prototypes}, merge={c.merge!r}, "
            f"regions={c.regions!r}, query={c.query!r}"
        )


# -- VC R-CNN objective --------------------------------------------------------------------
def _dictionary_tensors(
    dictionary: ConfounderDictionary | tuple[torch.Tensor, torch.Tensor], like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dictionary, ConfounderDictionary):
        protos, prior = dictionary.prototypes, dictionary.prior
    elif isinstance(dictionary, (tuple, list)) and len(dictionary) == 2:
        protos, prior = dictionary
    else:
        raise ConfigError(
            "dictionary must be a ConfounderDictionary or a (prototypes, prior) pair, got "
            f"{type(dictionary).__name__}."
        )
    return protos.to(like.device, like.dtype), prior.to(like.device, like.dtype)


def vc_rcnn_loss(
    region_features: torch.Tensor,
    region_labels: torch.Tensor,
    dictionary: ConfounderDictionary | tuple[torch.Tensor, torch.Tensor],
    *,
    attention: NWGMAttention,
    context_classifier: nn.Module,
    self_classifier: nn.Module | None = None,
    query_from: Literal["context", "target"] = "context",
    pair_normalization: Literal["published", "pairs"] = "published",
    reduction: Literal["sum", "mean"] = "sum",
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The VC R-CNN self + context prediction losses on region features (methods.md §6).

    For every image with ``n`` valid regions and every ordered pair ``(i, j)``, ``i != j``, the
    context predictor scores ``s_ij = W_c [y_i ; E_z[z]]`` against the class ``c_j`` of region
    ``j``; ``L_context = sum_images (1/n^2) sum_{i != j} CE(s_ij, c_j)``: the diagonal is left
    out but counted in ``n^2``, as published (``pair_normalization="pairs"`` divides by
    ``n (n - 1)`` instead). ``reduction="mean"`` averages over images instead of summing.
    Images with fewer than 2 valid regions contribute 0. The self predictor gives
    ``L_self = mean_i CE(W_s y_i, c_i)`` over all valid regions.

    The query of ``E_z[z]``:

    * ``query_from="context"`` (default): ``E_z[z]_i`` is queried by the context region's own
      feature ``y_i``, so predicting ``c_j`` uses nothing of region ``j``.
    * ``query_from="target"``: the published code's choice, ``E_z[z]_j`` is queried by
      ``y_j``, the feature of the very region whose class is predicted; this leaks the label
      into the context predictor (the "context" score can be solved from ``y_j`` alone). Kept
      for reproduction only.

    Args:
        region_features: ``(B, N, D)`` features ``y``.
        region_labels: ``(B, N)`` class ids ``c`` (negative ids mark padding).
        dictionary: the confounder dictionary (``K`` prototypes ``(K, D_z)``) or a
            ``(prototypes, prior)`` pair.
        attention: the :class:`NWGMAttention` (``W_y``: ``D -> E``, ``W_z``: ``D_z -> E``).
        context_classifier: ``(..., D + D_z) -> (..., C)``.
        self_classifier: ``(..., D) -> (..., C)``; ``None`` skips ``L_self``.
        mask: ``(B, N)`` bool, valid regions (default: ``region_labels >= 0``).

    Returns:
        ``{"vc_context": scalar, "vc_self": scalar}`` (``"vc_self"`` only with a self
        classifier).

    Example:
        >>> import torch
        >>> head = VCRCNNHead(8, 3, ConfounderDictionary(torch.randn(3, 8)))
        >>> parts = head(torch.randn(2, 4, 8), torch.randint(0, 3, (2, 4)))
        >>> sorted(parts)
        ['vc_context', 'vc_self']
    """
    y = region_features
    if y.dim() != 3:
        raise InputError(f"region_features must be (B, N, D), got {tuple(y.shape)}.")
    labels = region_labels.to(y.device).long()
    if labels.shape != y.shape[:2]:
        raise InputError(
            f"region_labels {tuple(labels.shape)} must be (B, N) = {tuple(y.shape[:2])}."
        )
    if query_from not in ("context", "target"):
        raise ConfigError(f"query_from = {query_from!r}; choose 'context' or 'target'.")
    if pair_normalization not in ("published", "pairs"):
        raise ConfigError(
            f"pair_normalization = {pair_normalization!r}; choose 'published' or 'pairs'."
        )
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"reduction = {reduction!r}; choose 'sum' or 'mean'.")
    valid = (labels >= 0) if mask is None else mask.to(y.device).bool() & (labels >= 0)
    protos, prior = _dictionary_tensors(dictionary, y)
    b, n, _ = y.shape
    expectation, _ = attention(y, protos, prior)  # (B, N, Dz): queried by each region
    safe = labels.clamp_min(0)
    # pair (i, j): context region i, target region j
    left = y.unsqueeze(2).expand(b, n, n, y.shape[-1])
    if query_from == "context":
        right = expectation.unsqueeze(2).expand(b, n, n, expectation.shape[-1])
    else:
        right = expectation.unsqueeze(1).expand(b, n, n, expectation.shape[-1])
    scores = context_classifier(torch.cat([left, right], dim=-1))  # (B, N, N, C)
    target = safe.unsqueeze(1).expand(b, n, n)
    ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), target.reshape(-1), reduction="none")
    ce = ce.reshape(b, n, n)
    eye = torch.eye(n, dtype=torch.bool, device=y.device)
    pair_ok = valid.unsqueeze(2) & valid.unsqueeze(1) & ~eye
    counts = valid.sum(1).to(y.dtype)
    denom = counts**2 if pair_normalization == "published" else counts * (counts - 1)
    per_image = (ce * pair_ok.to(ce.dtype)).sum((1, 2)) / denom.clamp_min(1.0)
    has_pairs = counts >= 2
    per_image = per_image * has_pairs.to(ce.dtype)
    if reduction == "sum":
        context = per_image.sum()
    else:
        context = per_image.sum() / has_pairs.sum().clamp_min(1).to(ce.dtype)
    parts = {"vc_context": context}
    if self_classifier is not None:
        logits = self_classifier(y[valid])
        parts["vc_self"] = (
            F.cross_entropy(logits, labels[valid]) if logits.shape[0] else y.sum() * 0.0
        )
    return parts


class VCRCNNHead(nn.Module):
    """The VC R-CNN training head: NWGM attention, context and self classifiers, dictionary.

    Args:
        feature_dim: ``D`` of the region features.
        num_classes: ``C`` object classes.
        dictionary: the confounder dictionary (usually the class means of the region features,
            :meth:`ConfounderDictionary.from_class_means`).
        embed_dim: ``E`` (default ``D_z``).
        normalize: renormalise ``P(z) * alpha`` (published: ``False``).
        query_from, pair_normalization, reduction: see :func:`vc_rcnn_loss`.

    ``W_y``, ``W_z`` ~ ``N(0, 0.02)``; the classifiers ~ ``N(0, 0.01)``; zero biases.
    ``forward(region_features (B, N, D), region_labels (B, N), mask=None)`` returns the loss
    parts ``{"vc_context", "vc_self"}``; add them for the published total ``L_self + L_causal``.

    Example:
        >>> import torch, causalvl
        >>> head = VCRCNNHead(8, 3, causalvl.ConfounderDictionary(torch.randn(3, 8)))
        >>> sum(head(torch.randn(2, 4, 8), torch.randint(0, 3, (2, 4))).values()).dim()
        0
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        dictionary: ConfounderDictionary,
        *,
        embed_dim: int | None = None,
        normalize: bool = False,
        query_from: Literal["context", "target"] = "context",
        pair_normalization: Literal["published", "pairs"] = "published",
        reduction: Literal["sum", "mean"] = "sum",
    ) -> None:
        super().__init__()
        if not isinstance(dictionary, ConfounderDictionary):
            raise ConfigError(
                f"VCRCNNHead needs a ConfounderDictionary, got {type(dictionary).__name__}."
            )
        for name, value in (("feature_dim", feature_dim), ("num_classes", num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"VCRCNNHead {name} = {value!r} is invalid: must be >= 1.")
        dz = dictionary.feature_dim
        self.attention = NWGMAttention(feature_dim, dz, embed_dim or dz, normalize=normalize)
        self.context_classifier = nn.Linear(feature_dim + dz, num_classes)
        self.self_classifier = nn.Linear(feature_dim, num_classes)
        for lin in (self.context_classifier, self.self_classifier):
            nn.init.normal_(lin.weight, std=0.01)
            nn.init.zeros_(lin.bias)
        self.register_buffer("prototypes", dictionary.prototypes.clone())
        self.register_buffer("prior", dictionary.prior.clone())
        self.query_from = query_from
        self.pair_normalization = pair_normalization
        self.reduction = reduction

    def forward(
        self,
        region_features: torch.Tensor,
        region_labels: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return vc_rcnn_loss(
            region_features,
            region_labels,
            (self.prototypes, self.prior),
            attention=self.attention,
            context_classifier=self.context_classifier,
            self_classifier=self.self_classifier,
            query_from=self.query_from,
            pair_normalization=self.pair_normalization,
            reduction=self.reduction,
            mask=mask,
        )
