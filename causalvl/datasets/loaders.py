"""Loaders for local copies of public vision-language bias benchmarks.

Each loader reads the benchmark's published file format, validates every record, and returns
a list of plain example dicts (the raw text, labels, and image paths; the decoded image too
when ``load_images=True`` and the file exists). A malformed record raises
:class:`~causalvl.errors.DataError` naming the file and the record (line number, index or id).
Nothing is downloaded: point the loaders at files you already have.

==================  ======================================================================
Winoground          ``examples.jsonl`` (id, caption_0, caption_1, image_0, image_1, tag,
                    secondary_tag, num_main_preds, collapsed_tag) + ``images/<image>.png``
VQA-CP v2           ``vqacp_v2_<split>_questions.json`` + ``vqacp_v2_<split>_annotations.json``
VALSE               one piece JSON: ``{id: {dataset, image_file, caption, foil | foils, ...}}``
SugarCrepe          one JSON: ``{id: {filename, caption, negative_caption}}``
NLVR                JSON lines: sentence, label ("true"/"false"), identifier, directory, ...
NLVR2               JSON lines: sentence, label ("True"/"False"), identifier, left_url, ...
ARO (NegCLIP)       TSV: title, filepath, neg_caption (a Python list literal of negatives), ...
==================  ======================================================================

Example::

    >>> rows = load_winoground("/data/winoground")          # doctest: +SKIP
    >>> rows[0]["caption_0"], rows[0]["image_0_path"]       # doctest: +SKIP
"""

from __future__ import annotations

import ast
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, OptionalDependencyError
from ._common import is_dir, is_file, iter_csv, iter_jsonl, read_json

