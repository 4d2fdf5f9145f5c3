"""Confounder dictionaries for backdoor adjustment: prototypes ``z_k`` and their prior ``P(z)``.

A :class:`ConfounderDictionary` holds ``K`` prototype features (one per confounder value, e.g.
the mean region feature of each object class, as in VC R-CNN) and a prior over them (e.g. how
often each class occurs). Build one from labelled features (:meth:`~ConfounderDictionary.
from_class_means`), from unlabelled features by k-means (:meth:`~ConfounderDictionary.
from_kmeans`) or from tensors you already have (:meth:`~ConfounderDictionary.from_tensors`);
collect the features by running a model over a data loader
(:meth:`~ConfounderDictionary.collect`).

    >>> import torch
    >>> feats = torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0]])
    >>> d = ConfounderDictionary.from_class_means(feats, torch.tensor([0, 0, 1]))
    >>> d.prototypes.tolist(), [round(p, 3) for p in d.prior.tolist()]
    ([[1.0, 1.0], [4.0, 4.0]], [0.667, 0.333])
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..config import atomic_destination, atomic_write_text
from ..errors import CheckpointError, ConfigError, DataError, InputError
from ..runtime import module_device

logger = logging.getLogger(__name__)

DICTIONARY_CONFIG = "confounders.json"
DICTIONARY_WEIGHTS = "confounders.safetensors"
_FORMAT = "causalvl.confounder_dictionary"


class FeatureCollection(NamedTuple):
    """Features collected by :meth:`ConfounderDictionary.collect`.

    Attributes:
        features: ``(N, D)`` pooled features, or ``(N, R, D)`` per-region features.
        labels: ``(N,)`` or ``(N, len(labels_key))`` labels, or ``None`` without labels.
    """

    features: torch.Tensor
    labels: torch.Tensor | None


def _as_tensor(name: str, value: Any, *, floating: bool) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}."
        )
    value = value.detach().cpu()
    if floating:
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise InputError(f"{name} must hold numbers, got dtype {value.dtype}.")
        value = value.to(torch.float32) if not value.is_floating_point() else value
    elif value.is_floating_point() or value.dtype == torch.bool:
        raise InputError(
            f"{name} must hold integer class ids, got dtype {value.dtype}; convert with .long()."
        )
    return value


class ConfounderDictionary:
    """``K`` confounder prototypes ``z_k`` of dimension ``D`` with a prior ``P(z)``.

    Args:
        prototypes: ``(K, D)`` floating tensor, one row per confounder value.
        prior: ``(K,)`` non-negative weights summing to 1 (default: uniform).
        names: ``K`` names (default: ``"z0"``, ``"z1"``, ...).

    Example:
        >>> import torch
        >>> d = ConfounderDictionary(torch.eye(3))
        >>> d.num_prototypes, d.feature_dim, d.prior.tolist()
        (3, 3, [0.3333333432674408, 0.3333333432674408, 0.3333333432674408])
    """

    def __init__(
        self,
        prototypes: torch.Tensor,
        prior: torch.Tensor | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        protos = _as_tensor("prototypes", prototypes, floating=True)
        if protos.dim() != 2 or protos.shape[0] < 1 or protos.shape[1] < 1:
            raise ConfigError(
                f"prototypes must have shape (K, D) with K, D >= 1, got {tuple(protos.shape)}."
            )
        if not torch.isfinite(protos).all():
            raise ConfigError("prototypes contain NaN or infinite values; clean the features.")
        k = protos.shape[0]
        if prior is None:
            p = torch.full((k,), 1.0 / k, dtype=torch.float32)
        else:
            p = _as_tensor("prior", prior, floating=True).to(torch.float32)
            if p.shape != (k,):
                raise ConfigError(
                    f"prior must have shape ({k},) to match {k} prototypes, got {tuple(p.shape)}."
                )
            if not torch.isfinite(p).all() or (p < 0).any():
                raise ConfigError(f"prior must be finite and non-negative, got {p.tolist()[:8]}.")
            total = float(p.sum())
            if abs(total - 1.0) > 1e-3:
                raise ConfigError(
                    f"prior sums to {total:.6g}, not 1; pass prior / prior.sum() "
                    "(P(z) is a probability distribution over the prototypes)."
                )
        if names is None:
            names = [f"z{i}" for i in range(k)]
        if isinstance(names, str) or len(names) != k:
            raise ConfigError(
                f"names must be a list of {k} strings (one per prototype), got {names!r:.80}."
            )
        self.prototypes = protos.contiguous()
        self.prior = p.contiguous()
        self.names = tuple(str(n) for n in names)

    # -- properties --------------------------------------------------------------------------
    @property
    def num_prototypes(self) -> int:
        """``K``, the number of prototypes."""
        return int(self.prototypes.shape[0])

    @property
    def feature_dim(self) -> int:
        """``D``, the prototype dimension."""
        return int(self.prototypes.shape[1])

    def __len__(self) -> int:
        return self.num_prototypes

    def __repr__(self) -> str:
        return (
            f"ConfounderDictionary(num_prototypes={self.num_prototypes}, "
            f"feature_dim={self.feature_dim}, names={list(self.names[:4])}"
            f"{'...' if self.num_prototypes > 4 else ''})"
        )

    # -- builders ----------------------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls,
        prototypes: torch.Tensor,
        prior: torch.Tensor | None = None,
        names: Sequence[str] | None = None,
    ) -> ConfounderDictionary:
        """A dictionary from tensors (or numpy arrays) you already have.

        Args:
            prototypes: ``(K, D)``.
            prior: ``(K,)`` summing to 1; default uniform.
            names: ``K`` names.

        Example:
            >>> import torch
            >>> ConfounderDictionary.from_tensors(torch.zeros(4, 8)).num_prototypes
            4
        """
        return cls(prototypes, prior, names)

    @classmethod
    def from_class_means(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        names: Sequence[str] | None = None,
        *,
        num_classes: int | None = None,
    ) -> ConfounderDictionary:
        """Per-class mean feature and class-frequency prior (the VC R-CNN recipe).

        Prototype ``k`` is the mean of the features labelled ``k``; ``P(z_k)`` is the fraction
        of labelled features of class ``k``. Negative labels (padding regions) are ignored.

        Args:
            features: ``(N, D)`` or per-region ``(N, R, D)``.
            labels: ``(N,)`` or ``(N, R)`` integer class ids.
            names: one name per class (default: the class ids as strings).
            num_classes: ``K`` (default: the largest label + 1). A class without any feature
                gets a zero prototype and zero prior, with a warning.

        Example:
            >>> import torch
            >>> d = ConfounderDictionary.from_class_means(
            ...     torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([1, 1, 0]))
            >>> d.prototypes.flatten().tolist(), d.prior.tolist(), d.names
            ([5.0, 2.0], [0.3333333432674408, 0.6666666865348816], ('0', '1'))
        """
        feats = _as_tensor("features", features, floating=True)
        labs = _as_tensor("labels", labels, floating=False).long()
        if feats.dim() < 2 or feats.shape[:-1] != labs.shape:
            raise InputError(
                f"features {tuple(feats.shape)} and labels {tuple(labs.shape)} do not match; "
                "expected features (N, D) with labels (N,), or (N, R, D) with (N, R)."
            )
        feats = feats.reshape(-1, feats.shape[-1]).double()
        labs = labs.reshape(-1)
        keep = labs >= 0
        feats, labs = feats[keep], labs[keep]
        if labs.numel() == 0:
            raise InputError("no labelled feature (all labels are negative or none given).")
        k = int(labs.max()) + 1 if num_classes is None else int(num_classes)
        if k < 1 or int(labs.max()) >= k:
            raise InputError(
                f"num_classes = {num_classes!r} but labels go up to {int(labs.max())}; "
                "pass num_classes larger than every label."
            )
        counts = torch.bincount(labs, minlength=k).double()
        sums = torch.zeros(k, feats.shape[1], dtype=torch.float64).index_add_(0, labs, feats)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            warnings.warn(
                f"classes {empty[:10]} have no feature; their prototypes are zero with prior 0.",
                UserWarning,
                stacklevel=2,
            )
        means = sums / counts.clamp_min(1.0).unsqueeze(1)
        prior = counts / counts.sum()
        if names is None:
            names = [str(i) for i in range(k)]
        return cls(means.float(), prior.float(), names)

    @classmethod
    def from_kmeans(
        cls,
        features: torch.Tensor,
        k: int,
        *,
        seed: int = 0,
        n_init: int = 4,
        max_iter: int = 300,
    ) -> ConfounderDictionary:
        """Cluster centres of k-means (scikit-learn) with the cluster-size prior, for features
        without labels.

        Args:
            features: ``(N, D)`` or ``(N, R, D)`` (regions are flattened).
            k: number of clusters ``K``.
            seed: k-means random state (the result is deterministic for a seed).
            n_init, max_iter: passed to :class:`sklearn.cluster.KMeans`.

        Example:
            >>> import torch
            >>> feats = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)])
            >>> sorted(ConfounderDictionary.from_kmeans(feats, 2, seed=0).prior.tolist())
            [0.5, 0.5]
        """
        from sklearn.cluster import KMeans

        feats = _as_tensor("features", features, floating=True)
        if feats.dim() < 2:
            raise InputError(f"features must be (N, D) or (N, R, D), got {tuple(feats.shape)}.")
        x = feats.reshape(-1, feats.shape[-1]).double().numpy()
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= x.shape[0]:
            raise ConfigError(
                f"k = {k!r} is invalid: must be an integer between 1 and the number of "
                f"features ({x.shape[0]})."
            )
        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init, max_iter=max_iter)
        assign = km.fit_predict(x)
        prior = np.bincount(assign, minlength=k).astype(np.float64) / len(assign)
        return cls(
            torch.from_numpy(km.cluster_centers_).float(),
            torch.from_numpy(prior).float(),
            [f"cluster{i}" for i in range(k)],
        )

    @staticmethod
    def collect(
        model_or_vl: nn.Module,
        loader: Iterable[Mapping[str, Any]],
        role: str,
        *,
        labels_key: str | Sequence[str] | None = "labels",
        adapter: Any = "auto",
        progress: bool = True,
        pool: bool = True,
        max_batches: int | None = None,
    ) -> FeatureCollection:
        """Run a model over a data loader and collect the features of one role.

        The model runs in eval mode under ``torch.no_grad`` (its modes are restored after),
        with one scoped capture hook that is removed afterwards, also on errors. For an
        :class:`~causalvl.IntervenedModel`, its base model and adapter are used (the features
        are the base model's, without interventions).

        Args:
            model_or_vl: a model an adapter knows, or an ``IntervenedModel``.
            loader: yields batches (mappings holding the model inputs and the labels).
            role: role name or module path, e.g. ``"vision_features"``.
            labels_key: the label key of each batch; a list of keys stacks them along dim 1
                (e.g. ``["labels", "context_class"]`` -> ``(N, 2)`` per-region labels);
                ``None`` collects no labels.
            adapter: ``"auto"``, a family name or a :class:`~causalvl.ModelAdapter` (ignored
                for an ``IntervenedModel``).
            progress: show a tqdm progress bar.
            pool: pool each feature to ``(B, D)`` with the adapter (``False`` keeps e.g.
                per-region ``(B, R, D)`` features).
            max_batches: stop after this many batches.

        Returns:
            FeatureCollection: ``features`` ``(N, D)`` (or ``(N, R, D)``) float32 on CPU, and
            ``labels`` ``(N,)`` / ``(N, len(labels_key))`` or ``None``.

        Example:
            >>> import torch, causalvl
            >>> net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8)
            >>> batches = [{"pixel_values": torch.rand(4, 3, 8, 8),
            ...             "input_ids": torch.randint(1, 20, (4, 5)),
            ...             "labels": torch.tensor([0, 1, 0, 1])}]
            >>> feats, labels = ConfounderDictionary.collect(
            ...     net, batches, "vision_features", progress=False)
            >>> ConfounderDictionary.from_class_means(feats, labels).prototypes.shape
            torch.Size([2, 64])
        """
        from ..adapters.base import ModelAdapter, get_adapter
        from ..hooks import HookManager, get_primary
        from ..progress import progress_bar

        # a wrapped model (causalvl.IntervenedModel) is recognised by what it holds, so this
        # module does not import the wrapper that is built on top of it
        wrapped_base = getattr(model_or_vl, "base_model", None)
        wrapped_adapter = getattr(model_or_vl, "adapter", None)
        if isinstance(wrapped_base, nn.Module) and isinstance(wrapped_adapter, ModelAdapter):
            base, bound = wrapped_base, wrapped_adapter
        else:
            if not isinstance(model_or_vl, nn.Module):
                raise InputError(
                    f"collect needs an nn.Module or an IntervenedModel, got "
                    f"{type(model_or_vl).__name__}."
                )
            base, bound = model_or_vl, get_adapter(model_or_vl, adapter)
        path, module = bound.resolve(role, base)
        keys = [labels_key] if isinstance(labels_key, str) else list(labels_key or [])
        device = module_device(base)
        feats: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        store: dict[str, torch.Tensor] = {}

        def _capture(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            store["feature"] = get_primary(output)

        modes = {m: m.training for m in base.modules()}
        base.eval()
        try:
            with HookManager() as hooks, torch.no_grad():
                hooks.add_forward_hook(module, _capture)
                bar = progress_bar(loader, enabled=progress, desc=f"collecting {role}")
                for step, batch in enumerate(bar):
                    if max_batches is not None and step >= max_batches:
                        break
                    if not isinstance(batch, Mapping):
                        raise InputError(
                            f"the loader yielded a {type(batch).__name__}; it must yield "
                            "mappings of input names to tensors."
                        )
                    inputs = {
                        k: v.to(device) if isinstance(v, torch.Tensor) else v
                        for k, v in bound.model_inputs(batch).items()
                    }
                    store.clear()
                    base(**inputs)
                    if "feature" not in store:
                        raise InputError(
                            f"module {path!r} (role {role!r}) did not run in the forward pass; "
                            "pick a role the model computes."
                        )
                    f = store["feature"]
                    f = bound.pool(role, f, inputs) if pool else f
                    feats.append(f.detach().float().cpu())
                    if keys:
                        missing = [k for k in keys if k not in batch]
                        if missing:
                            raise DataError(
                                f"batch has no label key(s) {missing}; its keys are "
                                f"{sorted(batch)}. Pass labels_key=... or None."
                            )
                        parts = [torch.as_tensor(batch[k]).long().cpu() for k in keys]
                        labels.append(
                            parts[0] if isinstance(labels_key, str) else torch.stack(parts, 1)
                        )
        finally:
            for m, mode in modes.items():
                m.training = mode
        if not feats:
            raise DataError("the loader yielded no batch; nothing was collected.")
        features = torch.cat(feats)
        logger.info(
            "collected %d features of role %r, shape %s", len(features), role, features.shape
        )
        return FeatureCollection(features, torch.cat(labels) if keys else None)

    # -- save / load -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``confounders.safetensors`` (tensors) and ``confounders.json`` (shape, names),
        both atomically. Returns the directory.

        Example:
            >>> import tempfile, torch
            >>> d = ConfounderDictionary(torch.eye(2), names=["cat", "dog"])
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     ConfounderDictionary.load(d.save(tmp)).names
            ('cat', 'dog')
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_destination(directory / DICTIONARY_WEIGHTS) as tmp:
            save_file(
                {"prototypes": self.prototypes.contiguous(), "prior": self.prior.contiguous()},
                str(tmp),
                metadata={"format": _FORMAT, "causalvl_version": __version__},
            )
        meta = {
            "format": _FORMAT,
            "causalvl_version": __version__,
            "num_prototypes": self.num_prototypes,
            "feature_dim": self.feature_dim,
            "names": list(self.names),
        }
        atomic_write_text(directory / DICTIONARY_CONFIG, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ConfounderDictionary:
        """Read a dictionary written by :meth:`save` (never unpickles).

        Raises:
            CheckpointError: a file is missing, corrupted, or the two files disagree.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, w_path = directory / DICTIONARY_CONFIG, directory / DICTIONARY_WEIGHTS
        for path in (meta_path, w_path):
            if not path.is_file():
                raise CheckpointError(
                    f"{path} is missing; a saved confounder dictionary folder holds "
                    f"{DICTIONARY_CONFIG} and {DICTIONARY_WEIGHTS} (write them with .save(dir))."
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            k, d, names = int(meta["num_prototypes"]), int(meta["feature_dim"]), meta["names"]
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {_FORMAT!r}")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise CheckpointError(
                f"{meta_path} is corrupted or not a confounder dictionary: {exc}. "
                "Re-create it with ConfounderDictionary.save(dir)."
            ) from exc
        try:
            tensors = load_file(str(w_path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{w_path} is corrupted or not a safetensors file: {exc}. "
                "Re-create it with ConfounderDictionary.save(dir)."
            ) from exc
        if set(tensors) != {"prototypes", "prior"}:
            raise CheckpointError(
                f"{w_path} holds tensors {sorted(tensors)}; expected ['prior', 'prototypes']."
            )
        if tuple(tensors["prototypes"].shape) != (k, d) or tuple(tensors["prior"].shape) != (k,):
            raise CheckpointError(
                f"{w_path} holds prototypes {tuple(tensors['prototypes'].shape)} and prior "
                f"{tuple(tensors['prior'].shape)}, but {meta_path.name} says ({k}, {d}); the "
                "files come from different dictionaries."
            )
        try:
            return cls(tensors["prototypes"], tensors["prior"], names)
        except ConfigError as exc:
            raise CheckpointError(f"{directory} holds an invalid dictionary: {exc}") from exc
