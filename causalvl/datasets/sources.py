"""Image sources: real labelled images as tensors, the raw material of every bias construction.

A source holds ``N`` real images with their class labels:

* ``images``: ``(N, C, H, W)`` ``uint8`` (values 0-255) or float in ``[0, 1]``;
  :meth:`ImageSource.float_images` always returns float ``(N, C, H, W)`` in ``[0, 1]``.
* ``labels``: ``(N,)`` long class ids in ``[0, len(class_names))``.
* ``class_names``: one name per class id.

Three constructors cover the usual cases:

* :func:`digits` -- scikit-learn's bundled 1,797 real handwritten digits (8x8 grayscale, 10
  classes). Embedded in scikit-learn, so it needs no download; the default for demos and tests.
* :func:`cifar10` -- CIFAR-10 in its official ``cifar-10-batches-py`` layout (32x32 RGB photos,
  10 classes). Batches are unpickled with an allow-list that admits only the numpy globals the
  layout uses; anything else raises :class:`~causalvl.errors.DataError`.
* :class:`ArraySource` -- any images and labels you already have.

Example::

    >>> from causalvl.datasets import digits
    >>> src = digits()
    >>> src.images.shape, src.images.dtype, len(src.class_names)
    (torch.Size([1797, 1, 8, 8]), torch.uint8, 10)
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

logger = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: CIFAR-10 superclasses used by the templated questions (class name -> superclass).
CIFAR10_SUPERCLASS: dict[str, str] = {
    "airplane": "vehicle",
    "automobile": "vehicle",
    "ship": "vehicle",
    "truck": "vehicle",
    "bird": "animal",
    "cat": "animal",
    "deer": "animal",
    "dog": "animal",
    "frog": "animal",
    "horse": "animal",
}

_CIFAR_LAYOUT = (
    "the official CIFAR-10 python layout: a folder 'cifar-10-batches-py' holding 'batches.meta', "
    "'data_batch_1' ... 'data_batch_5' and 'test_batch' (pickled dicts with b'data' uint8 "
    "(10000, 3072) and b'labels')"
)


class ImageSource:
    """Labelled real images.

    Args:
        images: ``(N, C, H, W)`` tensor or array, ``uint8`` (0-255) or floating point in
            ``[0, 1]``. A ``(N, H, W)`` array is read as single-channel.
        labels: ``(N,)`` integer class ids.
        class_names: one name per class id (``len(class_names) > labels.max()``).
        name: a short description used in messages and reports.

    Raises:
        DataError: shapes, dtypes or value ranges that do not fit the description above.

    Example::

        >>> import torch
        >>> src = ArraySource(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
        >>> src.float_images().shape, src.num_classes
        (torch.Size([4, 1, 8, 8]), 2)
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        class_names: Sequence[str],
        *,
        name: str = "images",
    ) -> None:
        images_t = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
        labels_t = torch.as_tensor(np.asarray(labels)) if not torch.is_tensor(labels) else labels
        if images_t.dim() == 3:
            images_t = images_t.unsqueeze(1)
        if images_t.dim() != 4:
            raise DataError(
                f"{name}: images must have shape (N, C, H, W) (or (N, H, W)), got "
                f"{tuple(images_t.shape)}."
            )
        if images_t.shape[1] not in (1, 3):
            raise DataError(
                f"{name}: images must have 1 or 3 channels in dimension 1 (N, C, H, W), got "
                f"shape {tuple(images_t.shape)}; permute channels-last arrays with "
                "images.permute(0, 3, 1, 2)."
            )
        if images_t.dtype != torch.uint8:
            if not images_t.is_floating_point():
                raise DataError(
                    f"{name}: images must be uint8 (0-255) or float in [0, 1], got dtype "
                    f"{images_t.dtype}."
                )
            images_t = images_t.float()
            if images_t.numel() and (images_t.min() < 0 or images_t.max() > 1):
                raise DataError(
                    f"{name}: float images must lie in [0, 1], got range "
                    f"[{images_t.min().item():.3g}, {images_t.max().item():.3g}]; divide "
                    "0-255 values by 255."
                )
        if labels_t.dim() != 1 or labels_t.shape[0] != images_t.shape[0]:
            raise DataError(
                f"{name}: labels must have shape (N,) = ({images_t.shape[0]},), got "
                f"{tuple(labels_t.shape)}."
            )
        if labels_t.is_floating_point() or labels_t.dtype == torch.bool:
            raise DataError(f"{name}: labels must be integer class ids, got {labels_t.dtype}.")
        labels_t = labels_t.long()
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise DataError(f"{name}: class_names is empty; give one name per class id.")
        if len(set(class_names)) != len(class_names):
            raise DataError(f"{name}: class_names has duplicates: {class_names}.")
        if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() >= len(class_names)):
            raise DataError(
                f"{name}: labels must lie in [0, {len(class_names)}) for {len(class_names)} "
                f"class names, got range [{labels_t.min().item()}, {labels_t.max().item()}]."
            )
        self.images: torch.Tensor = images_t
        self.labels: torch.Tensor = labels_t
        self.class_names: list[str] = class_names
        self.name = name

    # -- views ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
            f"classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def float_images(self, index: Any = None) -> torch.Tensor:
        """Float images in ``[0, 1]``, shape ``(N, C, H, W)`` (or a selection by ``index``)."""
        imgs = self.images if index is None else self.images[index]
        if imgs.dtype == torch.uint8:
            return imgs.float().div_(255.0)
        return imgs.float()

    def indices_by_class(self) -> list[np.ndarray]:
        """For each class id, the (sorted) indices of its images."""
        lab = self.labels.numpy()
        return [np.flatnonzero(lab == c) for c in range(self.num_classes)]

    def subset(self, index: Any) -> ImageSource:
        """A new source with the selected images (same class names)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSource(self.images[idx], self.labels[idx], self.class_names, name=self.name)


class ArraySource(ImageSource):
    """An :class:`ImageSource` over arrays you already have (see :class:`ImageSource`).

    Example::

        >>> import numpy as np
        >>> src = ArraySource(np.zeros((6, 3, 16, 16), np.uint8), [0, 1, 2, 0, 1, 2], ["x", "y", "z"])
        >>> src.image_shape
        (3, 16, 16)
    """

    def __init__(
        self, images: Any, labels: Any, class_names: Sequence[str], *, name: str = "arrays"
    ) -> None:
        super().__init__(images, labels, class_names, name=name)


def digits() -> ImageSource:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grayscale images, classes 0-9.

    Returns:
        An :class:`ImageSource` with ``images`` ``(1797, 1, 8, 8)`` ``uint8`` (the original
        0-16 intensities scaled to 0-255), ``labels`` ``(1797,)`` and class names ``"0"``-``"9"``.

    Example::

        >>> src = digits()
        >>> len(src), src.class_names[:3]
        (1797, ['0', '1', '2'])
    """
    images_np, labels_np = _digits_arrays()
    images = torch.from_numpy(images_np.copy()).unsqueeze(1)
    labels = torch.from_numpy(labels_np.copy())
    return ImageSource(images, labels, [str(i) for i in range(10)], name="digits")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``uint8`` (1797, 8, 8) and int64 (1797,) arrays.

    Reads scikit-learn's bundled ``digits.csv.gz`` directly (importing scikit-learn takes
    seconds); falls back to :func:`sklearn.datasets.load_digits`.
    """
    raw = None
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            raw = np.loadtxt(path, delimiter=",")
    if raw is None or raw.shape != (1797, 65):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw = np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
    pixels = np.round(raw[:, :64] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return pixels.reshape(-1, 8, 8), raw[:, 64].astype(np.int64)


# ---------------------------------------------------------------------------------------
# CIFAR-10 (official python layout), read with an allow-listed unpickler
# ---------------------------------------------------------------------------------------


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The ``_codecs.encode`` call protocol-0/1/2 pickles use to store bytes (``latin1`` only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"_codecs.encode is only accepted as encode(str, 'latin1'), got encoding {encoding!r}"
        )
    return text.encode("latin1")


def _numpy_frombuffer() -> Any:
    try:
        from numpy._core.numeric import _frombuffer  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.numeric import _frombuffer
    return _frombuffer


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a numpy array in a CIFAR batch needs.

    Files written by numpy 1.x name ``numpy.core.multiarray._reconstruct``; numpy 2.x names
    ``numpy._core.multiarray._reconstruct``. Both resolve to the installed function. Protocol
    0-2 pickles written by Python 3 store bytes with ``_codecs.encode(str, "latin1")`` (admitted
    for that encoding only); protocol 5 stores arrays with ``numpy._core.numeric._frombuffer``.
    Any other global raises :class:`DataError` before it is imported.
    """

    def __init__(self, file: Any, *, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if name == "_frombuffer" and module in ("numpy.core.numeric", "numpy._core.numeric"):
            return _numpy_frombuffer()
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise DataError(
            f"{self._source}: refusing to load the global {module}.{name} from this pickle; a "
            "CIFAR-10 batch only references numpy arrays (numpy.core.multiarray._reconstruct, "
            "numpy.ndarray, numpy.dtype). The file is not a CIFAR-10 batch or was tampered with."
        )


def safe_unpickle_cifar(path: str | os.PathLike) -> Any:
    """Unpickle one file of the CIFAR layout, admitting only numpy-array globals.

    Raises:
        DataError: the file is missing, is not a pickle, or names any other global.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {str(path)!r}; expected {_CIFAR_LAYOUT}.")
    data = path.read_bytes()
    try:
        obj = _CifarUnpickler(io.BytesIO(data), source=str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # corrupt / truncated / not a pickle
        raise DataError(
            f"{str(path)!r} could not be read as a CIFAR-10 batch pickle ({type(exc).__name__}: "
            f"{exc}); expected {_CIFAR_LAYOUT}."
        ) from exc
    return obj


def _get(d: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle_cifar(path)
    if not isinstance(obj, dict):
        raise DataError(
            f"{str(path)!r}: a CIFAR-10 batch is a dict, got {type(obj).__name__}; expected "
            f"{_CIFAR_LAYOUT}."
        )
    try:
        data = _get(obj, "data")
        labels = _get(obj, "labels")
    except KeyError as exc:
        raise DataError(
            f"{str(path)!r}: the batch dict has no {exc.args[0]!r} key (keys: "
            f"{sorted(map(repr, obj))}); expected {_CIFAR_LAYOUT}."
        ) from None
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{str(path)!r}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} "
            f"{data.shape}."
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"{str(path)!r}: b'labels' must be {data.shape[0]} ints in 0-9, got a "
            f"{type(labels).__name__} that is not a list of integers ({str(exc)[:200]})."
        ) from exc
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(
            f"{str(path)!r}: b'labels' must be {data.shape[0]} ints in 0-9, got shape "
            f"{labels.shape}."
        )
    return data.reshape(-1, 3, 32, 32), labels


def cifar10(
    root: str | os.PathLike,
    split: str = "train",
    *,
    batches: Sequence[int] | None = None,
    limit_per_class: int | None = None,
) -> ImageSource:
    """CIFAR-10 from the official ``cifar-10-batches-py`` layout.

    Args:
        root: the ``cifar-10-batches-py`` folder, or its parent.
        split: ``"train"`` (every ``data_batch_k`` file present, or those named by
            ``batches``) or ``"test"`` (``test_batch``).
        batches: for ``"train"``, which of ``data_batch_1``..``data_batch_5`` to read
            (default: every one that exists; at least one must).
        limit_per_class: keep only the first ``limit_per_class`` images of each class (in file
            order), e.g. to keep demos small.

    Returns:
        An :class:`ImageSource` with ``images`` ``(N, 3, 32, 32)`` ``uint8``, ``labels`` ``(N,)``
        and the ten class names (from ``batches.meta`` when present, else the official list).

    Raises:
        DataError: a missing folder or file (the message names the path and the expected
            layout), a malformed batch, or a pickle that names a global other than numpy's
            array reconstruction.

    Example::

        >>> src = cifar10("/data/cifar-10-batches-py", split="test")  # doctest: +SKIP
        >>> src.images.shape                                          # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    if split not in ("train", "test"):
        raise DataError(f"cifar10: split={split!r} is not allowed; choose 'train' or 'test'.")
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(f"cifar10: no such folder {str(root)!r}; expected {_CIFAR_LAYOUT}.")
    if split == "test":
        files = [root / "test_batch"]
    elif batches is not None:
        bad = [b for b in batches if not isinstance(b, int) or not 1 <= b <= 5]
        if bad or not batches:
            raise DataError(f"cifar10: batches={list(batches)!r} must be a non-empty list of 1-5.")
        files = [root / f"data_batch_{b}" for b in batches]
    else:
        files = [
            root / f"data_batch_{b}" for b in range(1, 6) if (root / f"data_batch_{b}").is_file()
        ]
        if not files:
            raise DataError(
                f"cifar10: no training batch in {str(root)!r} (looked for data_batch_1 .. "
                f"data_batch_5); expected {_CIFAR_LAYOUT}."
            )
    for f in files:
        if not f.is_file():
            raise DataError(f"cifar10: missing file {str(f)!r}; expected {_CIFAR_LAYOUT}.")
    names = list(CIFAR10_CLASSES)
    meta = root / "batches.meta"
    if meta.is_file():
        obj = safe_unpickle_cifar(meta)
        try:
            raw = _get(obj, "label_names")
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
        except (KeyError, TypeError, UnicodeDecodeError):
            logger.warning("%s has no label_names; using the official class names", meta)
    arrays, labels = [], []
    for f in files:
        x, y = _read_cifar_batch(f)
        arrays.append(x)
        labels.append(y)
    x = np.concatenate(arrays)
    y = np.concatenate(labels)
    if limit_per_class is not None:
        if not isinstance(limit_per_class, int) or limit_per_class < 1:
            raise DataError(f"cifar10: limit_per_class={limit_per_class!r} must be an int >= 1.")
        keep = np.concatenate([np.flatnonzero(y == c)[:limit_per_class] for c in range(10)])
        keep.sort()
        x, y = x[keep], y[keep]
    logger.info("cifar10: read %d images from %s", len(y), [f.name for f in files])
    return ImageSource(
        torch.from_numpy(x.copy()), torch.from_numpy(y), names, name=f"cifar10-{split}"
    )


def default_data_dir() -> Path | None:
    """Where shared test/benchmark data lives: ``$CAUSALVL_DATA`` if set, else ``../shared/data``
    beside the repository (when it exists), else ``None``."""
    env = os.environ.get("CAUSALVL_DATA")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


__all__ = [
    "ArraySource",
    "CIFAR10_CLASSES",
    "CIFAR10_SUPERCLASS",
    "ImageSource",
    "cifar10",
    "default_data_dir",
    "digits",
    "safe_unpickle_cifar",
]
