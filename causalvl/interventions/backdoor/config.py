"""Config of the backdoor adjustment (:class:`BackdoorConfig`, ``"backdoor"``).

The dictionary class (:class:`~causalvl.ConfounderDictionary`, torch) is imported only when a
config holds one.

Pure Python (no torch), so reading the config from JSON imports no tensor library; the
implementation is in :mod:`.intervention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ...config import InterventionConfig
from ...errors import ConfigError

if TYPE_CHECKING:
    from ..confounders import ConfounderDictionary
else:  # resolves the field's annotation without importing torch (validate checks the class)
    ConfounderDictionary = Any

__all__ = ["BackdoorConfig"]


@dataclass(kw_only=True)
class BackdoorConfig(InterventionConfig):
    """Backdoor adjustment of one feature of the model with a confounder dictionary.

    At ``target`` (a role such as ``"vision_features"`` or a module path), the module's output
    feature ``x`` ``(B, D)`` or ``(B, N, D)`` is combined with ``E_z[z]``, the NWGM expectation
    of the dictionary queried by ``x`` (or by a separate context feature). The adjustment is an
    edit hook active only during the wrapped forward.

    Args:
        target: role name or module path whose output feature is adjusted.
        dictionary: the :class:`~causalvl.ConfounderDictionary`. It is not written to the
            config JSON: its tensors are buffers of the intervention (saved by
            ``save_pretrained`` and restored by :func:`causalvl.load`), its shape is recorded in
            ``num_prototypes`` / ``feature_dim`` and its names in ``prototype_names``.
        num_prototypes, feature_dim: ``K`` and ``D_z`` of the dictionary; filled from
            ``dictionary``. Give them without a dictionary to build the wrapper first and call
            ``set_dictionary`` later (or to restore a saved one).
        input_dim: ``D`` of the target feature (default ``feature_dim``).
        embed_dim: ``E`` of the attention (default ``feature_dim``, as published).
        normalize: renormalise ``P(z) * alpha`` to sum to 1 (the published code does not; its
            expectation is then about ``1/K`` of a prototype at uniform attention).
        merge: how the expectation joins the feature (``combine`` before; the old name
            warns for one release): ``"residual"`` ``x + P(E_z[z])``; ``"concat_project"`` ``P([x; E_z[z]])``
            (the paper's ``f(x, E_z[z])``; ``P`` starts as the identity on ``x``);
            ``"replace"`` ``P(E_z[z])``. Default: ``"residual"``, or ``"replace"`` when
            ``regions="context"`` (the only choice there).
        project: learn the output projection ``P`` (``Linear``; ``N(0, 0.02)``, or the identity
            where input and output dimensions agree in ``"replace"``). ``False`` uses
            ``E_z[z]`` as is (needs ``feature_dim == input_dim``).
        query: ``"self"`` (the query is ``x``) or ``"context"`` (the query is the feature of
            ``query_target``, pooled to ``(B, query_dim)``; that module must run before the
            target).
        query_target: role or module path of the context feature for ``query="context"``.
        query_dim: its dimension (default ``input_dim``).
        regions: for region features ``(B, N, D)``: ``"all"`` adjusts every region with its own
            expectation; ``"context"`` keeps region ``target_index`` and replaces every other
            (observed context) region by the expectation queried by the target region.
        target_index: which region is the target in ``regions="context"`` (negative counts
            from the end).
        prototype_names: names of the prototypes (filled from ``dictionary``).

    Example:
        >>> import torch, causalvl
        >>> d = causalvl.ConfounderDictionary.from_tensors(torch.randn(10, 32))
        >>> cfg = causalvl.BackdoorConfig(target="vision_features", dictionary=d)
        >>> cfg.to_dict()["num_prototypes"], "dictionary" in cfg.to_dict()
        (10, False)
    """

    type = "backdoor"
    target: str = "vision_features"
    dictionary: ConfounderDictionary | None = field(
        default=None, repr=False, compare=False, metadata={"json": False}
    )
    num_prototypes: int | None = None
    feature_dim: int | None = None
    input_dim: int | None = None
    embed_dim: int | None = None
    normalize: bool = False
    merge: Literal["residual", "concat_project", "replace"] | None = None
    project: bool = True
    query: Literal["self", "context"] = "self"
    query_target: str | None = None
    query_dim: int | None = None
    regions: Literal["all", "context"] = "all"
    target_index: int = 0
    prototype_names: tuple[str, ...] = ()

    _renamed = {"combine": "merge"}

    def validate(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            self._fail("target", "must be a role name or module path, e.g. 'vision_features'")
        d = self.dictionary
        if d is not None:
            from ..confounders import ConfounderDictionary  # torch; only when one is given

            if not isinstance(d, ConfounderDictionary):
                raise ConfigError(
                    f"BackdoorConfig.dictionary must be a causalvl.ConfounderDictionary, got "
                    f"{type(d).__name__}; build one with ConfounderDictionary.from_class_means, "
                    "from_kmeans or from_tensors."
                )
            for name, value in (
                ("num_prototypes", d.num_prototypes),
                ("feature_dim", d.feature_dim),
            ):
                if getattr(self, name) is not None and getattr(self, name) != value:
                    self._fail(name, f"does not match the dictionary's {value}; leave it unset")
                self._normalise(name, value)
            self._normalise("prototype_names", tuple(d.names))
        if self.num_prototypes is None or self.feature_dim is None:
            raise ConfigError(
                "BackdoorConfig needs the confounder dictionary: pass "
                "dictionary=causalvl.ConfounderDictionary.from_class_means(features, labels) "
                "(or from_kmeans / from_tensors), or num_prototypes and feature_dim and call "
                "set_dictionary(d) on the intervention before the first forward."
            )
        self._check_int("num_prototypes", "feature_dim")
        for name in ("input_dim", "embed_dim", "query_dim"):
            if getattr(self, name) is not None:
                self._check_int(name)
        for name in ("normalize", "project"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "must be True or False")
        if self.merge is None:
            self._normalise("merge", "replace" if self.regions == "context" else "residual")
        if self.merge not in ("residual", "concat_project", "replace"):
            self._fail("merge", "choose 'residual', 'concat_project' or 'replace'")
        if self.regions == "context" and self.merge != "replace":
            self._fail(
                "merge",
                "regions='context' replaces the context regions by their expectation; "
                "use merge='replace' (or leave merge unset)",
            )
        if not self.project and self.merge == "concat_project":
            self._fail("project", "merge='concat_project' always projects; set project=True")
        in_dim = self.input_dim or self.feature_dim
        if not self.project and in_dim != self.feature_dim:
            self._fail(
                "project",
                f"without a projection the dictionary dimension ({self.feature_dim}) must equal "
                f"the target's input_dim ({in_dim}); set project=True",
            )
        if self.query == "context":
            if not isinstance(self.query_target, str) or not self.query_target:
                self._fail(
                    "query_target",
                    "query='context' needs the role or module path of the context feature, "
                    "e.g. query_target='language_features'",
                )
        elif self.query_target is not None:
            self._fail("query_target", "is only used with query='context'")
        if not isinstance(self.target_index, int) or isinstance(self.target_index, bool):
            self._fail("target_index", "must be an integer region index")
        if isinstance(self.prototype_names, str):
            self._fail("prototype_names", "must be a list of names")
        self._normalise("prototype_names", tuple(str(n) for n in self.prototype_names))
        if self.prototype_names and len(self.prototype_names) != self.num_prototypes:
            self._fail("prototype_names", f"must hold {self.num_prototypes} names")
