"""Shared pieces of the datasets: collate, seeded splits, real pixel edits, and the readers of
untrusted JSON / JSON-lines / CSV files that turn every malformed input into a
:class:`~causalvl.errors.DataError` naming the file and the line or record."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import ConfigError, DataError
from .sources import CIFAR10_SUPERCLASS, ImageSource

#: Tint colours (RGB unit vectors) used by colour questions.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


@dataclasses.dataclass(kw_only=True)
class ImagePoolConfig(Config):
    """Fields every bias construction shares.

    Attributes:
        seed: seeds the image split, the sampling and the noise (constructions are
            deterministic for a seed).
        image_size: side of each (square) image tile after resizing.
        noise_std: std of the Gaussian pixel noise added to the tiles (weakens the visual
            evidence).
        train_images_per_class: images per class in the training pool (``None``: the share
            ``1 - test_fraction`` of each class).
        test_fraction: share of each class's images held out for the test pools.
    """

    seed: int = 0
    image_size: int = 16
    noise_std: float = 0.0
    train_images_per_class: int | None = None
    test_fraction: float = 0.5

    def validate(self) -> None:
        self._check_int("seed", minimum=0)
        self._check_int("image_size", minimum=4)
        self._check_positive("noise_std", allow_zero=True)
        self._check_fraction("test_fraction")
        if self.train_images_per_class is not None:
            self._check_int("train_images_per_class", minimum=1)
        if not 0 < self.test_fraction < 1:
            self._fail("test_fraction", "must lie strictly between 0 and 1")


# ---------------------------------------------------------------------------------------
# untrusted files: every failure is a DataError that names the file and the line / record
# ---------------------------------------------------------------------------------------


def is_file(path: str | os.PathLike | None) -> bool:
    """``Path(path).is_file()`` that answers ``False`` instead of raising for names the system
    cannot look up (over 255 bytes, an embedded NUL byte, no permission)."""
    if path is None:
        return False
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | os.PathLike | None) -> bool:
    """``Path(path).is_dir()`` that answers ``False`` instead of raising (see :func:`is_file`)."""
    if path is None:
        return False
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of the file at ``path``.

    Raises:
        DataError: the file is missing, is a folder, or cannot be read (its name too long, no
            permission, ...); the message starts with ``what`` and names the file.
    """
    try:
        if not Path(path).is_file():
            raise DataError(f"{what}: no such file {str(path)!r}.")
        return Path(path).read_bytes()
    except (OSError, ValueError) as exc:
        reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        raise DataError(f"{what}: cannot read {str(path)[:300]!r} ({reason}).") from exc


def decode_text(data: bytes, where: str, *, count_lines: bool = True) -> str:
    """``data`` decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        DataError: ``data`` is not UTF-8; the message names ``where``, the line (with
            ``count_lines``, for a whole file) and the offset of the first bad byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = f" line {1 + data.count(10, 0, exc.start)}:" if count_lines else ""
        raise DataError(
            f"{where}:{line} not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8."
        ) from exc


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads(text)`` with every failure turned into a :class:`DataError` naming ``where``:
    invalid JSON, nesting too deep for the parser, integers too long to convert."""
    if isinstance(text, bytes):
        text = decode_text(text, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from exc
    except RecursionError as exc:
        raise DataError(
            f"{where}: the JSON is nested too deeply to parse; records are flat objects."
        ) from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise DataError(f"{where}: invalid JSON value ({str(exc)[:200]}).") from exc


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file at ``path`` (UTF-8).

    Raises:
        DataError: the file is missing, unreadable, not UTF-8, not valid JSON, nested too
            deeply or holds an integer too long to convert; the message names the file.
    """
    where = f"{what}: {str(path)[:300]}"
    return parse_json(decode_text(read_bytes(path, what), where), where)


def iter_jsonl(path: str | os.PathLike, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of a JSON-lines file (UTF-8).

    Raises:
        DataError: the file is missing or unreadable, or a line is not UTF-8, not valid JSON
            or not a JSON object; the message names the file and the line.
    """
    data = read_bytes(path, what)
    name = str(path)[:300]
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{what}: {name}:{line_no}"
        line = decode_text(raw, where, count_lines=False)
        if not line.strip():
            continue
        rec = parse_json(line, where)
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}.")
        yield line_no, rec


