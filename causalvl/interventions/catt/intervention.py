"""CATT: causal attention by front-door adjustment (Yang et al., CVPR 2021).

Each wrapped attention block keeps its ordinary **in-sample** attention (IS-Att: queries, keys
and values from the sample) and gains a **cross-sample** attention (CS-Att) whose queries come
from the sample but whose keys and values come from outside it:

* in the first CATT layer of a forward pass, from a global dictionary ``M`` ``(K, H)``
  (learned, initialised ``rand / 100`` as in the official code, or from a
  :class:`~causalvl.ConfounderDictionary`), with no mask;
* in every later CATT layer, from the previous CATT layer's cross-sample output stream, masked
  like the sample.

The two are fused by ``Linear(2H -> H)`` on the concatenation ``[IS ; CS]``, which becomes the
block's output. Following ``src/lxrt/modeling.py`` of yangxuntu/lxmertcatt, the CS block has
the structure of the wrapped block (BERT-style: ``query`` / ``key`` / ``value`` projections,
then ``LayerNorm(dense(context) + x)``), either as its own copy (``share_weights=False``, the
official ``'ft'``) or sharing the wrapped block's weights (``share_weights=True``,
``'ft_same'``).

Blocks are found through the adapter role ``attention_layers`` (LXMERT: the language layers;
``vision_attention_layers``: its relation layers; VisualBERT: the encoder layers) or any role
or full-match regex naming BERT-style attention blocks (``GenericAdapter(roles=...)``).

Example:
    >>> import torch, causalvl
    >>> from transformers import BertConfig, BertModel
    >>> bert = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2,
    ...                             num_attention_heads=2, intermediate_size=16))
    >>> adapter = causalvl.GenericAdapter(
    ...     vision_keys=[], language_keys=["input_ids"], logits=lambda o: o.pooler_output,
    ...     roles={"attention_layers": r"encoder\\.layer\\.\\d+\\.attention"})
    >>> vl = causalvl.intervene(bert, causalvl.CATTConfig(dictionary_size=4), adapter=adapter)
    >>> vl(input_ids=torch.randint(0, 30, (2, 5))).logits.shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...adapters.base import ModelAdapter
from ...errors import ConfigError, InputError, NoMatchingModuleError, UnsupportedModelError
from ...hooks import HookManager, get_primary, replace_primary
from ...runtime import module_dtype_device
from ..base import ForwardState, HookContext, Intervention, implements
from ..confounders import ConfounderDictionary
from .config import DEFAULT_DICTIONARY_SIZE, CATTConfig  # noqa: F401  (also importable from here)

__all__ = [
    "CATTConfig",
    "CausalAttention",
    "CrossSampleAttention",
    "cross_sample_attention",
    "find_attention_blocks",
]


def cross_sample_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    query: nn.Module,
    key: nn.Module,
    value: nn.Module,
    num_heads: int,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Multi-head attention with queries from the sample and keys / values from ``memory``.

    ``softmax(q(x) k(M)^T / sqrt(d) + mask) v(M)`` per head, heads concatenated (the context
    before the output projection). ``memory`` is ``(K, H)`` (a dictionary shared by the batch)
    or ``(B, K, H)`` (a per-example stream).

    Args:
        x: ``(B, L, H)`` the sample's hidden states (queries).
        memory: ``(K, H)`` or ``(B, K, H)`` keys and values.
        query, key, value: the projections ``H -> H``.
        num_heads: heads; ``H`` must be divisible by it.
        mask: additive ``(B, 1, 1, K)`` / ``(B, 1, L, K)`` mask, or a bool one (True = keep).
        dropout: dropout on the attention probabilities (training only).

    Returns:
        ``(B, L, H)``.

    Example:
        >>> eye = torch.nn.Linear(2, 2, bias=False); _ = torch.nn.init.eye_(eye.weight)
        >>> m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> cross_sample_attention(torch.tensor([[[1.0, 0.0]]]), m, eye, eye, eye, 1).round(decimals=4)
        tensor([[[0.6698, 0.3302]]], grad_fn=<RoundBackward1>)
    """
    if x.dim() != 3:
        raise InputError(f"cross_sample_attention: x must be (B, L, H), got {tuple(x.shape)}.")
    b, length, _ = x.shape
    if memory.dim() == 2:
        memory = memory.unsqueeze(0).expand(b, *memory.shape)
    if memory.dim() != 3 or memory.shape[0] != b:
        raise InputError(
            f"cross_sample_attention: memory must be (K, H) or ({b}, K, H), got "
            f"{tuple(memory.shape)}."
        )
    q, k, v = query(x), key(memory), value(memory)
    width = q.shape[-1]
    if width % num_heads:
        raise ConfigError(f"hidden size {width} is not divisible by num_heads = {num_heads}.")
    d = width // num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], num_heads, d).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(scores).masked_fill(~mask, torch.finfo(scores.dtype).min)
        scores = scores + mask.to(scores.dtype)
    probs = F.softmax(scores, dim=-1)
    if dropout and training:
        probs = F.dropout(probs, p=dropout, training=True)
    out = probs @ heads(v)  # (B, heads, L, d)
    return out.transpose(1, 2).reshape(b, length, width)


