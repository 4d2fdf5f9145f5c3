"""The efficacy protocol: does a debiasing method make a VQA model look at the image?

One protocol, used by ``causalvl demo`` and ``benchmarks/bench_efficacy.py``, fixed before any
method was tuned:

* **Data.** :class:`~causalvl.datasets.PriorShiftVQA` with a strong training prior
  (``prior_strength``) and the image left visible (no pixel noise). Splits: ``train`` (biased),
  ``val`` (held-out training examples: the in-distribution validation data), ``id``
  (``test_id``: held-out images, the training prior), **``ood``** (``test_uniform``: held-out
  images, every answer of a type equally likely; the primary split, on which no blind rule
  beats chance) and ``ood_random`` (``test_random``: a random prior per type that overlaps the
  training one, VQA-CP style; yes/no types and the others are reported separately).
* **Reference rows.** The blind *training-prior* rule (the most frequent training answer of
  the type), the blind *anti-prior* rule (the least frequent valid answer of the type), an
  *image-only probe* (linear classifiers of the image's class and tint, then the template's
  answer), *plain* (the model on the biased data) and the *oracle* (the same model on the
  answer-balanced split).
* **Per method.** ID accuracy, primary and secondary OOD accuracy, gap closed on the primary
  split ``(method - plain) / (oracle - plain)``, worst-group accuracy over question type x
  bias-aligned / bias-conflicting groups of at least ``min_group_size`` examples, the share of
  answers valid for the question type, the share of predictions that are training-favoured
  answers, and per-type accuracy.
* **Flags.** A method whose primary OOD accuracy a blind rule matches is flagged; so is an
  oracle that trails the image probe by more than 5 points (its budget does not let it learn
  the image).

Hyperparameters are the published defaults or fixed up front; any choice is made on the
``val`` split (worst-group accuracy), never on an OOD split.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .batch import correctness
from .diagnostics.metrics import DEFAULT_MIN_GROUP_SIZE

log = logging.getLogger("causalvl.efficacy")

#: ``(split name in the tables, PriorShiftVQA split)``
EVAL_SPLITS: tuple[tuple[str, str], ...] = (
    ("id", "test_id"),
    ("ood", "test_uniform"),
    ("ood_random", "test_random"),
)
BLIND_RULES = ("training-prior rule", "anti-prior rule")
PROBE = "image-only probe"


@dataclasses.dataclass(frozen=True)
class EfficacySettings:
    """The budget and data of one efficacy run (fixed before methods are compared).

    ``full()`` is the benchmark's budget (40 epochs over 3,000 questions); ``demo()`` a smaller
    one (the oracle learns less of the image there: the table says so); ``smoke()`` only checks
    the plumbing. ``train_images_per_class`` / ``image_size`` override the dataset's defaults
    (20 images per class, 16 px). ``features="pretrained"`` replaces pixels and question
    tokens by frozen pretrained features (EfficientNet-Lite0 and all-MiniLM-L6-v2, the
    ``[pretrained]`` extra) and the model by :class:`~causalvl.models.FrozenFeatureVQA`: see
    :meth:`pretrained`.
    """

    num_train: int = 3000
    num_val: int = 500
    num_test: int = 1500
    epochs: int = 40
    prior_strength: float = 0.9
    noise_std: float = 0.0
    hidden: int = 64
    lr: float = 3e-3
    batch_size: int = 64
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    num_refit: int = 450
    train_images_per_class: int | None = None
    image_size: int | None = None
    features: str = "pixels"
    is_smoke: bool = False

    @classmethod
    def full(cls) -> EfficacySettings:
        return cls()

    @classmethod
    def demo(cls) -> EfficacySettings:
        return cls(num_train=2000, num_val=300, num_test=1000, epochs=30)

    @classmethod
    def pretrained(cls) -> EfficacySettings:
        """The pretrained setting: CIFAR-10 photos at their native 32 px (upsampled to 224 px
        for the frozen image encoder), 100 training images per class, a trained answer head
        (hidden 256) over frozen image and question features, 40 epochs."""
        return cls(
            train_images_per_class=100,
            image_size=32,
            hidden=256,
            lr=1e-3,
            features="pretrained",
        )

    @classmethod
    def smoke(cls) -> EfficacySettings:
        return cls(
            num_train=240,
            num_val=60,
            num_test=120,
            num_refit=120,
            epochs=1,
            hidden=16,
            is_smoke=True,
        )


@dataclasses.dataclass(frozen=True)
class Method:
    """One debiasing method of the comparison.

    Attributes:
        configs: the intervention configs (``causalvl.intervene``).
        train_split: ``"train"`` (biased) or ``"balanced"`` (the oracle).
        train_options: extra :class:`~causalvl.TrainConfig` fields (``sampler="balanced"``,
            ``intervention_lr``, ...).
        note: one line on what it is and how it is set.
        recipe: ``"train"`` (one training run), ``"jtt"`` (:func:`~causalvl.train_jtt`:
            ``recipe_options`` ``id_epochs``, ``upweight``) or ``"dfr"`` (train, then
            :func:`~causalvl.refit_last_layer` on the protocol's answer-balanced refit set).
    """

    configs: tuple[Any, ...]
    train_split: str = "train"
    train_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""
    recipe: str = "train"
    recipe_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def default_methods(settings: EfficacySettings) -> dict[str, Method]:
    """Every shipped language-prior method, with the settings the protocol fixes."""
    import causalvl

    from .datasets.prior_shift import QUESTION_TYPES

    heads = (16,) if settings.is_smoke else (256, 256)
    return {
        "plain": Method((causalvl.IdentityConfig(),), note="cross-entropy on the biased data"),
        "oracle": Method(
            (causalvl.IdentityConfig(),),
            train_split="balanced",
            note="the same model on answer-balanced data (no prior to learn)",
        ),
        "BiasProduct": Method(
            (causalvl.BiasProductConfig(form="softmax"),),
            note="product of experts with the training prior (logit-adjusted loss)",
        ),
        "LMH": Method(
            (causalvl.LMHConfig(form="softmax"),),
            note="learned-mixin +H, softmax form, prior restricted to the type's answers",
        ),
        "Reweight": Method(
            (causalvl.ReweightConfig(kind="inverse_prior"),),
            note="loss weighted by 1 / p_train(answer | type)",
        ),
        "balanced sampler": Method(
            (causalvl.IdentityConfig(),),
            train_options={"sampler": "balanced"},
            note="answers drawn uniformly within each question type",
        ),
        "GGE": Method(
            (causalvl.GGEConfig(hidden_sizes=(settings.hidden,), variant="iterative"),),
            note="greedy gradient ensemble, GGE-iter (question branch + prior)",
        ),
        "GGE (softmax CE)": Method(
            (causalvl.GGEConfig(hidden_sizes=(settings.hidden,), loss="softmax_ce"),),
            note="GGE with the official GreedyGradient_softmaxCE loss",
        ),
        "GGE (softmax pseudo label)": Method(
            (causalvl.GGEConfig(hidden_sizes=(settings.hidden,), pseudo_label="softmax"),),
            note="GGE with the pseudo label clamp(y - softmax(r), 0, 1)",
        ),
        "GGE-D (sin schedule)": Method(
            (
                causalvl.GGEConfig(
                    hidden_sizes=(settings.hidden,), loss="decompose", weight_schedule="sin"
                ),
            ),
            note="GGE's Decompose loss, its weight on the official sin schedule",
        ),
        "RUBi": Method(
            (causalvl.RUBiConfig(hidden_sizes=heads),),
            train_options={"intervention_lr": 1e-2},
            note="question-only mask; branch heads at a faster rate",
        ),
        "CF-VQA": Method(
            (causalvl.CFVQAConfig(graph="simple", fusion="sum", hidden_sizes=heads),),
            train_options={"intervention_lr": 3e-2},
            note="TIE of the simple graph, sum fusion; branch heads at a faster rate",
        ),
        "RUBi (warm-up)": Method(
            (
                causalvl.RUBiConfig(
                    hidden_sizes=heads, branch_warmup_epochs=max(1, settings.epochs // 10)
                ),
            ),
            note="question branch trained alone for the first tenth of the epochs",
        ),
        "CF-VQA (warm-up)": Method(
            (
                causalvl.CFVQAConfig(
                    graph="simple",
                    fusion="sum",
                    hidden_sizes=heads,
                    branch_warmup_epochs=max(1, settings.epochs // 10),
                ),
            ),
            note="question branch trained alone for the first tenth of the epochs",
        ),
        "prior subtraction": Method(
            (
                causalvl.PriorSubtractionConfig(
                    alpha=1.0,
                    form="subtract",
                    space="log_softmax",
                    mode="shuffle",
                    num_samples=4,
                    plausibility=1e-3,
                ),
            ),
            note="log-probabilities minus their mean over 4 shuffled images (alpha 1), over "
            "the answers the model finds plausible (at least 1e-3 of the top one)",
        ),
        "Group DRO": Method(
            # group = 2 * question type + bias-aligned (PriorShiftVQA's `group` key)
            (causalvl.GroupDROConfig(num_groups=2 * len(QUESTION_TYPES), eta=0.01),),
            note="online group weights (eta 0.01) over question type x aligned/conflicting",
        ),
        "JTT": Method(
            (causalvl.IdentityConfig(),),
            recipe="jtt",
            recipe_options={"id_epochs": max(1, settings.epochs // 4), "upweight": 20},
            note="errors of a model trained a quarter of the budget, repeated 21 times",
        ),
        "DFR": Method(
            (causalvl.IdentityConfig(),),
            recipe="dfr",
            note=f"plain, then the answer layer refit on {settings.num_refit} extra "
            "answer-balanced questions",
        ),
    }


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class EfficacyData:
    """The splits of one seed and the training prior."""

    train: Any
    balanced: Any
    val: Any
    refit: Any
    tests: dict[str, Any]
    prior: torch.Tensor
    support: torch.Tensor


def build_data(
    settings: EfficacySettings, seed: int, source: Any = None, *, progress: bool = False
) -> EfficacyData:
    """The splits of the protocol for one seed (images and priors drawn from ``seed``)."""
    from .datasets import PriorShiftVQA

    common: dict[str, Any] = {
        "seed": seed,
        "prior_strength": settings.prior_strength,
        "noise_std": settings.noise_std,
    }
    if settings.train_images_per_class is not None:
        common["train_images_per_class"] = settings.train_images_per_class
    if settings.image_size is not None:
        common["image_size"] = settings.image_size
    full = PriorShiftVQA(
        source, split="train", num_examples=settings.num_train + settings.num_val, **common
    )
    tok = full.tokenizer
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    train = _Rows(full, order[settings.num_val :])
    val = _Rows(full, order[: settings.num_val])
    balanced = PriorShiftVQA(
        source, split="balanced", tokenizer=tok, num_examples=settings.num_train, **common
    )
    # DFR's extra answer-balanced questions: a second balanced draw over the training images
    refit = PriorShiftVQA(
        source, split="balanced", tokenizer=tok, num_examples=settings.num_refit, **common
    )
    tests = {
        name: PriorShiftVQA(
            source, split=split, tokenizer=tok, num_examples=settings.num_test, **common
        )
        for name, split in EVAL_SPLITS
    }
    if settings.features == "pretrained":
        table = pretrained_image_table(full.source, full.config.tint_strength, progress=progress)
        full, balanced, refit = (_featurised(d, table) for d in (full, balanced, refit))
        tests = {name: _featurised(d, table) for name, d in tests.items()}
        train, val = _Rows(full, order[settings.num_val :]), _Rows(full, order[: settings.num_val])
    return EfficacyData(
        train=train,
        balanced=balanced,
        val=val,
        refit=refit,
        tests=tests,
        prior=train.split_prior(),
        support=full.type_answer_mask(),
    )


def pretrained_image_table(
    source: Any, tint_strength: float, *, progress: bool = False, cache_dir: Any = None
) -> torch.Tensor:
    """Frozen EfficientNet-Lite0 features of every image of ``source`` in every tint colour:
    ``(num_images, num_colours, 1280)``.

    Computed once for the whole source (and cached on disk by :mod:`causalvl.pretrained`), so
    every seed and split of the protocol looks its examples up instead of running the encoder:
    a noise-free :class:`~causalvl.datasets.PriorShiftVQA` example's pixels depend only on its
    image and tint colour."""
    from . import pretrained
    from .datasets._common import COLOURS, prepared_images, tint

    side = int(source.images.shape[-1])
    base = prepared_images(source, side)
    rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    tiles = torch.cat(
        [tint(base, rgb[c].expand(len(base), 3), tint_strength) for c in range(len(rgb))]
    )
    feats = pretrained.image_features(tiles, progress=progress, cache_dir=cache_dir)
    return feats.reshape(len(rgb), len(base), -1).transpose(0, 1).contiguous()


def _featurised(dataset: Any, table: torch.Tensor) -> Any:
    """A :class:`~causalvl.datasets.FeatureVQA` of a noise-free PriorShiftVQA, its image
    features looked up in ``table`` (:func:`pretrained_image_table`)."""
    from . import pretrained
    from .datasets import FeatureVQA

    t = dataset.tensors()
    image = table[t["image_index"], t["colour"]]
    questions = list(dataset._questions)
    distinct = sorted(set(questions))
    text = pretrained.text_features(distinct)
    row = {q: i for i, q in enumerate(distinct)}
    question = text[torch.tensor([row[q] for q in questions])]
    meta = {
        k: v
        for k, v in t.items()
        if k not in ("pixel_values", "input_ids", "attention_mask", "labels")
    }
    return FeatureVQA(
        image,
        question,
        t["labels"],
        meta,
        answers=dataset.answers,
        question_types=dataset.question_types,
        questions=questions,
        group_names=dataset.group_names,
        source=dataset,
    )


class _Rows(torch.utils.data.Dataset):
    """A row subset of a dataset with ``tensors()`` (what the Trainer and samplers read)."""

    def __init__(self, base: Any, index: torch.Tensor) -> None:
        self.base = base
        self.index = index.long()
        self.tokenizer = getattr(base, "tokenizer", None)
        self.num_answers = base.num_answers
        self.question_types = base.question_types
        self.group_names = base.group_names

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[int(self.index[i])]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v[self.index] for k, v in self.base.tensors().items()}

    def split_prior(self) -> torch.Tensor:
        t = self.tensors()
        counts = torch.zeros(len(self.question_types), self.num_answers, dtype=torch.float64)
        counts.index_put_(
            (t["question_type"], t["labels"]),
            torch.ones(len(self), dtype=torch.float64),
            accumulate=True,
        )
        return (counts / counts.sum(1, keepdim=True).clamp_min(1)).float()


# ----------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------
def score(
    pred: torch.Tensor, data: Any, efficacy: EfficacyData, min_group_size: int
) -> dict[str, Any]:
    """Accuracy, worst group, validity and prior-following of predictions ``(N,)`` on ``data``."""
    t = data.tensors()
    labels, qtype, aligned = t["labels"], t["question_type"], t["bias_aligned"]
    correct = correctness(pred, labels)
    valid = efficacy.support[qtype, pred]
    favoured_of_type = efficacy.prior.argmax(1)
    favoured = pred == favoured_of_type[qtype]
    groups = 2 * qtype + aligned.long()
    group_acc = {}
    small = {}
    for g in torch.unique(groups).tolist():
        m = groups == g
        name = f"{data.question_types[g // 2]}/{'aligned' if g % 2 else 'conflicting'}"
        if int(m.sum()) >= min_group_size:
            group_acc[name] = float(correct[m].mean())
        else:
            small[name] = int(m.sum())
    per_type = {
        q: float(correct[qtype == i].mean())
        for i, q in enumerate(data.question_types)
        if bool((qtype == i).any())
    }
    yesno = torch.tensor([q in ("is_this", "does_show") for q in data.question_types])[qtype]
    return {
        "accuracy": float(correct.mean()),
        "accuracy_yesno": float(correct[yesno].mean()) if bool(yesno.any()) else None,
        "accuracy_other": float(correct[~yesno].mean()) if bool((~yesno).any()) else None,
        "worst_group_accuracy": min(group_acc.values()) if group_acc else None,
        "groups": group_acc,
        "groups_below_min_size": small,
        "valid_answer_share": float(valid.double().mean()),
        "training_favoured_share": float(favoured.double().mean()),
        "per_type": per_type,
    }


def predict(vl: Any, data: Any, batch_size: int = 512) -> torch.Tensor:
    """Argmax predictions of a wrapped model on every example of ``data``."""
    vl.eval()
    t = data.tensors()
    out = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch = {k: v[i : i + batch_size] for k, v in t.items()}
            out.append(vl(**batch).logits.argmax(-1))
    return torch.cat(out)


def blind_predictions(efficacy: EfficacyData, data: Any, rule: str) -> torch.Tensor:
    """Predictions of a rule that reads only the question type.

    ``"training-prior rule"``: the type's most frequent training answer; ``"anti-prior rule"``:
    its least frequent valid answer ("never give the training-favoured answer")."""
    qtype = data.tensors()["question_type"]
    prior = efficacy.prior
    if rule == "training-prior rule":
        table = prior.argmax(1)
    else:
        table = prior.masked_fill(~efficacy.support, math.inf).argmin(1)
    return table[qtype]


def fit_probe(efficacy: EfficacyData, seed: int) -> Callable[[Any], torch.Tensor]:
    """An image-only probe: linear classifiers of the image's class and tint colour, trained on
    the balanced split's pixels, answer each question through its template.

    Returns ``predict(data) -> (N,)`` answer ids."""
    from sklearn.linear_model import LogisticRegression

    from .datasets._common import COLOURS
    from .runtime import single_threaded_blas

    src = efficacy.balanced.tensors()
    key = "image_features" if "image_features" in src else "pixel_values"
    x = src[key].flatten(1).numpy()
    with single_threaded_blas():  # the same weights whatever the machine's thread count
        clf_class = LogisticRegression(max_iter=500, C=0.5, random_state=seed).fit(
            x, src["image_label"].numpy()
        )
        clf_colour = LogisticRegression(max_iter=500, C=0.5, random_state=seed).fit(
            x, src["colour"].numpy()
        )
    ref = getattr(efficacy.balanced, "source", None)
    ref = (
        ref if hasattr(ref, "question_types") and hasattr(ref, "_sup_names") else efficacy.balanced
    )
    names, colour_names = ref.source.class_names, list(COLOURS)

    def predict_answers(data: Any) -> torch.Tensor:
        t = data.tensors()
        xt = t[key].flatten(1).numpy()
        cls, col = clf_class.predict(xt), clf_colour.predict(xt)
        preds = []
        for i in range(len(data)):
            kind = _kind(ref.question_types[int(t["question_type"][i])])
            if kind == "class":
                a = names[cls[i]]
            elif kind == "colour":
                a = colour_names[col[i]]
            elif kind == "yesno":
                named = data[i]["question"].rstrip("?").split()[-1]
                a = "yes" if named == names[cls[i]] else "no"
            else:
                a = ref._sup_names[ref._class_sup[cls[i]]]
            preds.append(ref.answer_to_id[a])
        return torch.tensor(preds)

    return predict_answers


def _kind(qtype: str) -> str:
    from .datasets.prior_shift import QUESTION_TYPES

    return QUESTION_TYPES[qtype]


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------
def build_model(settings: EfficacySettings, efficacy: EfficacyData, seed: int) -> Any:
    """The same freshly initialised TinyVQA for every method of a seed."""
    import causalvl

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if settings.features == "pretrained":
            return causalvl.models.FrozenFeatureVQA(
                num_answers=efficacy.train.num_answers,
                image_dim=int(efficacy.balanced.tensors()["image_features"].shape[1]),
                text_dim=int(efficacy.balanced.tensors()["question_features"].shape[1]),
                hidden=settings.hidden,
            )
        return causalvl.models.TinyVQA(
            vocab_size=len(efficacy.train.tokenizer),
            num_answers=efficacy.train.num_answers,
            image_size=efficacy.balanced.config.image_size,
            hidden=settings.hidden,
        )


def train_method(
    method: Method,
    settings: EfficacySettings,
    efficacy: EfficacyData,
    seed: int,
    *,
    progress: bool = False,
    label: str | None = None,
    model: Any = None,
) -> Any:
    """Wrap a fresh model with ``method``'s configs and train it; returns the wrapped model."""
    import causalvl

    data = efficacy.balanced if method.train_split == "balanced" else efficacy.train
    options = {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "seed": seed,
        "progress": progress,
        "device": "cpu",
        **method.train_options,
    }
    config = causalvl.TrainConfig(**options)
    configs = list(method.configs)

    def wrapped() -> Any:
        net = build_model(settings, efficacy, seed) if model is None else model
        # parameters the interventions create are drawn from ``seed`` (init_seed), unless
        # the method's config fixes its own seed
        vl = causalvl.intervene(
            net, [c if c.init_seed is not None else c.replace(init_seed=seed) for c in configs]
        )
        if vl.needs_prior:
            vl.set_bias_prior(efficacy.prior)
        return vl

    if method.recipe == "jtt":
        opts = dict(method.recipe_options)
        return causalvl.train_jtt(
            wrapped,
            data,
            id_epochs=opts["id_epochs"],
            upweight=opts["upweight"],
            config=config,
        ).model
    vl = wrapped()
    causalvl.Trainer(vl, data, config=config, label=label).fit()
    if method.recipe == "dfr":
        causalvl.refit_last_layer(vl, efficacy.refit, seed=seed)
    return vl


def evaluate(
    preds_for: Callable[[Any], torch.Tensor], efficacy: EfficacyData, min_group_size: int
) -> dict[str, Any]:
    """Score one predictor on the validation and every test split."""
    out = {"val": score(preds_for(efficacy.val), efficacy.val, efficacy, min_group_size)}
    for name, data in efficacy.tests.items():
        out[name] = score(preds_for(data), data, efficacy, min_group_size)
    return out


def run_seed(
    settings: EfficacySettings,
    seed: int,
    methods: Mapping[str, Method] | None = None,
    *,
    source: Any = None,
    progress: bool = False,
    on_model: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Every reference row and method for one seed: ``{row name: {split: scores}}``."""
    methods = default_methods(settings) if methods is None else methods
    efficacy = build_data(settings, seed, source)
    rows: dict[str, Any] = {}
    for rule in BLIND_RULES:
        rows[rule] = evaluate(
            lambda d, r=rule: blind_predictions(efficacy, d, r), efficacy, settings.min_group_size
        )
    rows[PROBE] = evaluate(fit_probe(efficacy, seed), efficacy, settings.min_group_size)
    for i, (name, method) in enumerate(methods.items()):
        if on_model is not None:
            on_model(name, i, len(methods))
        start = time.perf_counter()
        label = f"model {i + 1}/{len(methods)}: {name}"
        vl = train_method(method, settings, efficacy, seed, progress=progress, label=label)
        rows[name] = evaluate(lambda d, m=vl: predict(m, d), efficacy, settings.min_group_size)
        rows[name]["train_seconds"] = time.perf_counter() - start
        log.info("seed %d, %s: ood %.3f", seed, name, rows[name]["ood"]["accuracy"])
    return rows


def compare(
    settings: EfficacySettings,
    seeds: Sequence[int],
    methods: Mapping[str, Method] | None = None,
    *,
    source: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run :func:`run_seed` for every seed and :func:`summarise` the rows."""
    return summarise(
        [run_seed(settings, s, methods, source=source, progress=progress) for s in seeds]
    )


def gap_closed(method: float, plain: float, oracle: float) -> float | None:
    """``(method - plain) / (oracle - plain)``; ``None`` when the oracle is not above plain."""
    gap = oracle - plain
    return None if gap <= 1e-9 else (method - plain) / gap


def summarise(per_seed: Sequence[Mapping[str, Any]], *, target: float = 0.5) -> dict[str, Any]:
    """Mean +- std over seeds of every row, gap closed per seed, and the protocol's flags."""
    names = list(per_seed[0])
    out: dict[str, Any] = {}
    blind_best = [max(s[r]["ood"]["accuracy"] for r in BLIND_RULES) for s in per_seed]
    for name in names:
        row: dict[str, Any] = {}
        for split in ("val", "id", "ood", "ood_random"):
            for metric in (
                "accuracy",
                "worst_group_accuracy",
                "valid_answer_share",
                "training_favoured_share",
                "accuracy_yesno",
                "accuracy_other",
            ):
                vals = [s[name][split][metric] for s in per_seed]
                if any(v is None for v in vals):
                    continue
                row[f"{split}/{metric}"] = _stats(vals)
        if "plain" in per_seed[0] and "oracle" in per_seed[0]:
            closed = [
                gap_closed(
                    s[name]["ood"]["accuracy"],
                    s["plain"]["ood"]["accuracy"],
                    s["oracle"]["ood"]["accuracy"],
                )
                for s in per_seed
            ]
            if all(c is not None for c in closed) and name not in (
                "plain",
                "oracle",
                PROBE,
                *BLIND_RULES,
            ):
                row["gap_closed"] = _stats(closed)  # type: ignore[arg-type]
        accs = [s[name]["ood"]["accuracy"] for s in per_seed]
        row["blind_rule_matches"] = name not in BLIND_RULES and statistics.mean(accs) <= (
            statistics.mean(blind_best) + 1e-9
        )
        out[name] = row
    return out


def judge(
    summary: Mapping[str, Any],
    *,
    min_gap: float = 0.10,
    min_closed: float = 0.5,
    id_slack: float = 0.01,
    probe_slack: float = 0.05,
) -> dict[str, Any]:
    """The protocol's targets, judged on a :func:`summarise` result.

    * the plain-to-oracle gap on the primary OOD split is at least ``min_gap`` (otherwise
      "gap closed" is noise);
    * the oracle learns the image: it trails the image-only probe by at most ``probe_slack``;
    * a method *meets* the target when it closes at least ``min_closed`` of the gap (mean over
      seeds, more than two standard errors above zero) with ID accuracy at least the oracle's ID
      accuracy minus ``id_slack``, and no blind rule matches its OOD accuracy.

    Returns ``{"gap", "gap_ok", "oracle_minus_probe", "oracle_learns_image", "methods": {name:
    {"gap_closed", "sem", "id_minus_oracle_id", "meets"}}, "best", "met"}``.
    """
    plain = summary["plain"]["ood/accuracy"]["mean"]
    oracle = summary["oracle"]["ood/accuracy"]["mean"]
    oracle_id = summary["oracle"]["id/accuracy"]["mean"]
    probe = summary[PROBE]["ood/accuracy"]["mean"] if PROBE in summary else None
    methods = {}
    for name, row in summary.items():
        if "gap_closed" not in row or name in (*BLIND_RULES, PROBE, "plain", "oracle"):
            continue
        closed = row["gap_closed"]
        id_gap = row["id/accuracy"]["mean"] - oracle_id
        meets = (
            closed["mean"] >= min_closed
            and closed["mean"] > 2 * closed["sem"]
            and id_gap >= -id_slack
            and not row.get("blind_rule_matches", False)
        )
        methods[name] = {
            "gap_closed": closed["mean"],
            "sem": closed["sem"],
            "id_minus_oracle_id": id_gap,
            "meets": meets,
        }
    best = max(methods, key=lambda n: methods[n]["gap_closed"], default=None)
    return {
        "gap": oracle - plain,
        "gap_ok": oracle - plain >= min_gap,
        "oracle_minus_probe": None if probe is None else oracle - probe,
        "oracle_learns_image": None if probe is None else oracle >= probe - probe_slack,
        "methods": methods,
        "best": best,
        "met": sorted(n for n, m in methods.items() if m["meets"]),
    }


def verdict(summary: Mapping[str, Any], **targets: float) -> list[str]:
    """The :func:`judge` result as sentences (for reports and the benchmark page)."""
    j = judge(summary, **targets)
    lines = [
        f"Plain-to-oracle gap on the uniform split: {j['gap']:.3f} "
        + (
            "(at least 0.10: gap closed is meaningful)."
            if j["gap_ok"]
            else "(below 0.10: gap closed is noise here)."
        ),
    ]
    if j["oracle_minus_probe"] is not None:
        lines.append(
            f"The oracle is {j['oracle_minus_probe']:+.3f} from the image-only probe "
            + (
                "(it learns the image)."
                if j["oracle_learns_image"]
                else "(it trails the probe by "
                "more than 5 points: the budget does not let it learn the image)."
            )
        )
    if j["met"]:
        lines.append(
            "Target met (closes at least 50% of the gap, mean more than two standard errors "
            "above zero, ID accuracy at least the oracle's minus 1 point) by: "
            + ", ".join(j["met"])
            + "."
        )
    elif j["best"] is not None:
        b = j["methods"][j["best"]]
        lines.append(
            f"Target missed: the best method, {j['best']}, closes {b['gap_closed']:.0%} "
            f"(± {b['sem']:.0%} s.e.) of the gap with ID accuracy {b['id_minus_oracle_id']:+.3f} "
            "from the oracle's."
        )
    return lines


SMOKE_NOTE = "SMOKE RUN: tiny data and one or two epochs; these numbers mean nothing."


def report(
    summary: Mapping[str, Any],
    methods: Mapping[str, Method],
    *,
    title: str = "",
    smoke: bool = False,
) -> str:
    """A summary as Markdown: the table, the verdict lines and one line per method."""
    lines = [SMOKE_NOTE, ""] if smoke else []
    lines += [table(summary, title=title), ""]
    lines += [f"- {line}" for line in verdict(summary)]
    notes = [f"- **{n}**: {methods[n].note}." for n in summary if n in methods and methods[n].note]
    if notes:
        lines += ["", "What each row is:", "", *notes]
    return "\n".join(lines)


def mean_accuracies(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{row: {split: mean accuracy over seeds}}`` for the ``id``, ``ood`` and ``ood_random``
    splits."""
    return {
        name: {
            split: row[f"{split}/accuracy"]["mean"]
            for split in ("id", "ood", "ood_random")
            if f"{split}/accuracy" in row
        }
        for name, row in summary.items()
    }


def _stats(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {
        "mean": statistics.mean(vals),
        "std": std,
        "sem": std / math.sqrt(len(vals)) if len(vals) > 1 else 0.0,
        "values": vals,
    }


def table(summary: Mapping[str, Any], *, title: str = "") -> str:
    """A Markdown table of a summary (mean +- std over seeds)."""

    def cell(row: Mapping[str, Any], key: str, pct: bool = False) -> str:
        v = row.get(key)
        if v is None:
            return "n/a"
        if pct:
            return f"{v['mean']:.0%} ± {v['std']:.0%}"
        return f"{v['mean']:.3f} ± {v['std']:.3f}"

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append(
        "| row | ID acc | OOD acc (uniform) | gap closed | worst group (OOD) | OOD acc (random prior) "
        "| random prior, yes/no | random prior, other types | valid answers "
        "| training-favoured answers |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in summary.items():
        flag = " ⚑ blind rule matches" if row.get("blind_rule_matches") else ""
        lines.append(
            f"| {name}{flag} | {cell(row, 'id/accuracy')} | {cell(row, 'ood/accuracy')} | "
            f"{cell(row, 'gap_closed', True)} | {cell(row, 'ood/worst_group_accuracy')} | "
            f"{cell(row, 'ood_random/accuracy')} | {cell(row, 'ood_random/accuracy_yesno')} | "
            f"{cell(row, 'ood_random/accuracy_other')} | {cell(row, 'ood/valid_answer_share')} | "
            f"{cell(row, 'ood/training_favoured_share')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# the command line of the example scripts
# ---------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser, *, fast_epochs: int = 2) -> None:
    """The options every efficacy script shares: ``--fast``, ``--seeds``, ``--epochs`` and
    ``--threads``."""
    parser.add_argument("--fast", action="store_true", help="tiny smoke run (numbers mean nothing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default: the setting's budget (--fast: {fast_epochs})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; 0: every core)",
    )


def settings_from_arguments(args: argparse.Namespace, *, fast_epochs: int = 2) -> EfficacySettings:
    """Apply ``--threads`` and return the demo (or ``--fast`` smoke) settings with ``--epochs``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast:
        return dataclasses.replace(EfficacySettings.smoke(), epochs=args.epochs or fast_epochs)
    settings = EfficacySettings.demo()
    return dataclasses.replace(settings, epochs=args.epochs or settings.epochs)


def compare_and_print(
    settings: EfficacySettings,
    seeds: Sequence[int],
    methods: Mapping[str, Method],
    *,
    title: str,
    smoke: bool,
    source: Any = None,
    detail: str = "",
) -> dict[str, dict[str, float]]:
    """:func:`compare` the methods over ``seeds``, print the :func:`report` titled ``title``
    and a line with the time taken, and return :func:`mean_accuracies`."""
    start = time.perf_counter()
    summary = compare(settings, seeds, methods, source=source)
    listed = ", ".join(str(s) for s in seeds)
    print(report(summary, methods, title=f"{title}, seeds {listed}", smoke=smoke))
    print(
        f"({time.perf_counter() - start:.0f} s; {settings.num_train} training questions, "
        f"epochs: {settings.epochs}{detail})"
    )
    return mean_accuracies(summary)


__all__ = [
    "BLIND_RULES",
    "add_arguments",
    "compare_and_print",
    "positive_int",
    "settings_from_arguments",
    "EVAL_SPLITS",
    "PROBE",
    "EfficacyData",
    "EfficacySettings",
    "Method",
    "build_data",
    "compare",
    "default_methods",
    "evaluate",
    "gap_closed",
    "judge",
    "mean_accuracies",
    "report",
    "run_seed",
    "score",
    "summarise",
    "table",
    "train_method",
    "verdict",
]
