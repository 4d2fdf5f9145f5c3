"""Audit a benchmark's own language prior: how much a model that never sees the image solves.

If a text-only classifier answers most questions, accuracy on that benchmark says little about
grounding: the benchmark itself leaks the answer through its questions. The audit reports the
cross-validated accuracy of a blind text model next to two trivial baselines.

    >>> from causalvl.diagnostics.audit import audit_blind_solvability
    >>> texts = ["is it red"] * 20 + ["is it blue"] * 20
    >>> labels = [1] * 20 + [0] * 20
    >>> audit_blind_solvability((texts, labels), folds=5).text_model_accuracy
    1.0
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import DataError, InputError
from .results import BlindSolvabilityAudit

logger = logging.getLogger("causalvl.diagnostics.audit")


def _item_text(item: Any, tokenizer: Any | None) -> tuple[str, str]:
    for key in ("question", "text", "caption"):
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


def _label(value: Any) -> int:
    if hasattr(value, "dim") and value.dim() > 0:
        if value.dim() == 1 and value.is_floating_point():  # soft scores: best answer
            return int(value.argmax())
        raise DataError(
            f"labels must be class ids or soft-score vectors, got shape {tuple(value.shape)}."
        )
    return int(value)


def _collect(data: Any) -> tuple[list[str], list[int], list[int] | None, str]:
    if isinstance(data, tuple) and len(data) in (2, 3):
        texts, labels = list(data[0]), [int(x) for x in data[1]]
        qtypes = [int(x) for x in data[2]] if len(data) == 3 else None
        if not all(isinstance(t, str) for t in texts):
            raise InputError(
                "texts must be strings when passing (texts, labels[, question_types])."
            )
        return texts, labels, qtypes, "the given texts"
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise InputError(
            f"audit_blind_solvability expects a map-style dataset or (texts, labels), got "
            f"{type(data).__name__}."
        )
    tokenizer = getattr(data, "tokenizer", None)
    texts, labels, qtypes = [], [], []
    source = ""
    for i in range(len(data)):
        item = data[i]
        text, source = _item_text(item, tokenizer)
        texts.append(text)
        labels.append(_label(item["labels"]))
        qt = item.get("question_type")
        qtypes.append(None if qt is None else int(qt))
    has_qt = all(q is not None for q in qtypes)
    return texts, labels, (qtypes if has_qt else None), source  # type: ignore[return-value]


def audit_blind_solvability(
    data: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    question_types: Sequence[int] | None = None,
    max_features: int = 20000,
) -> BlindSolvabilityAudit:
    """Cross-validated accuracy of blind (text-only) baselines on a benchmark.

    Three predictors, each trained on the training folds and scored on the held-out fold of a
    stratified k-fold split (seeded shuffle):

    * a text model: TF-IDF of word unigrams and bigrams + logistic regression;
    * the most common training answer per question type (when types are known);
    * the most common training answer overall.

    Args:
        data: a map-style dataset whose items have ``labels`` and a ``question`` string (or
            ``input_ids``), optionally ``question_type``; or a tuple ``(texts, labels)`` /
            ``(texts, labels, question_types)``.
        folds: number of cross-validation folds (reduced, with a warning, when the rarest
            answer has fewer examples).
        seed: seeds the fold shuffle and the classifier.
        question_types: per-example question type ids, overriding the dataset's.
        max_features: vocabulary size cap of the TF-IDF model.

    Returns:
        :class:`BlindSolvabilityAudit`.
    """
    import warnings

    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    texts, labels, qtypes, source = _collect(data)
    if question_types is not None:
        qtypes = [int(q) for q in question_types]
        if len(qtypes) != len(texts):
            raise InputError(f"question_types has {len(qtypes)} entries for {len(texts)} examples.")
    n = len(texts)
    if n < 4:
        raise DataError(f"the audit needs at least 4 examples, got {n}.")
    if not isinstance(folds, int) or folds < 2:
        raise InputError(f"folds = {folds!r} must be an integer >= 2.")
    y = np.asarray(labels)
    counts = Counter(labels)
    n_classes = len(counts)
    min_count = min(counts.values())
    if min_count >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        split_iter = splitter.split(np.zeros(n), y)
    else:
        k = min(folds, n)
        warnings.warn(
            f"the rarest answer has {min_count} example(s), fewer than folds={folds}; using "
            f"unstratified {k}-fold cross-validation.",
            UserWarning,
            stacklevel=2,
        )
        folds = k
        split_iter = KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))
    text_arr = np.asarray(texts, dtype=object)
    qt_arr = np.asarray(qtypes) if qtypes is not None else None
    text_acc, qt_acc, maj_acc, sizes = [], [], [], []
    for train, test in split_iter:
        train_labels = y[train]
        majority = Counter(train_labels.tolist()).most_common(1)[0][0]
        maj_acc.append(float((y[test] == majority).mean()))
        if n_classes > 1 and len(set(train_labels.tolist())) > 1:
            model = make_pipeline(
                TfidfVectorizer(
                    ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", max_features=max_features
                ),
                LogisticRegression(max_iter=2000, C=10.0, random_state=seed),
            )
            model.fit(text_arr[train], train_labels)
            text_acc.append(float((model.predict(text_arr[test]) == y[test]).mean()))
        else:
            text_acc.append(maj_acc[-1])
        if qt_arr is not None:
            per_type: dict[int, int] = {}
            for q in set(qt_arr[train].tolist()):
                per_type[q] = Counter(train_labels[qt_arr[train] == q].tolist()).most_common(1)[0][
                    0
                ]
            pred = np.asarray([per_type.get(q, majority) for q in qt_arr[test].tolist()])
            qt_acc.append(float((pred == y[test]).mean()))
        sizes.append(len(test))
    w = np.asarray(sizes, dtype=float) / sum(sizes)
    text_mean = float((w * np.asarray(text_acc)).sum())
    maj_mean = float((w * np.asarray(maj_acc)).sum())
    logger.info("blind audit: text %.3f, majority %.3f over %d examples", text_mean, maj_mean, n)
    return BlindSolvabilityAudit(
        text_model_accuracy=text_mean,
        text_model_accuracy_std=float(np.std(text_acc)),
        majority_per_question_type_accuracy=float((w * np.asarray(qt_acc)).sum())
        if qt_acc
        else None,
        majority_class_accuracy=maj_mean,
        blind_gain=text_mean - maj_mean,
        n=n,
        n_classes=n_classes,
        folds=folds,
        seed=seed,
        text_source=source,
    )


__all__ = ["audit_blind_solvability"]
