"""What :meth:`~causalvl.IntervenedModel.save_pretrained` keeps of the adapter, and how
:func:`causalvl.load` gets it back.

A built-in family's description is its frozen :class:`~causalvl.adapters.spec.AdapterSpec`, which
is code and never saved (the file records the family name). What an adapter *learns* is its
fitted state: the vision mean, one tensor per vision input, which the ``vision_mean`` /
``vision_fitted_mean`` input transforms read.

* A :class:`~causalvl.GenericAdapter` is described in ``intervention_config.json``
  (``"adapter_spec"``: its keys, roles and kind), so a model saved with one loads without
  passing the adapter again. A ``logits`` callable cannot be saved: loading then asks for the
  adapter, spelling out the arguments it was built with.
* The vision mean fitted with :meth:`~causalvl.adapters.ModelAdapter.fit_vision_mean` (used by
  ``PriorSubtractionConfig(mode="mean")``) is written to ``adapter_state.safetensors``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, UnsupportedModelError
from .base import GenericAdapter, ModelAdapter
from .registry import is_registered

ADAPTER_STATE_NAME = "adapter_state.safetensors"
_MEAN_PREFIX = "vision_mean."


def adapter_metadata(adapter: ModelAdapter) -> dict[str, Any]:
    """The ``"adapter"`` (and, for a generic adapter, ``"adapter_spec"``) entries of the
    saved config."""
    meta: dict[str, Any] = {"adapter": adapter.family or "generic"}
    if isinstance(adapter, GenericAdapter):
        meta["adapter_spec"] = adapter.to_dict()
    return meta


def save_adapter_state(adapter: ModelAdapter, directory: str | os.PathLike) -> None:
    """Write the adapter's fitted vision mean to ``adapter_state.safetensors`` (atomically);
    remove a stale file when there is none."""
    from safetensors.torch import save_file

    from ..config import atomic_destination

    path = Path(directory) / ADAPTER_STATE_NAME
    if not adapter.vision_mean:
        path.unlink(missing_ok=True)
        return
    tensors = {
        _MEAN_PREFIX + k: v.detach().cpu().float().contiguous().clone()
        for k, v in adapter.vision_mean.items()
    }
    with atomic_destination(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _constructor_call(spec: Mapping[str, Any]) -> str:
    args = [
        f"{k}={spec[k]!r}"
        for k in ("vision_keys", "language_keys", "roles", "kind", "vision_mask_key", "extra_keys")
        if spec.get(k) not in (None, [], {}, "classifier")
    ]
    return f"causalvl.GenericAdapter({', '.join(args)}, logits=...)"


def adapter_for_load(
    meta: Mapping[str, Any],
    model: nn.Module,
    adapter: ModelAdapter | str,
    config_path: str | os.PathLike,
) -> ModelAdapter | str:
    """The adapter :func:`causalvl.load` should use: the one passed, else the generic adapter
    described in the saved config, else ``"auto"``.

    Raises:
        CheckpointError: the saved adapter description is malformed.
        UnsupportedModelError: the model was saved with a generic adapter that cannot be
            rebuilt from the file (a custom ``logits`` callable, or a file without a
            description) and none was passed; the message says what to pass.
    """
    if not (isinstance(adapter, str) and adapter == "auto") or meta.get("adapter") != "generic":
        return adapter
    spec = meta.get("adapter_spec")
    if spec is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if is_registered(model_type) or is_registered(type(model).__name__):
            return adapter
        raise UnsupportedModelError(
            f"{config_path} was saved with a GenericAdapter and does not describe it; pass the "
            "adapter the model was wrapped with: causalvl.load(directory, model, "
            "adapter=causalvl.GenericAdapter(vision_keys=[...], language_keys=[...], "
            "roles={...}))."
        )
    if not isinstance(spec, Mapping):
        raise CheckpointError(f"{config_path}: 'adapter_spec' must be an object, got {spec!r}.")
    if spec.get("class") != GenericAdapter.__name__:
        raise UnsupportedModelError(
            f"{config_path} was saved with a {spec.get('class')!r} adapter (a GenericAdapter "
            "subclass), which cannot be rebuilt from the file; pass it: causalvl.load(directory, "
            f"model, adapter={spec.get('class')}(...))."
        )
    if spec.get("custom_logits"):
        raise UnsupportedModelError(
            f"{config_path} was saved with a GenericAdapter whose logits=... callable cannot be "
            "stored in a file; pass the adapter again: causalvl.load(directory, model, "
            f"adapter={_constructor_call(spec)})."
        )
    try:
        return GenericAdapter.from_dict(spec)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{config_path}: 'adapter_spec' is malformed: {exc}. Save the model again with "
            "save_pretrained, or pass the adapter: causalvl.load(directory, model, "
            "adapter=causalvl.GenericAdapter(...))."
        ) from exc


def restore_adapter_state(adapter: ModelAdapter, directory: str | os.PathLike) -> None:
    """Load ``adapter_state.safetensors`` (when present) into ``adapter.vision_mean``; a mean
    the adapter already holds (fitted before loading) is kept."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_STATE_NAME
    if not path.is_file() or adapter.vision_mean:
        return
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is corrupted or not a safetensors file: {exc}. Save the model again with "
            "save_pretrained, or delete the file and refit the mean with "
            "adapter.fit_vision_mean(batches) after loading."
        ) from exc
    mean: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith(_MEAN_PREFIX) or not value.is_floating_point():
            raise CheckpointError(
                f"{path}: unexpected entry {key!r} ({value.dtype}); the file holds the "
                f"floating '{_MEAN_PREFIX}<input key>' tensors written by save_pretrained; "
                "save the model again, or delete the file and refit with "
                "adapter.fit_vision_mean(batches)."
            )
        if value.dim() < 1 or value.shape[0] != 1 or not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{path}: {key!r} of shape {tuple(value.shape)} is not a finite (1, ...) mean; "
                "delete the file and refit with adapter.fit_vision_mean(batches)."
            )
        mean[key[len(_MEAN_PREFIX) :]] = value
    adapter.vision_mean = mean