logger = logging.getLogger(__name__)

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a float tensor ``(C, H, W)`` in ``[0, 1]`` (RGB; alpha dropped).

    Uses Pillow when installed, else ``matplotlib.image`` (both imported only here).

    Raises:
        DataError: the file is missing or cannot be decoded.
        OptionalDependencyError: neither Pillow nor matplotlib is installed.
    """
    import numpy as np

    path = Path(path)
    if not is_file(path):
        raise DataError(f"image file {str(path)[:300]!r} does not exist.")
    try:
        try:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except ImportError:
            try:
                import matplotlib.image as mpimg
            except ImportError as exc:
                raise OptionalDependencyError(
                    "loading images needs Pillow or matplotlib; install one with "
                    "`pip install pillow`."
                ) from exc
            arr = np.asarray(mpimg.imread(path), dtype=np.float32)
            if arr.max() > 1.0:
                arr = arr / 255.0
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, -1)
            arr = arr[..., :3]
    except (DataError, OptionalDependencyError):
        raise
    except Exception as exc:
        raise DataError(
            f"could not decode image {str(path)!r} ({type(exc).__name__}: {exc})."
        ) from exc
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _find_file(root: Path, names: Sequence[str], what: str, layout: str) -> Path:
    for name in names:
        for cand in (root / name, root / "data" / name):
            if is_file(cand):
                return cand
    raise DataError(
        f"{what}: none of {list(names)} found in {str(root)!r} (or its 'data' folder); expected "
        f"{layout}."
    )


#: The file each loader reads, for the message when it is given a folder instead.
_EXPECTED_FILE = {
    "load_winoground": "the Winoground examples file (examples.jsonl)",
    "load_vqacp": "a VQA-CP v2 questions or annotations JSON file",
    "load_valse": "one VALSE piece's JSON file (e.g. existence.json)",
    "load_sugarcrepe": "one SugarCREPE JSON file (e.g. replace_att.json)",
    "load_nlvr": "one NLVR split's JSON-lines file (e.g. dev.json)",
    "load_nlvr2": "one NLVR2 split's JSON-lines file (e.g. dev.json)",
}


def _check_file(path: Path, what: str) -> None:
    """A missing path and a folder get different messages: a folder names the file expected."""
    if is_file(path):
        return
    if is_dir(path):
        try:
            found = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        except OSError:
            found = []
        listing = f"; JSON files there: {found[:5]}" if found else ""
        raise DataError(
            f"{what}: {str(path)!r} is a folder, but a file is expected: "
            f"{_EXPECTED_FILE.get(what, 'a JSON file')}{listing}."
        )
    raise DataError(f"{what}: no such file {str(path)!r}.")


def _read_json(path: Path, what: str) -> Any:
    _check_file(path, what)
    return read_json(path, what)


def _iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    _check_file(path, what)
    return iter_jsonl(path, what)


def _require(
    rec: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], where: str
) -> None:
    for name, typ in fields.items():
        if name not in rec:
            raise DataError(f"{where}: missing field {name!r} (fields present: {sorted(rec)}).")
        value = rec[name]
        if not isinstance(value, typ) or isinstance(value, bool) and bool not in _as_tuple(typ):
            want = " or ".join(t.__name__ for t in _as_tuple(typ))
            raise DataError(f"{where}: field {name!r} must be {want}, got {value!r}.")
        if isinstance(value, str) and not value.strip():
            raise DataError(f"{where}: field {name!r} is empty.")


def _as_tuple(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _bool_label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(f"{where}: field 'label' must be 'true' or 'false', got {value!r}.")


def _image_file(
    root: Path | None, stem_or_name: str, subdirs: Sequence[str] = ("",)
) -> Path | None:
    """The first existing ``root/<subdir>/<name>[ext]``, else the first candidate (or None)."""
    if root is None:
        return None
    has_ext = Path(stem_or_name).suffix.lower() in _IMAGE_EXTS
    names = [stem_or_name] if has_ext else [stem_or_name + e for e in _IMAGE_EXTS]
    candidates = [root / sub / n if sub else root / n for sub in subdirs for n in names]
    for cand in candidates:
        if is_file(cand):
            return cand
    return candidates[0]


def _attach(
    example: dict[str, Any],
    key: str,
    path: Path | None,
    load_images: bool,
    image_key: str | None = None,
) -> None:
    example[f"{key}_path"] = str(path) if path is not None else None
    if load_images and is_file(path):
        example[image_key or key] = load_image(path)


# ---------------------------------------------------------------------------------------
# Winoground
# ---------------------------------------------------------------------------------------


def load_winoground(
    root: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """Winoground (Thrush et al., 2022): 400 groups of two images and two captions.

    Args:
        root: folder holding ``examples.jsonl`` (directly or in ``data/``), or the file itself.
        image_root: folder of the images (default: ``images/`` beside ``examples.jsonl``);
            image ``image_0`` is ``<image_root>/<image_0>.png``.
        load_images: also decode existing images to ``image_0_pixels`` / ``image_1_pixels``
            ``(3, H, W)``.

    Returns:
        One dict per line: ``id`` (int), ``caption_0``, ``caption_1``, ``image_0``, ``image_1``
        (names), ``image_0_path``, ``image_1_path``, ``tag``, ``secondary_tag``,
        ``num_main_preds``, ``collapsed_tag`` (None when absent). Caption ``i`` matches image ``i``.
    """
    root = Path(root)
    path = (
        root
        if is_file(root)
        else _find_file(
            root, ["examples.jsonl"], "load_winoground", "'examples.jsonl' plus an 'images' folder"
        )
    )
    images = Path(image_root) if image_root is not None else path.parent / "images"
    out = []
    seen: set[Any] = set()
    for line_no, rec in _iter_jsonl(path, "load_winoground"):
        where = f"load_winoground: {path}:{line_no}"
        _require(
            rec,
            {"id": (int, str), "caption_0": str, "caption_1": str, "image_0": str, "image_1": str},
            where,
        )
        if rec["id"] in seen:
            raise DataError(f"{where}: duplicate id {rec['id']!r}.")
        seen.add(rec["id"])
        ex = {
            "id": rec["id"],
            "caption_0": rec["caption_0"],
            "caption_1": rec["caption_1"],
            "image_0": rec["image_0"],
            "image_1": rec["image_1"],
            "tag": rec.get("tag"),
            "secondary_tag": rec.get("secondary_tag"),
            "num_main_preds": rec.get("num_main_preds"),
            "collapsed_tag": rec.get("collapsed_tag"),
        }
        for k in ("image_0", "image_1"):
            _attach(ex, k, _image_file(images, rec[k]), load_images, f"{k}_pixels")
        out.append(ex)
    logger.info("load_winoground: %d examples from %s", len(out), path)
    return out


# ---------------------------------------------------------------------------------------
# VQA-CP v2
# ---------------------------------------------------------------------------------------


def vqa_soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """VQA soft scores of the (usually ten) human answers: ``min(1, count / 3)`` per answer.

    Answers are compared after lower-casing and stripping surrounding whitespace (the official
    evaluation also normalises punctuation and number words; this is the common training
    simplification).

    Example::

        >>> vqa_soft_scores(["yes"] * 2 + ["no"] * 8)
        {'yes': 0.6666666666666666, 'no': 1.0}
    """
    counts = Counter(a.strip().lower() for a in answers)
    return {a: min(1.0, c / 3.0) for a, c in counts.items()}


def load_vqacp(
    root: str | os.PathLike,
    split: str = "train",
    *,
    questions: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """VQA-CP v2 (Agrawal et al., 2018): VQA v2 re-split so answer priors differ train/test.

    Args:
        root: folder holding ``vqacp_v2_<split>_questions.json`` and
            ``vqacp_v2_<split>_annotations.json``.
        split: ``"train"`` or ``"test"``.
        questions, annotations: explicit file paths instead of ``root`` + ``split``.
        image_root: COCO image folder; image paths are
            ``<image_root>/<coco_split>/COCO_<coco_split>_<image_id:012d>.jpg``.
        load_images: also decode existing images to ``image``.

    Questions (a JSON list of ``{question_id, image_id, question, coco_split}``) are joined with
    annotations (a JSON list of ``{question_id, question_type, answer_type,
    multiple_choice_answer, answers: [{answer, ...}], ...}``) by ``question_id``.

    Returns:
        One dict per question: ``question_id``, ``image_id``, ``question``, ``coco_split``,
        ``question_type``, ``answer_type``, ``multiple_choice_answer``, ``answers`` (list of
        str), ``scores`` (answer -> soft score, :func:`vqa_soft_scores`), ``image_path``.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"load_vqacp: split={split!r}; choose 'train' or 'test'.")
    q_path = Path(questions) if questions is not None else root / f"vqacp_v2_{split}_questions.json"
    a_path = (
        Path(annotations)
        if annotations is not None
        else root / f"vqacp_v2_{split}_annotations.json"
    )
    qs = _read_json(q_path, "load_vqacp")
    anns = _read_json(a_path, "load_vqacp")
    for data, p in ((qs, q_path), (anns, a_path)):
        if not isinstance(data, list):
            raise DataError(
                f"load_vqacp: {str(p)!r} must hold a JSON list of records, got {type(data).__name__}."
            )
    by_id: dict[int, dict[str, Any]] = {}
    for i, ann in enumerate(anns):
        where = f"load_vqacp: {a_path}: entry {i}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: expected an object, got {type(ann).__name__}.")
        _require(ann, {"question_id": int}, where)
        where += f" (question_id={ann['question_id']})"
        _require(
            ann,
            {
                "question_type": str,
                "answer_type": str,
                "multiple_choice_answer": str,
                "answers": list,
            },
            where,
        )
        for j, a in enumerate(ann["answers"]):
            if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
                raise DataError(
                    f"{where}: answers[{j}] must be an object with a string 'answer', got {a!r}."
                )
        if ann["question_id"] in by_id:
            raise DataError(f"{where}: duplicate question_id.")
        by_id[ann["question_id"]] = ann
    images = Path(image_root) if image_root is not None else None
    out = []
    for i, q in enumerate(qs):
        where = f"load_vqacp: {q_path}: entry {i}"
        if not isinstance(q, dict):
            raise DataError(f"{where}: expected an object, got {type(q).__name__}.")
        _require(q, {"question_id": int}, where)
        where += f" (question_id={q['question_id']})"
        _require(q, {"image_id": int, "question": str, "coco_split": str}, where)
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise DataError(f"{where}: no annotation with this question_id in {str(a_path)!r}.")
        answers = [a["answer"] for a in ann["answers"]]
        ex = {
            "question_id": q["question_id"],
            "image_id": q["image_id"],
            "question": q["question"],
            "coco_split": q["coco_split"],
            "question_type": ann["question_type"],
            "answer_type": ann["answer_type"],
            "multiple_choice_answer": ann["multiple_choice_answer"],
            "answers": answers,
            "scores": vqa_soft_scores(answers),
        }
        img = None
        if images is not None:
            cs = q["coco_split"]
            img = images / cs / f"COCO_{cs}_{q['image_id']:012d}.jpg"
        _attach(ex, "image", img, load_images)
        out.append(ex)
    logger.info("load_vqacp: %d questions from %s", len(out), q_path)
    return out