@dataclass(frozen=True)
class _BlockParts:
    """The pieces of a BERT-style attention block CATT reads."""

    path: str
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    dense: nn.Linear
    norm: nn.LayerNorm
    num_heads: int
    attention_dropout: float
    hidden_dropout: float


def _block_parts(path: str, block: nn.Module) -> _BlockParts:
    """``block.self.{query,key,value}`` + ``block.output.{dense,LayerNorm}`` (BERT, LXMERT,
    VisualBERT, ViLT ...)."""
    att = getattr(block, "self", None)
    out = getattr(block, "output", None)
    lins = [getattr(att, n, None) for n in ("query", "key", "value")]
    dense = getattr(out, "dense", None)
    norm = getattr(out, "LayerNorm", None)
    heads = getattr(att, "num_attention_heads", None)
    if (
        not all(isinstance(m, nn.Linear) for m in (*lins, dense))
        or not isinstance(norm, nn.LayerNorm)
        or not isinstance(heads, int)
    ):
        raise UnsupportedModelError(
            f"CATT wraps BERT-style attention blocks (a module with .self.query/.key/.value "
            f"nn.Linear, .self.num_attention_heads and .output.dense / .output.LayerNorm); "
            f"{path!r} is a {type(block).__name__}. Point CATTConfig.target at such blocks, "
            r"e.g. roles={'attention_layers': r'encoder\.layer\.\d+\.attention'}."
        )
    q, k, v = lins
    if {q.in_features, q.out_features, k.in_features, v.in_features, dense.out_features} != {
        q.in_features
    }:
        raise UnsupportedModelError(
            f"CATT needs a self-attention block with equal widths (H -> H); {path!r} maps "
            f"{k.in_features} -> {q.out_features} (a cross-attention block?)."
        )

    def p_of(mod: Any) -> float:
        drop = getattr(mod, "dropout", None)
        return float(drop.p) if isinstance(drop, nn.Dropout) else 0.0

    return _BlockParts(path, q, k, v, dense, norm, heads, p_of(att), p_of(out))


def find_attention_blocks(
    model: nn.Module, target: str, adapter: ModelAdapter | None = None
) -> list[tuple[str, nn.Module]]:
    """Every module ``target`` names, in module order: a role of ``adapter`` whose path is an
    exact module path or a full-match regex, or such a path / regex itself.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> bert = BertModel(BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
        ...                             intermediate_size=16))
        >>> [p for p, _ in find_attention_blocks(bert, r"encoder\\.layer\\.\\d+\\.attention")]
        ['encoder.layer.0.attention', 'encoder.layer.1.attention']
    """
    roles = dict(adapter.roles) if adapter is not None else {}
    path = roles.get(target, target)
    if not isinstance(path, str) or not path:
        raise ConfigError(f"CATT target {target!r} maps to {path!r}; pass a role or a regex.")
    names = [(n, m) for n, m in model.named_modules() if n]
    exact = [(n, m) for n, m in names if n == path]
    if exact:
        return exact
    try:
        pattern = re.compile(path)
    except re.error as exc:
        raise ConfigError(f"CATT target {path!r} is not a valid regex ({exc}).") from exc
    found = [(n, m) for n, m in names if pattern.fullmatch(n)]
    if not found:
        family = getattr(adapter, "family", None) or "generic"
        raise NoMatchingModuleError(
            f"CATT target {target!r} ({path!r}) matched no module of {type(model).__name__}. "
            f"Adapter {family!r} roles: {', '.join(sorted(roles)) or '(none)'}. Name the "
            "attention blocks with a role, e.g. GenericAdapter(roles={'attention_layers': "
            r"r'encoder\.layer\.\d+\.attention'})."
        )
    return found


