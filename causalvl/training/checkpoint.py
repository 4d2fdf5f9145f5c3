"""Training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint is a folder::

    last/                      (or best/)
      model.safetensors        the model's state_dict
      optimizer.safetensors    every tensor of the optimizer state, flattened
      extra.safetensors        RNG states and any other tensors (objective parameters, ...)
      checkpoint.json          the index: the non-tensor structure of the optimizer state
                               (with references to the flattened tensors), epoch, step,
                               scheduler / GradScaler state, metrics history, the config

Writes are atomic: everything goes to a fresh temporary folder next to the target, each file
is fsync'ed, ``checkpoint.json`` is written last, and only then is the folder renamed into
place (the previous folder is moved aside first and deleted after the rename). A crash at any
point leaves either the previous checkpoint or the new one loadable: :func:`load_checkpoint`
falls back to the moved-aside copy when the rename did not complete.

Nested structures (``optimizer.state_dict()``) are encoded by :func:`flatten_state`: tensors
become ``{"__tensor__": "<key>"}`` references; dicts with non-string keys, tuples and other
non-JSON containers get small tagged forms. Only tensors, numbers, strings, bools, ``None``,
lists, tuples and dicts are accepted, so loading never runs code.

    >>> import torch
    >>> tree, tensors = flatten_state({"state": {0: {"step": torch.tensor(3.0)}}, "groups": [(0.9, 0.99)]})
    >>> tree["state"]
    {'__dict__': [[0, {'step': {'__tensor__': 'state.0.step'}}]]}
    >>> unflatten_state(tree, tensors)["groups"]
    [(0.9, 0.99)]
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import CheckpointError

logger = logging.getLogger(__name__)

INDEX_NAME = "checkpoint.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
EXTRA_NAME = "extra.safetensors"
FORMAT_VERSION = 1


# -- nested state <-> (JSON tree, flat tensors) -----------------------------------------------
def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-ready tree and a flat ``{key: tensor}`` dict.

    Raises:
        CheckpointError: the structure holds a value that is neither a tensor nor plain data.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = path or "tensor"
            while key in tensors:
                key += "_"
            tensors[key] = value.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(value, float) and not math.isfinite(value):
            return {"__float__": repr(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}".lstrip(".")) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}.{i}".lstrip(".")) for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: enc(v, f"{path}.{k}".lstrip(".")) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise CheckpointError(
                        f"cannot save a dict key {k!r} of type {type(k).__name__} at {path!r}; "
                        "checkpoint state may only use str or int keys."
                    )
                items.append([k, enc(v, f"{path}.{k}".lstrip("."))])
            return {"__dict__": items}
        raise CheckpointError(
            f"cannot save a value of type {type(value).__name__} at {path or '<root>'!r} in a "
            "checkpoint; only tensors, numbers, strings, bools, None, lists, tuples and dicts "
            "are stored (no pickle)."
        )

    return enc(obj, prefix), tensors


def unflatten_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def dec(node: Any) -> Any:
        if isinstance(node, list):
            return [dec(v) for v in node]
        if isinstance(node, dict):
            if set(node) == {"__tensor__"}:
                key = node["__tensor__"]
                if key not in tensors:
                    raise CheckpointError(f"checkpoint index refers to a missing tensor {key!r}.")
                return tensors[key]
            if set(node) == {"__tuple__"}:
                return tuple(dec(v) for v in node["__tuple__"])
            if set(node) == {"__float__"}:
                return float(node["__float__"])
            if set(node) == {"__dict__"}:
                return {k: dec(v) for k, v in node["__dict__"]}
            return {k: dec(v) for k, v in node.items()}
        return node

    return dec(tree)


# -- file helpers -----------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` as a safetensors file and fsync it."""
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata={"format": "pt", "causalvl_version": __version__})
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON and fsync it."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete.")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupted or not a safetensors file: {exc}") from exc


