"""POPE-style object-hallucination evaluation (Li et al., 2023, "Evaluating Object
Hallucination in Large Vision-Language Models").

From labelled images (each image id with the set of objects it contains) the builder asks
``"Is there a {object} in the image?"``: for every image, up to ``num_per_image`` of its own
objects (answer "yes") and as many absent objects (answer "no"), so yes and no are balanced.
The absent objects are drawn three ways, as POPE defines them:

``random``
    uniformly among all objects of the label vocabulary that are not in the image;
``popular``
    the most frequent objects of the dataset (number of images containing them) that are not
    in the image, most frequent first;
``adversarial``
    for each "yes" object, the object that co-occurs with it most often in the dataset (number
    of images holding both) among those not in the image and not asked yet; a random absent
    object when none co-occurs (as POPE's reference code does).

Ties are broken by object name, so ``popular`` and ``adversarial`` are deterministic; ``random``
and the choice of "yes" objects use ``random.Random(seed)``.

Generated answers are parsed as in POPE's evaluation script (:func:`parse_yes_no`), and the
metrics (:func:`pope_metrics`) are accuracy, precision, recall and F1 with "yes" as the positive
class, plus the **yes-ratio**, always reported: contrastive decoding's POPE gains have been
traced to a shift toward answering "yes" (Yin et al., 2025), which the yes-ratio exposes.

Example:
    >>> labels = {"img1": {"dog", "frisbee"}, "img2": {"cat", "sofa"}, "img3": {"dog", "sofa"}}
    >>> qs = build_pope_questions(labels, setting="popular", num_per_image=1, seed=0)
    >>> sorted({q.label for q in qs})
    ['no', 'yes']
    >>> pope_metrics(["Yes, there is.", "No."], ["yes", "yes"]).recall
    0.5
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..diagnostics.results import Metric, MetricKind, MetricTable, Result
from ..errors import ConfigError, DataError

Setting = Literal["random", "popular", "adversarial"]
SETTINGS: tuple[str, ...] = ("random", "popular", "adversarial")
DEFAULT_TEMPLATE = "Is there a {object} in the image?"

DEFINITIONS: dict[str, str] = {
    "accuracy": "Fraction of yes/no object-existence questions answered correctly.",
    "precision": "Of the questions answered 'yes', the fraction whose object is in the image "
    "(TP / (TP + FP); 0 when nothing was answered 'yes').",
    "recall": "Of the questions whose object is in the image, the fraction answered 'yes' "
    "(TP / (TP + FN)).",
    "f1": "Harmonic mean of precision and recall, 'yes' being the positive class.",
    "yes_ratio": "Fraction of all questions answered 'yes' (0.5 for a balanced, unbiased "
    "answerer; above 0.5 is a shift toward 'yes').",
    "n": "Number of questions (half have the answer 'yes').",
    "tp": "Questions about present objects answered 'yes'.",
    "fp": "Questions about absent objects answered 'yes' (hallucinated objects).",
    "tn": "Questions about absent objects answered 'no'.",
    "fn": "Questions about present objects answered 'no'.",
}
SETTING_DEFINITIONS: dict[str, str] = {
    "random": "absent objects drawn uniformly among all labels not in the image",
    "popular": "absent objects = the most frequent labels of the dataset not in the image",
    "adversarial": "absent objects = for each present object asked about, the label that "
    "co-occurs with it most often but is not in the image",
}


@dataclass(frozen=True)
class POPEQuestion:
    """One yes/no question.

    Attributes:
        image_id: the image it is about.
        object: the object name asked about.
        label: ``"yes"`` (the object is in the image) or ``"no"``.
        setting: how the negative objects were sampled.
        text: the question, e.g. ``"Is there a dog in the image?"``.
    """

    image_id: Hashable
    object: str
    label: Literal["yes", "no"]
    setting: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "object": self.object,
            "label": self.label,
            "setting": self.setting,
            "text": self.text,
        }


def _normalise(annotations: Mapping[Hashable, Collection[str]]) -> dict[Hashable, frozenset[str]]:
    if not isinstance(annotations, Mapping) or not annotations:
        raise DataError(
            "POPE needs labelled images: a non-empty mapping {image_id: [object labels]}, got "
            f"{type(annotations).__name__}."
        )
    out: dict[Hashable, frozenset[str]] = {}
    for image_id, objects in annotations.items():
        if isinstance(objects, str) or not isinstance(objects, Iterable):
            raise DataError(
                f"image {image_id!r}: labels must be a collection of object names, got "
                f"{objects!r}; e.g. {{'img1': ['dog', 'frisbee']}}."
            )
        names = frozenset(str(o).strip() for o in objects)
        if "" in names:
            raise DataError(f"image {image_id!r} has an empty object label.")
        out[image_id] = names
    return out


def object_frequencies(annotations: Mapping[Hashable, Collection[str]]) -> Counter[str]:
    """Number of images each object appears in."""
    return Counter(o for objs in _normalise(annotations).values() for o in objs)


def cooccurrence(annotations: Mapping[Hashable, Collection[str]]) -> dict[str, Counter[str]]:
    """``co[a][b]`` = number of images holding both ``a`` and ``b`` (``a != b``)."""
    co: dict[str, Counter[str]] = {}
    for objs in _normalise(annotations).values():
        for a in objs:
            row = co.setdefault(a, Counter())
            for b in objs:
                if b != a:
                    row[b] += 1
    return co


def _ranked(
    scores: Mapping[str, int], exclude: Collection[str], candidates: Iterable[str]
) -> list[str]:
    pool = [o for o in candidates if o not in exclude]
    return sorted(pool, key=lambda o: (-scores.get(o, 0), o))


def build_pope_questions(
    annotations: Mapping[Hashable, Collection[str]],
    *,
    setting: Setting = "random",
    num_per_image: int = 3,
    seed: int = 0,
    template: str = DEFAULT_TEMPLATE,
) -> list[POPEQuestion]:
    """Balanced yes/no object-existence questions, POPE style (see module docs).

    Args:
        annotations: ``{image_id: collection of object labels}``.
        setting: ``"random"``, ``"popular"`` or ``"adversarial"`` negative sampling.
        num_per_image: "yes" questions per image (POPE uses 3); each image gets as many "no"
            questions. Images with fewer objects (or fewer absent candidates) get fewer, always
            balanced.
        seed: seeds ``random.Random`` (choice of present objects; random negatives).
        template: question text with an ``{object}`` field.

    Returns:
        list of :class:`POPEQuestion`, per image its "yes" questions then its "no" questions.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"POPE setting = {setting!r} is not allowed; choose one of {SETTINGS}.")
    if not isinstance(num_per_image, int) or isinstance(num_per_image, bool) or num_per_image < 1:
        raise ConfigError(f"num_per_image = {num_per_image!r} is invalid; pass an integer >= 1.")
    if "{object}" not in template:
        raise ConfigError(
            f"template = {template!r} has no '{{object}}' field; e.g. {DEFAULT_TEMPLATE!r}."
        )
    ann = _normalise(annotations)
    vocab = sorted({o for objs in ann.values() for o in objs})
    freq = object_frequencies(ann)
    co = cooccurrence(ann) if setting == "adversarial" else {}
    rng = random.Random(seed)
    out: list[POPEQuestion] = []
    for image_id, objs in ann.items():
        present = sorted(objs)
        absent_pool = [o for o in vocab if o not in objs]
        k = min(num_per_image, len(present), len(absent_pool))
        if k == 0:
            continue
        yes = rng.sample(present, k)
        if setting == "random":
            no = rng.sample(absent_pool, k)
        elif setting == "popular":
            no = _ranked(freq, objs, absent_pool)[:k]
        else:  # per "yes" object, its most co-occurring absent object not used yet
            no = []
            for o in yes:
                row = co.get(o, Counter())
                ranked = [c for c in _ranked(row, objs, absent_pool) if c not in no and row[c] > 0]
                if ranked:
                    no.append(ranked[0])
                else:  # nothing absent co-occurs with it: a random absent object, as POPE does
                    no.append(rng.choice([c for c in absent_pool if c not in no]))
        for label, names in (("yes", yes), ("no", no)):
            for name in names:
                out.append(
                    POPEQuestion(
                        image_id=image_id,
                        object=name,
                        label=label,  # type: ignore[arg-type]
                        setting=setting,
                        text=template.format(object=name),
                    )
                )
    if not out:
        raise DataError(
            "no POPE question could be built: every image either has no object or holds every "
            "label of the vocabulary; add images with different objects."
        )
    return out


