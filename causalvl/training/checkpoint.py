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
place (the previous complete folder is moved aside to ``.<name>.old`` first and deleted after
the rename). A folder is deleted by renaming it to ``.<name>.trash-*`` first, so no complete
copy is ever half-deleted; the moved-aside copy is only replaced when the target itself is
complete. A crash at any point -- and a second crash during the next write -- leaves the
previous checkpoint or the new one loadable: :func:`load_checkpoint` falls back to the
moved-aside copy when the rename did not complete. Temporary and trash folders left by killed
writes are removed by the next successful write. Files get ``0o666`` and folders ``0o777``
less the umask, like files written with ``open``.

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
from collections.abc import Iterable, Mapping
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool = False) -> int:
    """The permissions ``open`` / ``mkdir`` would give: ``0o666`` (``0o777`` for a folder) less
    the umask (``tempfile`` and safetensors create 0600 files and 0700 folders)."""
    return (0o777 if directory else 0o666) & ~_umask()


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` as a safetensors file (``0o666`` less the umask) and fsync it."""
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata={"format": "pt", "causalvl_version": __version__})
    os.chmod(path, default_mode())
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
            ``rng/torch_cuda/<i>``, ``rng/data`` and ``rng/loader`` (the trainer's sampler and
            DataLoader generators), per-rank states ``rng/torch_cpu/rank<r>``), objective
            parameters (``objective/<name>``). :class:`~causalvl.training.state.TrainState`
            builds and reads them.
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
        os.chmod(tmp, default_mode(directory=True))
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
        os.chmod(tmp / INDEX_NAME, default_mode())
        _fsync_dir(tmp)
        old = _old_path(target)
        if (target / INDEX_NAME).is_file():
            # the target is complete: it becomes the fallback copy until the new one is in place
            if old.exists():
                _discard(old)
            os.replace(target, old)
        elif target.exists():
            # an incomplete target (never written by save_checkpoint): the moved-aside copy, if
            # any, may be the only complete checkpoint left, so it is kept until the new one lands
            _discard(target)
        os.replace(tmp, target)
        _fsync_dir(parent)
        if old.exists():
            _discard(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_leftovers(target)
    logger.debug("checkpoint written to %s", target)
    return target


def _old_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _discard(path: Path) -> None:
    """Delete a folder by renaming it out of the way first (a kill mid-delete then leaves a
    trash folder, never a half-deleted checkpoint under a name that is read)."""
    trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{_hidden(path.name)}.trash-"))
    try:
        os.replace(path, trash)
    except OSError:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        return
    shutil.rmtree(trash, ignore_errors=True)


def _hidden(name: str) -> str:
    return name if name.startswith(".") else f".{name}"


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary and trash folders that killed writes of ``target`` left behind."""
    name = target.name
    for pattern in (f".{name}.tmp-*", f".{name}.trash-*", f".{name}.old.trash-*"):
        for leftover in target.parent.glob(pattern):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def checkpoint_traces(
    directory: str | os.PathLike, *, evidence: Iterable[str | os.PathLike] = ()
) -> list[str]:
    """What shows that a checkpoint was written to ``directory`` even though none is complete
    there now: an incomplete folder, an incomplete moved-aside copy, or one of the ``evidence``
    files (written only after a checkpoint was); empty when nothing does.

    A resume that finds such traces must fail instead of silently training from scratch."""
    target = Path(directory)
    traces = []
    for path in (target, _old_path(target)):
        if path.exists() and not (path / INDEX_NAME).is_file():
            traces.append(f"{str(path)!r} exists but has no {INDEX_NAME}")
    for path in evidence:
        if Path(path).is_file():
            traces.append(f"{str(path)!r} exists (it is written after each checkpoint)")
    return traces


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
    except (OSError, ValueError, RecursionError) as exc:  # JSON, UTF-8, huge-int errors
        raise CheckpointError(
            f"{target / INDEX_NAME} is corrupted: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    if not isinstance(index, dict) or index.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{target / INDEX_NAME} is not a causalvl training checkpoint of format "
            f"{FORMAT_VERSION} (got {index.get('format_version') if isinstance(index, dict) else index!r})."
        )
    model = _read_tensors(target / MODEL_NAME)
    optimizer = None
    try:
        if index.get("optimizer") is not None:
            optimizer = unflatten_state(index["optimizer"], _read_tensors(target / OPTIMIZER_NAME))
            if not isinstance(optimizer, dict) or not isinstance(
                optimizer.get("param_groups"), list
            ):
                raise CheckpointError(
                    "'optimizer' must be an optimizer state_dict (a dict with 'state' and "
                    f"'param_groups'), got {type(optimizer).__name__}"
                )
        extra = _read_tensors(target / EXTRA_NAME)
        state = unflatten_state(index.get("state") or {}, {})
        if not isinstance(state, dict):
            raise CheckpointError(f"'state' must be a JSON object, got {type(state).__name__}")
    except CheckpointError as exc:
        raise CheckpointError(f"{target / INDEX_NAME} is corrupted: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(
            f"{target / INDEX_NAME} is corrupted: malformed structure ({type(exc).__name__}: "
            f"{str(exc)[:200]})."
        ) from exc
    return Checkpoint(model=model, optimizer=optimizer, extra_tensors=extra, state=state)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_train_state(
    state: Mapping[str, Any], directory: str | os.PathLike, *, epochs: int
) -> dict[str, Any]:
    """Check the training state of a checkpoint before a trainer uses any of it.

    Args:
        state: :attr:`Checkpoint.state` (``epoch``, ``step``, ``history``, ``best``,
            ``bad_epochs``, ``scaler``).
        directory: the checkpoint folder, named in errors.
        epochs: the number of epochs the resumed run is configured for; a checkpoint that
            completed more cannot be continued by it.

    Returns:
        ``state`` as a plain dict.

    Raises:
        CheckpointError: a field is missing, of the wrong type or out of range; the message
            names the folder and the field.
    """
    where = f"{str(directory)!r} ({INDEX_NAME}, training state)"

    def bad(field_name: str, requirement: str) -> CheckpointError:
        value = state.get(field_name, "<missing>") if isinstance(state, Mapping) else state
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return CheckpointError(
            f"{where}: {field_name} = {shown} is invalid: {requirement}. The checkpoint is "
            "corrupted or was edited; resume from another copy or call fit(resume=False)."
        )

    if not isinstance(state, Mapping):
        raise bad("state", "must be a JSON object")
    epoch = state.get("epoch")
    if not _is_int(epoch) or not 0 <= epoch <= epochs:
        raise bad(
            "epoch",
            f"must be the number of completed epochs, an integer in [0, {epochs}] "
            "(TrainConfig.epochs; raise it to train a checkpoint further)",
        )
    step = state.get("step")
    if not _is_int(step) or step < 0:
        raise bad("step", "must be the number of optimizer steps taken, an integer >= 0")
    history = state.get("history", [])
    if not isinstance(history, list) or len(history) > epoch:
        raise bad("history", f"must be a list of at most {epoch} per-epoch metric rows")
    for row in history:
        if not isinstance(row, Mapping) or not all(
            isinstance(k, str) and (v is None or _is_number(v)) for k, v in row.items()
        ):
            raise bad("history", "every row must map metric names to numbers")
    best = state.get("best")
    if best is not None:
        ok = isinstance(best, Mapping)
        ok = ok and (best.get("value") is None or _is_number(best.get("value")))
        ok = ok and (best.get("epoch") is None or _is_int(best.get("epoch")))
        ok = ok and (best.get("epoch") is None or 1 <= best["epoch"] <= epoch)
        if not ok:
            raise bad("best", f"must be null or {{'value': number, 'epoch': 1..{epoch}}}")
    bad_epochs = state.get("bad_epochs", 0)
    if not _is_int(bad_epochs) or not 0 <= bad_epochs <= epoch:
        raise bad("bad_epochs", f"must be an integer in [0, {epoch}]")
    scaler = state.get("scaler")
    if scaler is not None and not isinstance(scaler, Mapping):
        raise bad("scaler", "must be null or a GradScaler state dict")
    return dict(state)


def check_rng_states(
    saved: Mapping[str, torch.Tensor],
    current: Mapping[str, torch.Tensor],
    directory: str | os.PathLike,
) -> None:
    """Check that each saved RNG state has the dtype and size of the live generator's state.

    Raises:
        CheckpointError: a state of another size or dtype (``torch.set_rng_state`` would
            raise a bare ``RuntimeError``, or accept a state of another generator).
    """
    for key, live in current.items():
        if key not in saved:
            continue
        value = saved[key]
        if value.dtype != live.dtype or tuple(value.shape) != tuple(live.shape):
            raise CheckpointError(
                f"{str(directory)!r}: RNG state {key!r} has dtype {value.dtype} and shape "
                f"{tuple(value.shape)}, the generator's state is {live.dtype} "
                f"{tuple(live.shape)}; the checkpoint is corrupted or from another torch build."
            )


__all__ = [
    "Checkpoint",
    "check_rng_states",
    "checkpoint_exists",
    "checkpoint_traces",
    "flatten_state",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_state",
    "validate_train_state",
]