def vqa_targets(
    examples: Sequence[Mapping[str, Any]],
    *,
    answers: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    min_count: int = 9,
) -> dict[str, Any]:
    """Soft-score targets and the per-question-type answer prior of VQA examples.

    Args:
        examples: dicts from :func:`load_vqacp`.
        answers: the answer vocabulary; by default every ``multiple_choice_answer`` seen at
            least ``min_count`` times, most frequent first (then alphabetical).
        question_types: the question-type vocabulary (default: sorted types of ``examples``;
            unknown types map to -1).

    Returns:
        ``{"labels": (N, A) float soft scores, "question_type": (N,) long, "answers": [...],
        "question_types": [...], "prior": (T, A) float}`` where ``prior[t]`` is the mean soft
        score per answer over examples of type ``t``, normalised to sum to 1 (uniform for a
        type whose examples have no in-vocabulary answer).
    """
    if answers is None:
        counts = Counter(str(e["multiple_choice_answer"]).strip().lower() for e in examples)
        answers = sorted(
            (a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a)
        )
    answers = list(answers)
    if not answers:
        raise DataError(
            f"vqa_targets: empty answer vocabulary (min_count={min_count}); lower min_count."
        )
    if question_types is None:
        question_types = sorted({str(e["question_type"]) for e in examples})
    question_types = list(question_types)
    a_index = {a: i for i, a in enumerate(answers)}
    t_index = {t: i for i, t in enumerate(question_types)}
    labels = torch.zeros(len(examples), len(answers))
    qtype = torch.full((len(examples),), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        for a, s in e["scores"].items():
            j = a_index.get(a)
            if j is not None:
                labels[i, j] = s
        qtype[i] = t_index.get(str(e["question_type"]), -1)
    prior = torch.zeros(len(question_types), len(answers))
    known = qtype >= 0
    prior.index_add_(0, qtype[known], labels[known])
    totals = prior.sum(1, keepdim=True)
    prior = torch.where(
        totals > 0, prior / totals.clamp_min(1e-12), torch.full_like(prior, 1.0 / len(answers))
    )
    return {
        "labels": labels,
        "question_type": qtype,
        "answers": answers,
        "question_types": question_types,
        "prior": prior,
    }


# ---------------------------------------------------------------------------------------
# VALSE, SugarCrepe
# ---------------------------------------------------------------------------------------


def _dict_records(path: Path, what: str) -> dict[str, Any]:
    data = _read_json(path, what)
    if not isinstance(data, dict):
        raise DataError(
            f"{what}: {str(path)!r} must hold a JSON object mapping ids to records, got "
            f"{type(data).__name__}."
        )
    for key, rec in data.items():
        if not isinstance(rec, dict):
            raise DataError(
                f"{what}: {path}: record {key!r} must be an object, got {type(rec).__name__}."
            )
    return data


def load_valse(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
    valid_only: bool = False,
) -> list[dict[str, Any]]:
    """One VALSE piece (Parcalabescu et al., 2022): an image, its caption and foil caption(s).

    Args:
        path: the piece's JSON file, ``{id: {dataset, image_file, caption, foil (or foils),
            classes, classes_foil, mturk, linguistic_phenomena, ...}}``.
        image_root: folder with the images; ``<image_root>/<image_file>`` or
            ``<image_root>/<dataset>/<image_file>``.
        load_images: also decode existing images to ``image``.
        valid_only: keep only records that at least two of three annotators validated
            (``mturk["caption"] >= 2``), the benchmark's recommended filter.

    Returns:
        One dict per record: ``id``, ``piece`` (the file's stem, e.g.
        ``"counting-adversarial"``), ``dataset``, ``image_file``, ``caption``, ``foils`` (list
        of str; ``foil`` is the first), ``linguistic_phenomena``, ``classes``,
        ``classes_foil``, ``mturk`` (dict or None), ``valid`` (bool or None without mturk
        votes), ``image_path``.
    """
    path = Path(path)
    data = _dict_records(path, "load_valse")
    images = Path(image_root) if image_root is not None else None
    out = []
    for key, rec in data.items():
        where = f"load_valse: {path}: record {key!r}"
        _require(rec, {"dataset": str, "image_file": str, "caption": str}, where)
        if "foils" in rec:
            foils = rec["foils"]
            if (
                not isinstance(foils, list)
                or not foils
                or not all(isinstance(f, str) and f.strip() for f in foils)
            ):
                raise DataError(
                    f"{where}: field 'foils' must be a non-empty list of strings, got {foils!r}."
                )
        elif "foil" in rec:
            _require(rec, {"foil": str}, where)
            foils = [rec["foil"]]
        else:
            raise DataError(
                f"{where}: missing field 'foil' (or 'foils') (fields present: {sorted(rec)})."
            )
        mturk = rec.get("mturk")
        valid = None
        if mturk is not None:
            if not isinstance(mturk, dict) or not isinstance(mturk.get("caption"), int):
                raise DataError(
                    f"{where}: field 'mturk' must be an object with an integer 'caption' count, got {mturk!r}."
                )
            valid = mturk["caption"] >= 2
        if valid_only and not valid:
            continue
        ex = {
            "id": key,
            "piece": path.stem,
            "dataset": rec["dataset"],
            "image_file": rec["image_file"],
            "caption": rec["caption"],
            "foils": list(foils),
            "foil": foils[0],
            "linguistic_phenomena": rec.get("linguistic_phenomena"),
            "classes": rec.get("classes"),
            "classes_foil": rec.get("classes_foil"),
            "mturk": mturk,
            "valid": valid,
        }
        img = _image_file(images, rec["image_file"], ("", rec["dataset"])) if images else None
        _attach(ex, "image", img, load_images)
        out.append(ex)
    logger.info("load_valse: %d records from %s", len(out), path)
    return out


def load_sugarcrepe(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """One SugarCrepe file (Hsieh et al., 2023), e.g. ``swap_obj.json``.

    Args:
        path: JSON ``{id: {filename, caption, negative_caption}}``.
        image_root: the COCO val2017 folder; images are ``<image_root>/<filename>``.
        load_images: also decode existing images to ``image``.

    Returns:
        One dict per record: ``id``, ``filename``, ``caption``, ``negative_caption``,
        ``category`` (the file's stem, e.g. ``"swap_obj"``), ``image_path``.
    """
    path = Path(path)
    data = _dict_records(path, "load_sugarcrepe")
    images = Path(image_root) if image_root is not None else None
    out = []
    for key, rec in data.items():
        where = f"load_sugarcrepe: {path}: record {key!r}"
        _require(rec, {"filename": str, "caption": str, "negative_caption": str}, where)
        ex = {
            "id": key,
            "filename": rec["filename"],
            "caption": rec["caption"],
            "negative_caption": rec["negative_caption"],
            "category": path.stem,
        }
        _attach(ex, "image", images / rec["filename"] if images else None, load_images)
        out.append(ex)
    logger.info("load_sugarcrepe: %d records from %s", len(out), path)
    return out


# ---------------------------------------------------------------------------------------
# NLVR, NLVR2
# ---------------------------------------------------------------------------------------


def load_nlvr(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """NLVR (Suhr et al., 2017): a sentence, true/false, about a synthetic image.

    Args:
        path: the split's JSON-lines file (``train.json``, ``dev.json``, ``test.json``), each line
            ``{sentence, label: "true"|"false", identifier, directory, evals, structured_rep}``.
        image_root: the split's ``images`` folder; the six renderings of a sentence are
            ``<image_root>/<directory>/<split>-<identifier>-<k>.png``. Records without
            ``directory`` (the hidden test split) are looked up in every sub-folder of
            ``image_root`` (and ``image_root`` itself). Sentences without any image found
            are counted in one warning.
        load_images: also decode the first existing rendering to ``image``.

    Returns:
        One dict per line: ``identifier``, ``sentence``, ``label`` (bool), ``labels`` (int 0/1),
        ``directory``, ``structured_rep`` (or None), ``image_paths`` (existing renderings),
        ``image_path`` (the first, or None).
    """
    path = Path(path)
    images = Path(image_root) if image_root is not None else None
    index: dict[str, list[str]] | None = None
    out = []
    missing = 0
    for line_no, rec in _iter_jsonl(path, "load_nlvr"):
        where = f"load_nlvr: {path}:{line_no}"
        _require(rec, {"sentence": str, "identifier": str}, where)
        if "label" not in rec:
            raise DataError(f"{where}: missing field 'label' (fields present: {sorted(rec)}).")
        label = _bool_label(rec["label"], where)
        directory = rec.get("directory")
        paths: list[str] = []
        if images is not None:
            if directory is not None:
                folder = images / str(directory)
                if is_dir(folder):  # "<split>-<identifier>-<k>.png", matched without a glob
                    infix = f"-{rec['identifier']}-"  # (an identifier is data, not a pattern)
                    paths = sorted(
                        str(p)
                        for p in folder.iterdir()
                        if p.name.endswith(".png") and infix in p.name[:-4]
                    )
            else:  # the hidden split: no directory; renderings sit in numbered sub-folders
                if index is None:
                    index = _nlvr_image_index(images)
                paths = index.get(rec["identifier"], [])
            missing += not paths
        ex = {
            "identifier": rec["identifier"],
            "sentence": rec["sentence"],
            "label": label,
            "labels": int(label),
            "directory": directory,
            "structured_rep": rec.get("structured_rep"),
            "image_paths": paths,
        }
        _attach(ex, "image", Path(paths[0]) if paths else None, load_images)
        out.append(ex)
    if images is not None and missing:
        warnings.warn(
            f"load_nlvr: no image found for {missing} of {len(out)} sentences of {str(path)!r} "
            f"under {str(images)!r}; expected '<image_root>/<directory>/<split>-<identifier>-<k>.png' "
            "(or, for records without 'directory', any numbered sub-folder of image_root).",
            UserWarning,
            stacklevel=2,
        )
    logger.info("load_nlvr: %d examples from %s", len(out), path)
    return out


def load_nlvr2(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """NLVR2 (Suhr et al., 2019): a sentence, true/false, about a pair of photographs.

    Args:
        path: the split's JSON-lines file, each line ``{sentence, label: "True"|"False",
            identifier: "<split>-<set>-<pair>-<sentence>", left_url, right_url, directory,
            synset, query, writer, validation, extra_validations}`` (only ``sentence``,
            ``label`` and ``identifier`` are required).
        image_root: folder of the images; the pair is ``<stem>-img0.png`` / ``<stem>-img1.png``
            with ``stem`` the identifier without its last ``-<sentence>`` part, found directly
            in ``image_root`` or in ``image_root/<directory>``.
        load_images: also decode existing images to ``image_left`` / ``image_right``.

    Returns:
        One dict per line: ``identifier``, ``sentence``, ``label`` (bool), ``labels`` (int 0/1),
        ``left_url``, ``right_url``, ``directory``, ``synset``, ``query``,
        ``image_left_path``, ``image_right_path``.
    """
    path = Path(path)
    images = Path(image_root) if image_root is not None else None
    out = []
    for line_no, rec in _iter_jsonl(path, "load_nlvr2"):
        where = f"load_nlvr2: {path}:{line_no}"
        _require(rec, {"sentence": str, "identifier": str}, where)
        if "label" not in rec:
            raise DataError(f"{where}: missing field 'label' (fields present: {sorted(rec)}).")
        label = _bool_label(rec["label"], where)
        ident = rec["identifier"]
        if ident.count("-") < 3:
            raise DataError(
                f"{where}: identifier {ident!r} does not look like '<split>-<set>-<pair>-<sentence>'."
            )
        for k in ("left_url", "right_url"):
            if k in rec and not isinstance(rec[k], str):
                raise DataError(f"{where}: field {k!r} must be a string URL, got {rec[k]!r}.")
        stem = ident.rsplit("-", 1)[0]
        directory = rec.get("directory")
        subdirs = ("", str(directory)) if directory is not None else ("",)
        ex = {
            "identifier": ident,
            "sentence": rec["sentence"],
            "label": label,
            "labels": int(label),
            "left_url": rec.get("left_url"),
            "right_url": rec.get("right_url"),
            "directory": directory,
            "synset": rec.get("synset"),
            "query": rec.get("query"),
        }
        for side, k in (("left", 0), ("right", 1)):
            img = _image_file(images, f"{stem}-img{k}.png", subdirs) if images else None
            _attach(ex, f"image_{side}", img, load_images)
        out.append(ex)
    logger.info("load_nlvr2: %d examples from %s", len(out), path)
    return out


def _nlvr_image_index(images: Path) -> dict[str, list[str]]:
    """identifier -> sorted rendering paths of every ``<split>-<identifier>-<k>.png`` found
    directly in ``images`` or one sub-folder down."""
    index: dict[str, list[str]] = {}
    if not images.is_dir():
        return index
    for p in [*images.glob("*.png"), *images.glob("*/*.png")]:
        parts = p.stem.split("-")
        if len(parts) >= 3:
            index.setdefault("-".join(parts[1:-1]), []).append(str(p))
    for paths in index.values():
        paths.sort()
    return index


# ---------------------------------------------------------------------------------------
# ARO (NegCLIP caption files)
# ---------------------------------------------------------------------------------------


def load_aro(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    load_images: bool = False,
) -> list[dict[str, Any]]:
    """The NegCLIP hard-negative captions of ARO (Yuksekgonul et al., 2023).

    Args:
        path: ``train_neg_clip.tsv`` or ``valid_neg_clip.tsv`` (tab-separated, with a header):
            ``title`` (the COCO caption), ``filepath`` (the image), ``neg_caption`` (a Python
            list literal of negative captions, read with :func:`ast.literal_eval`, never
            evaluated as code), optionally ``neg_image`` and an unnamed index column.
        image_root: folder the ``filepath`` values are relative to (default: as written).
        load_images: also decode existing images to ``image``.

    Returns:
        One dict per row: ``id`` (the index column, or the row number), ``caption``,
        ``negatives`` (list of str), ``filepath``, ``category`` (the file's stem, e.g.
        ``"valid_neg_clip"``), ``image_path``. The audit makes one pair per (row, negative),
        grouped by image.

    Raises:
        DataError: a missing column, or a ``neg_caption`` that is not a list of strings.
    """
    path = Path(path)
    what = "load_aro"
    _check_file(path, what)
    images = Path(image_root) if image_root is not None else None
    out = []
    rows = iter_csv(path, what, delimiter="\t")  # hardened: every malformed row is a DataError
    neg_key = None
    for line_no, row in rows:
        if neg_key is None:
            neg_key = next(
                (k for k in ("neg_caption", "neg_captions", "negatives") if k in row), ""
            )
            need = [k for k in ("title", "filepath") if k not in row] + (
                [] if neg_key else ["neg_caption"]
            )
            if need:
                raise DataError(
                    f"{what}: {str(path)!r} lacks column(s) {need} (header: {list(row)}); "
                    "expected the NegCLIP TSV with 'title', 'filepath' and 'neg_caption'."
                )
        if not any(cell.strip() for cell in row.values()):
            continue
        where = f"{what}: {path}:{line_no}"
        caption = row["title"]
        if not caption.strip():
            raise DataError(f"{where}: empty 'title' (the caption).")
        raw = row[neg_key]
        try:
            negatives = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise DataError(
                f"{where}: {neg_key!r} is not a Python list literal ({type(exc).__name__}): "
                f"{raw[:80]!r}."
            ) from exc
        if (
            not isinstance(negatives, (list, tuple))
            or not negatives
            or not all(isinstance(n, str) and n.strip() for n in negatives)
        ):
            raise DataError(
                f"{where}: {neg_key!r} must be a non-empty list of strings, got {raw[:80]!r}."
            )
        filepath = row["filepath"]
        index = row[""] if row.get("", "").strip() else str(len(out))
        ex = {
            "id": index,
            "caption": caption,
            "negatives": list(negatives),
            "filepath": filepath,
            "category": path.stem,
        }
        img = (images / filepath) if images is not None else Path(filepath)
        _attach(ex, "image", img, load_images)
        out.append(ex)
    logger.info("load_aro: %d captions from %s", len(out), path)
    return out


__all__ = [
    "load_aro",
    "load_image",
    "load_nlvr",
    "load_nlvr2",
    "load_sugarcrepe",
    "load_valse",
    "load_vqacp",
    "load_winoground",
    "vqa_soft_scores",
    "vqa_targets",
]