def parse_yes_no(text: str) -> Literal["yes", "no"]:
    """Read a generated answer as POPE's evaluation script does.

    Only the first sentence (up to the first ``"."``) is kept, commas are removed, and the
    answer is ``"no"`` if one of its space-separated words is ``"No"``, ``"no"`` or ``"not"``,
    otherwise ``"yes"`` (so an empty or off-topic answer counts as "yes").

    Example:
        >>> parse_yes_no("No, there is no dog."), parse_yes_no("There is a dog. Not a cat.")
        ('no', 'yes')
    """
    if not isinstance(text, str):
        raise DataError(f"parse_yes_no expects generated text (str), got {type(text).__name__}.")
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _as_yes(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in ("yes", "no"):
            return value == "yes"
        if what == "prediction":
            return parse_yes_no(value) == "yes"
    raise DataError(
        f"POPE {what} {value!r} is not understood; pass 'yes' / 'no' / a bool"
        + (" or generated text." if what == "prediction" else ".")
    )


@dataclass(frozen=True)
class POPEMetrics(Result):
    """POPE metrics of one setting (fractions in [0, 1]; see :data:`DEFINITIONS`).

    A result like the diagnostics' own: values are checked on construction (the four counts
    must add up to ``n``), :meth:`metrics` lists every number with its definition, and
    :meth:`from_dict` reads :meth:`to_dict` back.
    """

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    n: int
    tp: int
    fp: int
    tn: int
    fn: int

    KINDS: ClassVar[dict[str, MetricKind]] = {
        **{k: "fraction" for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")},
        **{k: "count" for k in ("n", "tp", "fp", "tn", "fn")},
    }
    DEFINITIONS: ClassVar[dict[str, str]] = DEFINITIONS
    LABELS: ClassVar[dict[str, str]] = {"f1": "F1", "yes_ratio": "yes-ratio"}

    def _validate(self) -> None:
        if self.tp + self.fp + self.tn + self.fn != self.n:
            raise DataError(
                f"POPEMetrics: tp + fp + tn + fn = {self.tp + self.fp + self.tn + self.fn} "
                f"but n = {self.n}; the four counts must add up to the number of questions."
            )

    def to_dict(self) -> dict[str, float | int]:
        """``{metric: value}`` (the definitions are in :data:`DEFINITIONS`)."""
        return {k: getattr(self, k) for k in self.KINDS}


def pope_metrics(predictions: Sequence[Any], labels: Sequence[Any]) -> POPEMetrics:
    """Accuracy, precision, recall, F1 ("yes" positive) and yes-ratio.

    Args:
        predictions: generated texts (parsed with :func:`parse_yes_no`), ``"yes"``/``"no"``,
            or bools (True = yes).
        labels: ``"yes"``/``"no"`` or bools, one per prediction.

    Example:
        >>> m = pope_metrics(["yes", "yes", "no", "no"], ["yes", "no", "no", "yes"])
        >>> m.accuracy, m.precision, m.recall, m.yes_ratio
        (0.5, 0.5, 0.5, 0.5)
    """
    if len(predictions) != len(labels):
        raise DataError(
            f"{len(predictions)} predictions for {len(labels)} labels; pass one answer per question."
        )
    if not labels:
        raise DataError("pope_metrics got no questions.")
    pred = [_as_yes(p, "prediction") for p in predictions]
    gold = [_as_yes(g, "label") for g in labels]
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    tn = sum(not p and not g for p, g in zip(pred, gold))
    fn = sum(not p and g for p, g in zip(pred, gold))
    n = len(gold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return POPEMetrics(
        accuracy=(tp + tn) / n,
        precision=precision,
        recall=recall,
        f1=f1,
        yes_ratio=(tp + fp) / n,
        n=n,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


@dataclass(frozen=True)
class POPEResult(Result):
    """POPE metrics per setting for one answerer (e.g. one decoding method).

    An ordinary result: :meth:`metrics` lists every number (keys ``"<setting>.<metric>"``),
    :meth:`to_dict` / :meth:`from_dict` round-trip it, and a
    :class:`~causalvl.BiasReport` shows it directly (``extra_sections=[result]``) through
    :meth:`to_metric_table`, as it shows any table of numbers.

    Attributes:
        name: what was evaluated, e.g. ``"greedy"`` or ``"VCD alpha=1"``.
        settings: ``{setting: POPEMetrics}``.
        answers: ``{setting: tuple of parsed answers}`` in question order (not serialised).
    """

    name: str
    settings: Mapping[str, POPEMetrics]
    answers: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    def _validate(self) -> None:
        for s, m in self.settings.items():
            if s not in SETTING_DEFINITIONS:
                raise DataError(f"POPEResult: unknown setting {s!r}; settings are {SETTINGS}.")
            if not isinstance(m, POPEMetrics):
                raise DataError(
                    f"POPEResult: setting {s!r} holds a {type(m).__name__}; expected the "
                    "POPEMetrics of pope_metrics()."
                )

    def metrics(self, prefix: str = "") -> list[Metric]:
        """Every number of every setting; keys ``"<setting>.<metric>"``."""
        return [x for s, m in self.settings.items() for x in m.metrics(f"{prefix}{s}.")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"name", "settings": {setting: metrics}, "definitions",
        "setting_definitions"}``."""
        return {
            "name": self.name,
            "settings": {s: m.to_dict() for s, m in self.settings.items()},
            "definitions": dict(DEFINITIONS),
            "setting_definitions": {s: SETTING_DEFINITIONS[s] for s in self.settings},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> POPEResult:
        """Rebuild from :meth:`to_dict` output (definitions are ignored)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("settings"), Mapping):
            raise DataError(
                "POPEResult.from_dict expects {'name': ..., 'settings': {setting: metrics}}, got "
                f"{type(data).__name__}."
            )
        return cls(
            name=str(data.get("name", "model")),
            settings={s: POPEMetrics.from_dict(m) for s, m in data["settings"].items()},
        )

    def to_metric_table(self, title: str | None = None) -> MetricTable:
        """The result as a :class:`causalvl.MetricTable` (columns = settings), the form a
        report shows, for ``Diagnostics.with_extras(...)`` or ``BiasReport(extra_sections=[...])``."""
        values = {s: m.to_dict() for s, m in self.settings.items()}
        description = (
            "Object-hallucination yes/no questions (POPE). "
            + "; ".join(f"{s}: {SETTING_DEFINITIONS[s]}" for s in self.settings)
            + "."
        )
        return MetricTable.from_mapping(
            title or f"Hallucination (POPE): {self.name}",
            values,
            definitions=DEFINITIONS,
            kinds=dict(POPEMetrics.KINDS),
            description=description,
        )


class POPEEvaluator:
    """Builds POPE questions for every setting and scores an answerer on them.

    Args:
        annotations: ``{image_id: collection of object labels}``.
        settings: which negative samplings to evaluate (default all three).
        num_per_image, seed, template: as in :func:`build_pope_questions`.

    Example:
        >>> labels = {"a": {"dog", "ball"}, "b": {"cat"}, "c": {"dog", "cat", "sofa"}}
        >>> ev = POPEEvaluator(labels, num_per_image=1)
        >>> res = ev.evaluate(lambda qs: ["yes"] * len(qs), name="always yes")
        >>> res.settings["random"].yes_ratio, res.settings["random"].recall
        (1.0, 1.0)
    """

    def __init__(
        self,
        annotations: Mapping[Hashable, Collection[str]],
        *,
        settings: Sequence[Setting] = SETTINGS,  # type: ignore[assignment]
        num_per_image: int = 3,
        seed: int = 0,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        if isinstance(settings, str) or not settings:
            raise ConfigError(f"settings = {settings!r}; pass a list such as {list(SETTINGS)}.")
        self.annotations = _normalise(annotations)
        self.questions: dict[str, list[POPEQuestion]] = {
            s: build_pope_questions(
                self.annotations,
                setting=s,
                num_per_image=num_per_image,
                seed=seed,
                template=template,
            )
            for s in settings
        }

    def score(self, setting: str, answers: Sequence[Any]) -> POPEMetrics:
        """Metrics of ``answers`` (one per question of ``setting``, in order)."""
        if setting not in self.questions:
            raise ConfigError(
                f"setting {setting!r} was not built; built settings: {sorted(self.questions)}."
            )
        return pope_metrics(answers, [q.label for q in self.questions[setting]])

    def evaluate(
        self, answer_fn: Callable[[Sequence[POPEQuestion]], Sequence[Any]], *, name: str = "model"
    ) -> POPEResult:
        """Ask ``answer_fn`` every setting's questions and score its answers.

        ``answer_fn(questions) -> answers`` gets a list of :class:`POPEQuestion` (image id and
        question text) and returns one generated text (or ``"yes"``/``"no"``/bool) per question.
        """
        metrics: dict[str, POPEMetrics] = {}
        parsed: dict[str, tuple[str, ...]] = {}
        for setting, qs in self.questions.items():
            answers = list(answer_fn(qs))
            if len(answers) != len(qs):
                raise DataError(
                    f"answer_fn returned {len(answers)} answers for {len(qs)} {setting!r} "
                    "questions; return one answer per question."
                )
            metrics[setting] = pope_metrics(answers, [q.label for q in qs])
            parsed[setting] = tuple("yes" if _as_yes(a, "prediction") else "no" for a in answers)
        return POPEResult(name=name, settings=metrics, answers=parsed)
