"""Read a public benchmark for the audit from files or folders of its official layout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import DataError, InputError
from .items import BENCHMARKS

_PATTERNS = {
    "sugarcrepe": ("*.json",),
    "valse": ("*.json",),
    "aro": ("*.tsv",),
    "nlvr": ("*.json", "*.jsonl"),
    "nlvr2": ("*.json", "*.jsonl"),
}

_LAYOUT = {
    "sugarcrepe": "SugarCrepe's data/ folder (one JSON file per category, e.g. swap_obj.json)",
    "valse": "VALSE's data/ folder (one JSON file per piece, e.g. counting-adversarial.json)",
    "aro": "the NegCLIP caption files (valid_neg_clip.tsv / train_neg_clip.tsv)",
    "winoground": "Winoground's examples.jsonl (or its folder)",
    "nlvr": "an NLVR split file (train.json, dev.json, test.json: JSON lines)",
    "nlvr2": "an NLVR2 split file (train.json, dev.json, test1.json: JSON lines)",
    "vqacp": "a folder with vqacp_v2_<split>_questions.json and _annotations.json, or those two "
    "files",
}


def _expand(name: str, path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{name}: no such file or folder {str(path)!r}; expected {_LAYOUT[name]}.")
    for folder in (path / "data", path):
        if folder.is_dir():
            files = sorted(f for pat in _PATTERNS[name] for f in folder.glob(pat) if f.is_file())
            if files:
                return files
    raise DataError(
        f"{name}: no {' / '.join(_PATTERNS[name])} files in {str(path)!r} or its data/ folder; "
        f"expected {_LAYOUT[name]}."
    )


def load_benchmark(
    name: str, paths: Sequence[str | os.PathLike], *, split: str = "train"
) -> list[dict[str, Any]]:
    """The records of benchmark ``name`` from ``paths`` (files, or folders of the official
    layout), concatenated, ready for :func:`~causalvl.audit_blind_solvability`.

    Raises:
        InputError: an unknown benchmark name or no path; DataError: files that are missing
            or do not match the benchmark's format.
    """
    from ...datasets import loaders as ld

    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; choose one of {list(BENCHMARKS)}.")
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError(f"{name}: give at least one path ({_LAYOUT[name]}).")
    if name == "winoground":
        return [r for p in paths for r in ld.load_winoground(p)]
    if name == "vqacp":
        if len(paths) == 1 and paths[0].is_dir():
            return ld.load_vqacp(paths[0], split)
        questions = [p for p in paths if "question" in p.name]
        annotations = [p for p in paths if "annotation" in p.name]
        if len(paths) != 2 or len(questions) != 1 or len(annotations) != 1:
            raise InputError(
                "vqacp: give a folder with vqacp_v2_<split>_questions.json and "
                "vqacp_v2_<split>_annotations.json, or exactly those two files, got "
                f"{[str(p) for p in paths]}."
            )
        return ld.load_vqacp(".", questions=questions[0], annotations=annotations[0])
    loader = {
        "sugarcrepe": ld.load_sugarcrepe,
        "valse": ld.load_valse,
        "aro": ld.load_aro,
        "nlvr": ld.load_nlvr,
        "nlvr2": ld.load_nlvr2,
    }[name]
    out: list[dict[str, Any]] = []
    for p in paths:
        for f in _expand(name, p):
            out.extend(loader(f))
    if not out:
        raise DataError(f"{name}: no records in {[str(p) for p in paths]}.")
    return out
