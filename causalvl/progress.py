"""Progress bars that never change what they display.

A progress bar must not touch the computation it reports on. ``tqdm.auto`` builds its bar with
``iter(iterable)`` once at construction and again when iterated; a ``DataLoader`` draws a
seed from its generator for every iterator it creates, so wrapping a loader in a bar used to
shift the loader's random state and, with it, the order of training batches. The bar here is
given one iterator that it never restarts: shown or not, the loader is iterated exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T], *, enabled: bool, desc: str, total: int | None = None, **kwargs: Any
) -> Iterator[T] | Any:
    """Iterate ``iterable`` once, with a tqdm bar when ``enabled``.

    Args:
        iterable: what to iterate (a DataLoader, a list, ...).
        enabled: show the bar; ``False`` returns a plain iterator.
        desc: the bar's label.
        total: number of items (default: ``len(iterable)`` when it has one).
        **kwargs: passed to ``tqdm`` (``leave``, ``position``, ...).

    Returns:
        An iterator over ``iterable``; with ``enabled`` it is a tqdm bar (``set_postfix`` works).

    Example::

        >>> list(progress_bar([1, 2, 3], enabled=False, desc="numbers"))
        [1, 2, 3]
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    iterator = iter(iterable)
    if not enabled:
        return iterator
    from tqdm.auto import tqdm

    options = {"leave": False, "dynamic_ncols": True, **kwargs}
    return tqdm(iterator, desc=desc, total=total, **options)


__all__ = ["progress_bar"]
