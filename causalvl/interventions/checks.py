"""Field checks shared by the intervention configs' ``validate`` methods.

Pure Python (no torch), so that reading a config from JSON imports no tensor library. Each
check takes the config and raises :class:`~causalvl.errors.ConfigError` through its
``_fail`` / ``_check_int`` helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__: list[str] = []


def _check_hidden(cfg: Any, name: str = "hidden_sizes") -> None:
    value = getattr(cfg, name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        cfg._fail(name, "must be a list of hidden-layer widths, e.g. (1024, 1024) or ()")
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value):
        cfg._fail(name, "every hidden width must be an integer >= 1")
    cfg._normalise(name, tuple(value))


def _check_role(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, str) or not value:
            cfg._fail(name, "must be a role name or module path, e.g. 'language_features'")


def _check_optional_int(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) is not None:
            cfg._check_int(name, minimum=1)


def _check_prior_fields(cfg: Any) -> None:
    if cfg.num_question_types is not None:
        cfg._check_int("num_question_types", minimum=1)
    if cfg.num_answers is not None:
        cfg._check_int("num_answers", minimum=1)
    if cfg.prior is None:
        return
    rows = cfg.prior
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        cfg._fail("prior", "must be a non-empty list of rows (one list of floats per type)")
    try:
        table = tuple(tuple(float(v) for v in row) for row in rows)
    except (TypeError, ValueError):
        cfg._fail("prior", "must be a list of rows of numbers")
    widths = {len(r) for r in table}
    if len(widths) != 1 or 0 in widths:
        cfg._fail("prior", f"rows must all have the same non-zero length (got {sorted(widths)})")
    if any(not (math.isfinite(v) and 0 <= v <= 1) for r in table for v in r):
        cfg._fail("prior", "entries must be finite and in [0, 1]")
    if cfg.num_question_types is not None and cfg.num_question_types != len(table):
        cfg._fail(
            "num_question_types", f"does not match the {len(table)} rows of prior; drop one of them"
        )
    if cfg.num_answers is not None and cfg.num_answers != len(table[0]):
        cfg._fail("num_answers", f"does not match the prior's {len(table[0])} columns")
    cfg._normalise("prior", table)