class CrossSampleAttention(nn.Module):
    """A CS-Att block of the wrapped block's shape: ``LayerNorm(dropout(dense(att)) + x)`` with
    ``att`` = :func:`cross_sample_attention`.

    Args:
        hidden: ``H``. num_heads: heads. attention_dropout / hidden_dropout: dropout rates.
        eps: the LayerNorm epsilon.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        ctx = cross_sample_attention(
            x,
            memory,
            self.query,
            self.key,
            self.value,
            self.num_heads,
            mask,
            self.attention_dropout,
            self.training,
        )
        return self.LayerNorm(self.dropout(self.dense(ctx)) + x)


def _shared_cs(
    parts: _BlockParts, training: bool
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """The ``'ft_same'`` CS block: the wrapped block's own weights, called functionally."""

    def run(x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx = cross_sample_attention(
            x,
            memory,
            parts.query,
            parts.key,
            parts.value,
            parts.num_heads,
            mask,
            parts.attention_dropout,
            training,
        )
        h = F.dropout(parts.dense(ctx), p=parts.hidden_dropout, training=training)
        return parts.norm(h + x)

    return run


def _seeded_uniform_(module: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.in_features)
                for p in (sub.weight, sub.bias):
                    if p is not None:
                        draw = torch.empty(p.shape).uniform_(-bound, bound, generator=gen)
                        p.copy_(draw.to(p.dtype))


@implements(CATTConfig)
class CausalAttention(Intervention):
    """Implementation of :class:`CATTConfig`: forward hooks on the selected attention blocks.

    Parameters: ``memory`` ``(K, H)`` (the dictionary ``M``), ``cs_blocks`` (one
    :class:`CrossSampleAttention` per CATT layer; empty with ``share_weights``) and ``fuse``
    (one ``Linear(2H, H)`` per CATT layer). All follow the base model's dtype and device.

    The last CATT layer's cross-sample stream of the factual pass is exposed as
    ``output.features["catt_cross_sample"]`` ``(B, L, H)``.
    """

    def __init__(self, config: CATTConfig, model: nn.Module, adapter: ModelAdapter) -> None:
        super().__init__(config, model, adapter)
        dtype, device = module_dtype_device(model)
        found = find_attention_blocks(model, config.target, adapter)
        n = len(found)
        bad = [i for i in config.layers if not -n <= i < n]
        if bad:
            raise ConfigError(
                f"CATTConfig.layers = {config.layers} selects blocks {bad}, but target "
                f"{config.target!r} matched only {n} block(s): "
                f"{', '.join(p for p, _ in found[:6])}."
            )
        chosen = sorted({i % n for i in config.layers})
        if len(chosen) != len(config.layers):
            raise ConfigError(f"CATTConfig.layers = {config.layers} names the same block twice.")
        self.parts = [_block_parts(*found[i]) for i in chosen]
        self.block_paths = [p.path for p in self.parts]
        widths = {p.query.in_features for p in self.parts}
        if len(widths) != 1:
            raise UnsupportedModelError(
                f"the CATT blocks {self.block_paths} have different widths {sorted(widths)}; "
                "wrap one stream per CATTConfig (e.g. language and vision layers separately)."
            )
        hidden = widths.pop()
        self.hidden = hidden
        seed = config.init_seed
        gen = torch.default_generator if seed is None else torch.Generator().manual_seed(seed)
        k = int(config.dictionary_size)  # type: ignore[arg-type]
        self.memory = nn.Parameter(torch.rand(k, hidden, generator=gen) / 100)
        self.cs_blocks = nn.ModuleList()
        if not config.share_weights:
            for p in self.parts:
                with torch.random.fork_rng(devices=[]):  # default-init draws are discarded
                    cs = CrossSampleAttention(
                        hidden, p.num_heads, p.attention_dropout, p.hidden_dropout, p.norm.eps
                    )
                if config.cs_init == "copy":
                    with torch.no_grad():
                        for mine, theirs in (
                            (cs.query, p.query),
                            (cs.key, p.key),
                            (cs.value, p.value),
                            (cs.dense, p.dense),
                            (cs.LayerNorm, p.norm),
                        ):
                            mine.load_state_dict(
                                {k_: v.detach().float() for k_, v in theirs.state_dict().items()}
                            )
                else:
                    _seeded_uniform_(cs, gen)
                self.cs_blocks.append(cs)
        self.fuse = nn.ModuleList()
        for _ in self.parts:
            with torch.random.fork_rng(devices=[]):
                lin = nn.Linear(2 * hidden, hidden)
            if config.fusion_init == "identity":
                with torch.no_grad():
                    lin.weight.zero_()
                    lin.weight[:, :hidden] = torch.eye(hidden)
                    lin.bias.zero_()
            else:
                _seeded_uniform_(lin, gen)
            self.fuse.append(lin)
        self.to(device=device, dtype=dtype)
        self._modules_by_path = dict(found)
        if config.dictionary is not None:
            self.set_dictionary(config.dictionary)
            # M holds the prototypes now; the config keeps no runtime tensors
            self.config = config.replace(dictionary=None)

    def set_dictionary(self, dictionary: ConfounderDictionary) -> None:
        """Initialise ``M`` from a dictionary's prototypes ``(K, H)`` (shapes must match).

        Example:
            >>> # vl.interventions["0_catt"].set_dictionary(ConfounderDictionary.from_kmeans(feats, 8))
        """
        if not isinstance(dictionary, ConfounderDictionary):
            raise ConfigError(
                f"set_dictionary expects a ConfounderDictionary, got {type(dictionary).__name__}."
            )
        shape = tuple(self.memory.shape)
        if (dictionary.num_prototypes, dictionary.feature_dim) != shape:
            raise ConfigError(
                f"the dictionary has shape ({dictionary.num_prototypes}, "
                f"{dictionary.feature_dim}) but CATT's M is {shape} (dictionary_size, hidden "
                "size of the wrapped blocks); collect the prototypes from the hidden states "
                "entering those blocks."
            )
        with torch.no_grad():
            self.memory.copy_(dictionary.prototypes.to(self.memory))

    def _cs(
        self, i: int, training: bool
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
        if self.config.share_weights:
            return _shared_cs(self.parts[i], training)
        return self.cs_blocks[i]

    def install(self, hooks: HookManager, context: HookContext) -> None:
        store = context.storage(self)  # this call only: the stream between blocks, the factual cs
        store["stream"] = None
        training = self.training

        for i, parts in enumerate(self.parts):
            module = self._modules_by_path[parts.path]

            def _causalvl_catt(mod: nn.Module, args: Any, kwargs: Any, out: Any, i: int = i) -> Any:
                if args:
                    x = args[0]
                    mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
                else:
                    x = kwargs.get("hidden_states", kwargs.get("input_tensor"))
                    mask = kwargs.get("attention_mask")
                if not isinstance(x, torch.Tensor) or x.dim() != 3:
                    raise InputError(
                        f"CATT block {self.parts[i].path!r} was called without (B, L, H) hidden "
                        "states as its first argument; wrap a self-attention block."
                    )
                stream = store["stream"]
                if stream is None or stream[0] >= i:  # first CATT layer of this pass
                    memory, kv_mask = self.memory.to(x.dtype), None
                else:
                    memory, kv_mask = stream[1], stream[2]
                if not isinstance(mask, torch.Tensor):
                    mask = None
                cs = self._cs(i, training)(x, memory, kv_mask)
                store["stream"] = (i, cs, mask)
                if context.is_factual:  # not a counterfactual pass
                    store["factual"] = cs
                in_sample = get_primary(out)
                fused = self.fuse[i](torch.cat([in_sample, cs.to(in_sample.dtype)], dim=-1))
                return replace_primary(out, fused)

            hooks.add_forward_hook(module, _causalvl_catt)

    def combine(self, state: ForwardState) -> None:
        cs = state.context.storage(self).get("factual")
        if cs is not None:
            name = "catt_cross_sample"
            while name in state.features:  # a second CATT intervention gets a suffix
                name += "'"
            state.features[name] = cs

    def extra_repr(self) -> str:
        return (
            f"type='catt', blocks={self.block_paths}, K={self.memory.shape[0]}, "
            f"H={self.hidden}, share_weights={self.config.share_weights}"
        )
