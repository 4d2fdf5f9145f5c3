"""Config of causal attention (:class:`CATTConfig`, ``"catt"``).

The dictionary class (:class:`~causalvl.ConfounderDictionary`, torch) is imported only when a
config holds one.

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ...config import InterventionConfig
from ...errors import ConfigError

if TYPE_CHECKING:
    from ..confounders import ConfounderDictionary
else:  # resolves the field's annotation without importing torch (validate checks the class)
    ConfounderDictionary = Any

#: the official dictionary size of VQA fine-tuning is 800, of pre-training 500
DEFAULT_DICTIONARY_SIZE = 500

__all__ = ["CATTConfig", "DEFAULT_DICTIONARY_SIZE"]


@dataclass(kw_only=True)
class CATTConfig(InterventionConfig):
    """Causal attention (CATT, Yang et al. 2021): in-sample plus cross-sample attention, fused.

    The wrapped blocks' outputs become ``fuse([IS ; CS])`` with ``fuse = Linear(2H -> H)``;
    ``CS`` attends from the sample's hidden states to the dictionary ``M`` (first CATT layer)
    or to the previous CATT layer's CS stream (later layers). See :mod:`causalvl.interventions.catt`.

    Args:
        target: role (``"attention_layers"``; LXMERT also ``"vision_attention_layers"``) or
            full-match regex of the BERT-style attention blocks to wrap.
        layers: which of the matched blocks carry CATT (Python indices in module order);
            default: the last one (the official ``ft_large=0`` puts CS only in the last
            language and relation layer).
        dictionary_size: ``K`` rows of ``M`` (official: 500 pre-training, 800 VQA); taken from
            ``dictionary`` when one is given.
        dictionary: a :class:`~causalvl.ConfounderDictionary` whose prototypes ``(K, H)``
            initialise ``M`` (the official k-means path); ``None``: ``rand(K, H) / 100``.
            Not written to the JSON; ``M`` is saved with the weights.
        share_weights: the CS block reuses the wrapped block's projections and output
            (official ``'ft_same'``); ``False`` gives it its own copy (``'ft'``).
        cs_init: own CS blocks start as a ``"copy"`` of the wrapped block's weights (the
            duplicate of a pretrained layer) or ``"random"`` (seeded default init).
        fusion_init: ``"identity"`` starts ``fuse`` at ``[I | 0]`` (zero bias), so the wrapped
            model is unchanged until training moves it; ``"random"`` is PyTorch's default
            ``nn.Linear`` init (the official code).
        init_seed: seeds ``M`` and every random init (a private generator); ``None`` draws
            them from the global RNG.

    Example:
        >>> CATTConfig(dictionary_size=800, layers=(-2, -1)).to_dict()["layers"]
        [-2, -1]
    """

    type = "catt"
    target: str = "attention_layers"
    layers: tuple[int, ...] = (-1,)
    dictionary_size: int | None = None
    dictionary: ConfounderDictionary | None = field(
        default=None, repr=False, compare=False, metadata={"json": False}
    )
    share_weights: bool = False
    cs_init: Literal["copy", "random"] = "copy"
    fusion_init: Literal["identity", "random"] = "identity"
    init_seed: int | None = 0

    def validate(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            self._fail("target", "must be a role name or regex, e.g. 'attention_layers'")
        if (
            isinstance(self.layers, (str, bytes))
            or not isinstance(self.layers, Sequence)
            or not self.layers
            or any(not isinstance(i, int) or isinstance(i, bool) for i in self.layers)
        ):
            self._fail("layers", "must be a non-empty list of block indices, e.g. (-1,)")
        self._normalise("layers", tuple(self.layers))
        if len(set(self.layers)) != len(self.layers):
            self._fail("layers", "lists a block twice")
        d = self.dictionary
        if d is not None:
            from ..confounders import ConfounderDictionary  # torch; only when one is given

            if not isinstance(d, ConfounderDictionary):
                raise ConfigError(
                    f"CATTConfig.dictionary must be a causalvl.ConfounderDictionary, got "
                    f"{type(d).__name__}; build one with ConfounderDictionary.from_kmeans / "
                    "from_class_means / from_tensors."
                )
            if self.dictionary_size is not None and self.dictionary_size != d.num_prototypes:
                self._fail(
                    "dictionary_size",
                    f"does not match the dictionary's {d.num_prototypes} prototypes; leave it unset",
                )
            self._normalise("dictionary_size", d.num_prototypes)
        if self.dictionary_size is None:
            self._normalise("dictionary_size", DEFAULT_DICTIONARY_SIZE)
        self._check_int("dictionary_size")
        if not isinstance(self.share_weights, bool):
            self._fail("share_weights", "must be True or False")
        if self.share_weights and self.cs_init != "copy":
            self._fail("cs_init", "share_weights=True uses the wrapped block itself; keep 'copy'")