def iter_csv(
    path: str | os.PathLike, what: str, *, delimiter: str = ","
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each data row of a CSV file with a header row (UTF-8).

    Raises:
        DataError: the file is missing or unreadable, not UTF-8, has no header, a malformed
            row (a NUL byte, an oversized field, a row longer than the header); the message
            names the file and the line.
    """
    name = str(path)[:300]
    text = decode_text(read_bytes(path, what), f"{what}: {name}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{what}: {name}: the CSV file has no header row.")
        for row in reader:
            line_no = reader.line_num
            if not row:
                continue
            if len(row) > len(header):
                raise DataError(
                    f"{what}: {name}:{line_no}: {len(row)} fields, the header has {len(header)}."
                )
            yield line_no, dict(zip(header, row + [""] * (len(header) - len(row))))
    except csv.Error as exc:
        raise DataError(f"{what}: {name}:{reader.line_num}: malformed CSV ({exc}).") from exc


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch a list of example dicts: tensors are stacked, numbers become tensors, strings and
    lists of strings stay Python lists.

    Args:
        items: dicts with the same keys (e.g. the items of any dataset in this package).

    Returns:
        One dict: ``(B, ...)`` tensors for tensor and number fields, length-``B`` lists otherwise.

    Example::

        >>> import torch
        >>> b = collate([{"x": torch.zeros(2), "q": "a"}, {"x": torch.ones(2), "q": "b"}])
        >>> b["x"].shape, b["q"]
        (torch.Size([2, 2]), ['a', 'b'])
    """
    if not items:
        raise DataError("collate got an empty list of examples.")
    keys = list(items[0].keys())
    for i, it in enumerate(items):
        if set(it.keys()) != set(keys):
            raise DataError(
                f"collate: example {i} has keys {sorted(it.keys())}, example 0 has {sorted(keys)}; "
                "batch examples from the same dataset."
            )
    out: dict[str, Any] = {}
    for k in keys:
        vals = [it[k] for it in items]
        v0 = vals[0]
        if torch.is_tensor(v0):
            out[k] = torch.stack(vals)
        elif isinstance(v0, bool):
            out[k] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(v0, int):
            out[k] = torch.tensor(vals, dtype=torch.long)
        elif isinstance(v0, float):
            out[k] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[k] = list(vals)
    return out


def row(columns: Mapping[str, torch.Tensor], i: int) -> dict[str, Any]:
    """Item ``i`` of a table of equal-length columns (negative ``i`` counts from the end)."""
    n = len(next(iter(columns.values())))
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for {n} examples")
    return {k: v[i] for k, v in columns.items()}


def make_rng(seed: int, *purpose: str | int) -> np.random.Generator:
    """A numpy Generator for ``seed`` and a purpose tag (independent streams per purpose)."""
    words = [int(seed) & 0xFFFFFFFF]
    for p in purpose:
        words.append(zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(words))


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch Generator seeded from a numpy Generator (for pixel noise)."""
    g = torch.Generator()
    g.manual_seed(int(rng.integers(0, 2**62)))
    return g


def split_pools(
    source: ImageSource, train_per_class: int | None, test_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Disjoint per-class image pools ``(train, held_out)`` for ``seed``.

    Each class's images are shuffled; ``held_out`` takes ``test_fraction`` of them (at least
    one), ``train`` takes the next ``train_per_class`` (all the rest when ``None``).
    """
    rng = make_rng(seed, "image-split")
    train, held = [], []
    for c, idx in enumerate(source.indices_by_class()):
        if len(idx) < 2:
            raise DataError(
                f"class {source.class_names[c]!r} of {source.name} has {len(idx)} image(s); each "
                "class needs at least 2 so train and test images can be disjoint."
            )
        perm = rng.permutation(idx)
        n_test = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx)))))
        held.append(np.sort(perm[:n_test]))
        rest = perm[n_test:]
        if train_per_class is not None:
            rest = rest[:train_per_class]
        train.append(np.sort(rest))
    return train, held


def stratified_counts(probs: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``n * probs`` (largest remainders)."""
    raw = probs * n
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, H, W)`` float -> ``(N, C, size, size)`` (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = images.shape[-1] > size
    out = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )
    return out.clamp_(0.0, 1.0)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Repeat a single channel to three; three-channel images are returned unchanged."""
    return images.expand(-1, 3, -1, -1).clone() if images.shape[1] == 1 else images


def tint(images: torch.Tensor, colours: torch.Tensor, strength: float) -> torch.Tensor:
    """Recolour pixels: ``out = x * ((1 - strength) + strength * colour)`` per channel.

    Args:
        images: ``(N, 3, H, W)`` float in ``[0, 1]``.
        colours: ``(N, 3)`` RGB unit vectors (rows of :data:`COLOURS`).
        strength: 0 leaves the image unchanged, 1 keeps only the colour's channel.
    """
    scale = (1.0 - strength) + strength * colours
    return images * scale[:, :, None, None]


def add_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian pixel noise, clipped to ``[0, 1]``."""
    if std <= 0:
        return images
    noise = torch.randn(images.shape, generator=generator) * std
    return (images + noise).clamp_(0.0, 1.0)


def article(word: str) -> str:
    """``"an"`` before a vowel sound (by spelling), else ``"a"``."""
    return "an" if word[:1].lower() in "aeiou" or word in ("8", "11", "18") else "a"


def superclass_map(
    source: ImageSource, superclasses: Mapping[str, str] | None
) -> tuple[list[str], list[int]] | None:
    """``(superclass names, class id -> superclass id)``: the given mapping, parity for
    digit-named classes, the animal/vehicle split for CIFAR-10 names, else ``None``."""
    names = source.class_names
    if superclasses is None:
        if all(n.isdigit() for n in names):
            superclasses = {n: ("even" if int(n) % 2 == 0 else "odd") for n in names}
        elif all(n in CIFAR10_SUPERCLASS for n in names):
            superclasses = {n: CIFAR10_SUPERCLASS[n] for n in names}
        else:
            return None
    missing = [n for n in names if n not in superclasses]
    if missing:
        raise ConfigError(
            f"superclasses has no entry for classes {missing}; map every class name of the "
            "source to a superclass name."
        )
    sup_names = sorted({superclasses[n] for n in names})
    if len(sup_names) < 2:
        raise ConfigError(f"superclasses must define at least 2 superclasses, got {sup_names}.")
    return sup_names, [sup_names.index(superclasses[n]) for n in names]


def prepared_images(source: ImageSource, image_size: int) -> torch.Tensor:
    """All source images as float RGB ``(N, 3, image_size, image_size)`` in ``[0, 1]``."""
    return to_rgb(resize(source.float_images(), image_size))
