"""Turn a benchmark (any loader's output, a dataset, or plain lists) into audit items.

Two shapes come out:

* :class:`Pairs` for caption-vs-negative benchmarks (SugarCrepe, VALSE, ARO, Winoground's
  text side, NLVR2 sentences written for the same image pair): one true and one false text
  per item, the image they were written for (the fold group) and a category;
* :class:`Singles` for single-text benchmarks (VQA-CP, NLVR, PriorShiftVQA): one text and
  its answer per item (answers may be strings such as ``"yes"``, ``"2"``, ``"red"``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import DataError, InputError

#: benchmarks the audit recognises from the keys of their loader's records
BENCHMARKS = ("sugarcrepe", "valse", "aro", "winoground", "nlvr", "nlvr2", "vqacp")


@dataclasses.dataclass
class Pairs:
    """Caption-vs-negative items: ``true[i]`` describes the image ``group[i]``, ``false[i]``
    does not."""

    true: list[str]
    false: list[str]
    group: list[str]
    category: list[str]

    def __len__(self) -> int:
        return len(self.true)


@dataclasses.dataclass
class Singles:
    """Single-text items: ``texts[i]`` has the answer ``labels[i]``."""

    texts: list[str]
    labels: list[Any]
    group: list[str] | None
    category: list[str]
    qtypes: list[Any] | None

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class Collected:
    benchmark: str
    items: Pairs | Singles
    source: str
    grouping: str


def detect(record: Mapping[str, Any]) -> str | None:
    """The benchmark whose loader writes records with these keys, or None."""
    keys = set(record)
    if {"caption", "negative_caption"} <= keys:
        return "sugarcrepe"
    if {"caption", "foils"} <= keys:
        return "valse"
    if {"caption", "negatives"} <= keys:
        return "aro"
    if {"caption_0", "caption_1"} <= keys:
        return "winoground"
    if {"sentence", "label"} <= keys:
        return "nlvr2" if ("left_url" in keys or "image_left_path" in keys) else "nlvr"
    if {"question", "multiple_choice_answer"} <= keys:
        return "vqacp"
    return None


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} must be a non-empty string, got {value!r}.")
    return value


def _records(data: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(data, (Mapping, str, bytes)):
        return None
    if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
        return list(data)
    return None


def collect(data: Any, benchmark: str | None = None, mode: str = "auto") -> Collected:
    """Audit items from ``data``; see :func:`causalvl.audit_blind_solvability` for the forms."""
    if mode not in ("auto", "pairwise", "single"):
        raise InputError(f"mode={mode!r}; choose 'auto', 'pairwise' or 'single'.")
    if isinstance(data, tuple) and len(data) in (2, 3) and not isinstance(data[0], Mapping):
        if mode == "pairwise":
            raise InputError(
                "(texts, labels) tuples are single-text data; pass mode='single' or 'auto', or "
                "pass caption-vs-negative records (e.g. load_sugarcrepe's output) for pairwise mode."
            )
        return _from_tuple(data, benchmark)
    records = _records(data)
    if records is not None:
        kind = benchmark if benchmark in BENCHMARKS else detect(records[0])
        if kind is not None:
            return _from_loader(records, kind, mode)
        if not _has_single_keys(records[0]):
            raise DataError(
                f"cannot tell which benchmark records with keys {sorted(records[0])} come from; "
                f"pass the output of one of the loaders ({', '.join(BENCHMARKS)}) unchanged, "
                "records with 'labels' and a 'question' / 'text' / 'caption' string, or "
                "(texts, labels)."
            )
    if mode == "pairwise":
        raise InputError(
            "pairwise mode needs caption-vs-negative records (SugarCrepe, VALSE, ARO, "
            "Winoground or NLVR2 loader output); this data holds single texts."
        )
    return _from_dataset(data, benchmark)


def _has_single_keys(rec: Mapping[str, Any]) -> bool:
    return "labels" in rec and any(k in rec for k in ("question", "text", "caption", "input_ids"))


# ---------------------------------------------------------------------------------------
# loader outputs
# ---------------------------------------------------------------------------------------


def _from_loader(records: list[Mapping[str, Any]], kind: str, mode: str) -> Collected:
    if kind in ("nlvr", "vqacp") and mode == "pairwise":
        raise InputError(
            f"{kind} is a single-text benchmark (one sentence or question and its answer); use "
            "mode='single' or 'auto'."
        )
    if kind == "nlvr2" and mode != "single":
        pairs = _nlvr2_pairs(records)
        if len(pairs) or mode == "pairwise":
            return Collected(
                "nlvr2",
                pairs,
                "the 'sentence' of NLVR2 records (a true and a false sentence written for the "
                "same image pair)",
                "image pair (identifier without its sentence number); texts shared across pairs "
                "are kept in one fold",
            )
    if kind in ("nlvr", "nlvr2"):
        texts, labels, group = [], [], []
        for i, r in enumerate(records):
            where = f"{kind} record {i}"
            texts.append(_text(r.get("sentence"), where, "sentence"))
            if "labels" in r:
                labels.append(int(r["labels"]))
            else:
                lab = r.get("label")
                if isinstance(lab, str) and lab.strip().lower() in ("true", "false"):
                    lab = lab.strip().lower() == "true"
                if not isinstance(lab, bool):
                    raise DataError(f"{where}: field 'label' must be true/false, got {lab!r}.")
                labels.append(int(lab))
            group.append(" ".join(texts[-1].lower().split()))
        return Collected(
            kind,
            Singles(texts, labels, group, [kind] * len(texts), None),
            "the 'sentence' of each record (label true = 1)",
            "sentence (a sentence that recurs with several images never spans folds)",
        )
    if kind == "vqacp":
        texts, labels, group, qtypes = [], [], [], []
        for i, r in enumerate(records):
            where = f"vqacp record {i}"
            texts.append(_text(r.get("question"), where, "question"))
            ans = r.get("multiple_choice_answer")
            if not isinstance(ans, str):
                raise DataError(
                    f"{where}: field 'multiple_choice_answer' must be a string, got {ans!r}."
                )
            labels.append(ans.strip().lower())
            group.append(str(r.get("image_id", i)))
            qtypes.append(r.get("question_type"))
        has_qt = all(q is not None for q in qtypes)
        cats = [str(r.get("answer_type") or "vqacp") for r in records]
        return Collected(
            "vqacp",
            Singles(texts, labels, group, cats, qtypes if has_qt else None),
            "the 'question' of each record; answers are the 'multiple_choice_answer' strings",
            "image (image_id): questions about one image never span folds",
        )
    if mode == "single":
        raise InputError(
            f"{kind} is a caption-vs-negative benchmark; audit it in pairwise mode "
            "(mode='pairwise' or 'auto')."
        )
    true, false, group, cat = [], [], [], []

    def add(t: str, f: str, g: Any, c: Any) -> None:
        true.append(t)
        false.append(f)
        group.append(str(g))
        cat.append(str(c))

    for i, r in enumerate(records):
        where = f"{kind} record {r.get('id', i)!r}"
        if kind == "sugarcrepe":
            add(
                _text(r.get("caption"), where, "caption"),
                _text(r.get("negative_caption"), where, "negative_caption"),
                r.get("filename", f"#{i}"),
                r.get("category", "sugarcrepe"),
            )
        elif kind == "valse":
            foils = r.get("foils") or ([r["foil"]] if "foil" in r else [])
            if not foils:
                raise DataError(f"{where}: no foil caption.")
            cap = _text(r.get("caption"), where, "caption")
            for f in foils:
                add(
                    cap,
                    _text(f, where, "foils"),
                    r.get("image_file", f"#{i}"),
                    r.get("piece") or r.get("linguistic_phenomena") or "valse",
                )
        elif kind == "aro":
            cap = _text(r.get("caption"), where, "caption")
            negs = r.get("negatives")
            if not isinstance(negs, Sequence) or isinstance(negs, str) or not negs:
                raise DataError(f"{where}: field 'negatives' must be a non-empty list.")
            for f in negs:
                add(
                    cap,
                    _text(f, where, "negatives"),
                    r.get("filepath", f"#{i}"),
                    r.get("category", "aro"),
                )
        elif kind == "winoground":
            c0 = _text(r.get("caption_0"), where, "caption_0")
            c1 = _text(r.get("caption_1"), where, "caption_1")
            c = r.get("collapsed_tag") or r.get("tag") or "winoground"
            add(c0, c1, f"{r.get('id', i)}", c)  # image_0 is described by caption_0
            add(c1, c0, f"{r.get('id', i)}", c)  # image_1 by caption_1
    sources = {
        "sugarcrepe": "'caption' (true) vs 'negative_caption'",
        "valse": "'caption' (true) vs each of its 'foils'",
        "aro": "'caption' (true) vs each NegCLIP negative",
        "winoground": "caption_0 vs caption_1 for image_0, and the reverse for image_1",
    }
    groupings = {
        "sugarcrepe": "image (filename)",
        "valse": "image (image_file)",
        "aro": "image (filepath)",
        "winoground": "example id (its two images and two captions)",
    }
    return Collected(
        kind,
        Pairs(true, false, group, cat),
        sources[kind],
        groupings[kind] + "; texts shared across pairs are kept in one fold",
    )


def _nlvr2_pairs(records: list[Mapping[str, Any]]) -> Pairs:
    by_image: dict[str, dict[bool, list[str]]] = defaultdict(lambda: {True: [], False: []})
    for i, r in enumerate(records):
        where = f"nlvr2 record {i}"
        sent = _text(r.get("sentence"), where, "sentence")
        ident = str(r.get("identifier", f"#{i}"))
        stem = ident.rsplit("-", 1)[0] if ident.count("-") >= 3 else ident
        lab = r.get("label")
        if isinstance(lab, str):
            lab = lab.strip().lower() == "true"
        by_image[stem][bool(lab)].append(sent)
    pairs = Pairs([], [], [], [])
    for stem, side in by_image.items():
        for t in side[True]:
            for f in side[False]:
                if t != f:
                    pairs.true.append(t)
                    pairs.false.append(f)
                    pairs.group.append(stem)
                    pairs.category.append("nlvr2")
    return pairs


# ---------------------------------------------------------------------------------------
# tuples and map-style datasets
# ---------------------------------------------------------------------------------------


def _plain_label(value: Any) -> Any:
    if hasattr(value, "dim"):
        if value.dim() == 0:
            return int(value)
        if value.dim() == 1 and value.is_floating_point():  # soft scores: best answer
            return int(value.argmax())
        raise DataError(
            f"labels must be class ids or soft-score vectors, got shape {tuple(value.shape)}."
        )
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, str)):
        return value.strip().lower() if isinstance(value, str) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "item"):
        return value.item()
    raise DataError(f"labels must be class ids or answer strings, got {value!r}.")


def _from_tuple(data: tuple, benchmark: str | None) -> Collected:
    texts = list(data[0])
    labels = [_plain_label(x) for x in data[1]]
    if len(labels) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text.")
    if not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be strings when passing (texts, labels[, question_types]).")
    qtypes = None
    if len(data) == 3:
        qtypes = list(data[2])
        if len(qtypes) != len(texts):
            raise InputError(f"question_types has {len(qtypes)} entries for {len(texts)} texts.")
    return Collected(
        benchmark or "custom",
        Singles(texts, labels, None, ["all"] * len(texts), qtypes),
        "the given texts",
        "none (each text is its own group)",
    )


def _item_text(item: Mapping[str, Any], tokenizer: Any | None) -> tuple[str, str]:
    for key in ("question", "text", "caption", "sentence"):
        value = item.get(key)
        if isinstance(value, str):
            return value, f"the example key {key!r}"
    ids = item.get("input_ids")
    if ids is None:
        raise DataError(
            f"cannot find question text in an example with keys {sorted(item)}; add a "
            "'question' string or 'input_ids', or pass (texts, labels)."
        )
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    mask = item.get("attention_mask")
    if mask is not None:
        m = mask.tolist() if hasattr(mask, "tolist") else list(mask)
        ids = [i for i, keep in zip(ids, m) if keep]
    if tokenizer is not None and hasattr(tokenizer, "decode"):
        return str(tokenizer.decode(ids)), "the decoded 'input_ids'"
    return " ".join(f"t{i}" for i in ids), "the token ids of 'input_ids'"


def _from_dataset(data: Any, benchmark: str | None) -> Collected:
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise InputError(
            f"audit_blind_solvability expects a loader's records, a map-style dataset or "
            f"(texts, labels), got {type(data).__name__}."
        )
    if len(data) == 0:
        raise DataError("the audit got an empty dataset.")
    tokenizer = getattr(data, "tokenizer", None)
    answers = getattr(data, "answers", None)
    names = [str(a) for a in answers] if isinstance(answers, (list, tuple)) else []
    texts, labels, qtypes, group = [], [], [], []
    source = ""
    for i in range(len(data)):
        item = data[i]
        if not isinstance(item, Mapping):
            raise DataError(f"example {i} is a {type(item).__name__}, expected a dict.")
        text, source = _item_text(item, tokenizer)
        texts.append(text)
        if "labels" not in item:
            raise DataError(
                f"example {i} has no 'labels' (keys: {sorted(item)}); a single-text audit needs "
                "each example's answer. For a public benchmark pass its loader's output "
                "unchanged (e.g. load_sugarcrepe(...)), which the audit recognises."
            )
        labels.append(_plain_label(item["labels"]))
        if isinstance(labels[-1], int) and 0 <= labels[-1] < len(names):
            labels[-1] = names[labels[-1]]  # the answer's text, e.g. 'yes', when known
        qt = item.get("question_type")
        qtypes.append(None if qt is None else _plain_label(qt))
        img = item.get("image_id")
        group.append(None if img is None else str(_plain_label(img)))
    has_qt = all(q is not None for q in qtypes)
    has_groups = all(g is not None for g in group)
    return Collected(
        benchmark or type(data).__name__,
        Singles(
            texts,
            labels,
            group if has_groups else None,
            ["all"] * len(texts),
            qtypes if has_qt else None,
        ),
        source,
        "image (image_id)" if has_groups else "none (each example is its own group)",
    )