# -- checkpoint -------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """The content of a checkpoint folder.

    Attributes:
        model: the model's ``state_dict`` (CPU tensors).
        optimizer: the optimizer's ``state_dict`` (or ``None``).
        extra_tensors: other named tensors: RNG states (``rng/torch_cpu``,
            ``rng/torch_cuda/<i>``, ``rng/data``, per-rank states ``rng/torch_cpu/rank<r>``),
            objective parameters (``objective/<name>``).
        state: JSON-ready training state: ``epoch`` (epochs completed), ``step`` (global
            steps taken), scheduler / scaler state, metrics history, best-so-far, config.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(directory: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``directory`` atomically (see the module docstring).

    Args:
        directory: the target folder, e.g. ``run/last``; its parent is created if needed.
        checkpoint: what to write.

    Returns:
        The target folder.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> _ = save_checkpoint(f"{d}/last", Checkpoint(model={"w": torch.ones(2)}, state={"epoch": 1}))
        >>> load_checkpoint(f"{d}/last").state["epoch"]
        1
    """
    target = Path(directory)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    try:
        model = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint.model.items()}
        write_tensors(tmp / MODEL_NAME, model)
        opt_tree = None
        if checkpoint.optimizer is not None:
            opt_tree, opt_tensors = flatten_state(checkpoint.optimizer)
            write_tensors(tmp / OPTIMIZER_NAME, opt_tensors)
        extra = {
            k: v.detach().cpu().contiguous().clone() for k, v in checkpoint.extra_tensors.items()
        }
        write_tensors(tmp / EXTRA_NAME, extra)
        state_tree, state_tensors = flatten_state(checkpoint.state)
        if state_tensors:
            raise CheckpointError(
                f"checkpoint state must be plain data; put tensors {sorted(state_tensors)[:3]} in "
                "extra_tensors."
            )
        index = {
            "format_version": FORMAT_VERSION,
            "causalvl_version": __version__,
            "optimizer": opt_tree,
            "state": state_tree,
        }
        write_json(tmp / INDEX_NAME, index)
        _fsync_dir(tmp)
        old = parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("checkpoint written to %s", target)
    return target


def checkpoint_exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` (or its moved-aside previous version) holds a complete checkpoint."""
    target = Path(directory)
    old = target.parent / f".{target.name}.old"
    return (target / INDEX_NAME).is_file() or (old / INDEX_NAME).is_file()


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    If the folder is missing or incomplete because a write was interrupted between moving the
    previous checkpoint aside and renaming the new one into place, the previous one is read.

    Raises:
        CheckpointError: no complete checkpoint exists, or a file is corrupted.
    """
    target = Path(directory)
    if not (target / INDEX_NAME).is_file():
        old = target.parent / f".{target.name}.old"
        if (old / INDEX_NAME).is_file():
            logger.warning("%s is incomplete; reading the previous checkpoint %s", target, old)
            target = old
        else:
            raise CheckpointError(
                f"no checkpoint at {str(directory)!r} ({INDEX_NAME} is missing); train with "
                "TrainConfig(output_dir=...) first, or call fit(resume=False)."
            )
    try:
        index = json.loads((target / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{target / INDEX_NAME} is corrupted: {exc}") from exc
    if not isinstance(index, dict) or index.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{target / INDEX_NAME} is not a causalvl training checkpoint of format "
            f"{FORMAT_VERSION} (got {index.get('format_version') if isinstance(index, dict) else index!r})."
        )
    model = _read_tensors(target / MODEL_NAME)
    optimizer = None
    if index.get("optimizer") is not None:
        optimizer = unflatten_state(index["optimizer"], _read_tensors(target / OPTIMIZER_NAME))
    extra = _read_tensors(target / EXTRA_NAME)
    state = unflatten_state(index.get("state") or {}, {})
    return Checkpoint(model=model, optimizer=optimizer, extra_tensors=extra, state=state)


__all__ = [
    "Checkpoint",
    "checkpoint_exists",
    "flatten_state",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_state",
]
