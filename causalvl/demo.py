"""``causalvl demo``: the whole pipeline on data that ships with scikit-learn.

Two benchmarks over real handwritten digits (``sklearn.datasets.load_digits``):

* **Language prior** (:class:`~causalvl.datasets.PriorShiftVQA` under the protocol of
  :mod:`causalvl.efficacy`): templated questions whose answers follow a strong per-question-type
  prior in training; out of distribution (the primary split) every answer of a type is equally
  likely on held-out images, so no rule that ignores the image beats chance. The same small
  VQA model (:class:`~causalvl.models.TinyVQA`) is trained plain, with the bias product, LMH, prior
  reweighting, answer-balanced resampling, CF-VQA and null-image prior subtraction, and as an
  oracle on the balanced split; the blind rules and an image-only probe are scored beside them.
* **Object context** (:class:`~causalvl.datasets.ContextShift`): a target digit beside a context
  digit whose class co-occurs with the target's in training only. A region model
  (:class:`~causalvl.models.TinyRegionClassifier`) is trained plain and with backdoor adjustment over a
  confounder dictionary of class-mean region features.

Every model is trained with :class:`~causalvl.Trainer`, measured with :func:`~causalvl.diagnose`
and compared in one :class:`~causalvl.BiasReport` (``index.html``, ``report.json``,
``summary.md``).

    >>> from causalvl.demo import run_demo
    >>> result = run_demo("demo-out", fast=True, progress=False)   # doctest: +SKIP
    >>> print(result.table())                                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .diagnostics.metrics import DEFAULT_MIN_GROUP_SIZE

log = logging.getLogger("causalvl.demo")

PRIOR_METHODS = ("plain", "BiasProduct", "LMH", "JTT", "DFR", "oracle")
#: rows that train nothing: the blind rules and the image-only probe (see causalvl.efficacy)
REFERENCE_ROWS = ("training-prior rule", "anti-prior rule", "image-only probe")
CONTEXT_METHODS = ("plain (context)", "backdoor (context)", "oracle (context)")


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes and training recipe of the demo run. ``full()`` is the default; ``fast()`` is a
    smoke run.

    The language-prior part follows :class:`causalvl.efficacy.EfficacySettings` (see
    :meth:`efficacy`): a strong training prior (0.9), no pixel noise, 2,000 questions x 40
    epochs. The benchmark (``benchmarks/bench_priors.py``, docs/efficacy.md) runs every method
    at a larger budget over five seeds; the demo shows a few of them on one seed.
    """

    prior_train: int | None
    prior_test: int | None
    prior_epochs: int
    context_train: int
    context_test: int
    context_epochs: int
    context_extra_epochs: int
    context_image_size: int
    hidden: int
    branch_hidden: tuple[int, ...]
    lr: float = 3e-3
    batch_size: int = 64
    prior_strength: float = 0.9
    is_smoke: bool = False
    #: evaluate the prior-shift splits after every epoch (logged by the Trainer; the results
    #: come from the final diagnostics either way, so turning it off only saves time)
    eval_each_epoch: bool = False

    def efficacy(self) -> Any:
        """The :class:`~causalvl.efficacy.EfficacySettings` of the language-prior part."""
        from .efficacy import EfficacySettings

        return EfficacySettings(
            num_train=self.prior_train or 2000,
            num_val=max(30, (self.prior_test or 1000) // 4),
            num_test=self.prior_test or 1000,
            epochs=self.prior_epochs,
            prior_strength=self.prior_strength,
            hidden=self.hidden,
            lr=self.lr,
            batch_size=self.batch_size,
            is_smoke=self.is_smoke,
        )

    @classmethod
    def full(cls) -> DemoSettings:
        return cls(
            prior_train=2000,
            prior_test=1000,
            prior_epochs=40,
            context_train=2000,
            context_test=1000,
            context_epochs=6,
            context_extra_epochs=4,
            context_image_size=16,
            hidden=64,
            branch_hidden=(64,),
        )

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(
            prior_train=200,
            prior_test=120,
            prior_epochs=1,
            context_train=200,
            context_test=100,
            context_epochs=1,
            context_extra_epochs=1,
            context_image_size=8,
            hidden=16,
            branch_hidden=(16,),
            is_smoke=True,
        )


@dataclasses.dataclass(frozen=True)
class DemoRow:
    """One trained model's headline numbers (fractions in [0, 1])."""

    method: str
    benchmark: str
    id_accuracy: float
    ood_accuracy: float
    gap_closed: float | None
    reliance: float | None
    train_seconds: float
    ood_random_accuracy: float | None = None
    flag: str = ""


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` returns: the rows of the comparison and where the report is."""

    rows: tuple[DemoRow, ...]
    report_files: Mapping[str, Path]
    seconds: float
    fast: bool = False

    def row(self, method: str) -> DemoRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)

    def table(self) -> str:
        """The comparison as a fixed-width text table."""
        head = (
            f"{'method':<22} {'ID acc':>7} {'OOD acc':>8} {'OOD rand':>9} {'gap closed':>11} "
            f"{'flip rate':>9}"
        )
        lines = []
        if self.fast:
            lines += [SMOKE_WARNING, ""]
        lines += [head, "-" * len(head)]
        bench = None
        for r in self.rows:
            if bench is not None and r.benchmark != bench:
                lines.append("")
            bench = r.benchmark
            closed = "" if r.gap_closed is None else f"{r.gap_closed:>10.0%}"
            rand = "" if r.ood_random_accuracy is None else f"{r.ood_random_accuracy:>9.3f}"
            reliance = "" if r.reliance is None else f"{r.reliance:>9.3f}"
            lines.append(
                f"{r.method:<22} {r.id_accuracy:>7.3f} {r.ood_accuracy:>8.3f} {rand:>9} "
                f"{closed:>11} {reliance:>9}  {r.flag}".rstrip()
            )
        lines.append("")
        lines.append(
            "Language prior: ID = held-out images under the training prior; OOD = held-out "
            "images with every answer of a question type equally likely (no rule that ignores "
            "the image beats chance there); OOD rand = a random answer prior per type (VQA-CP "
            "style). gap closed = (OOD_method - OOD_plain) / (OOD_oracle - OOD_plain). Object "
            "context: OOD = uniform context classes; flip rate = how often the prediction "
            "changes when the context region is swapped."
        )
        return "\n".join(lines)


SMOKE_WARNING = (
    "SMOKE RUN (--fast): tiny data and one epoch check that the pipeline runs; these numbers "
    "mean nothing. Run `causalvl demo` without --fast for the comparison."
)


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Run ``build`` with torch's global generator seeded, restoring its state afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _gap_closed(ood: float, plain: float, oracle: float) -> float | None:
    from .efficacy import gap_closed

    return gap_closed(ood, plain, oracle)


def _train(
    vl: Any,
    train: Any,
    evals: Mapping[str, Any],
    *,
    epochs: int,
    settings: DemoSettings,
    seed: int,
    progress: bool,
    desc: str,
    announce: Callable[[str], None] | None = None,
) -> float:
    from .training import TrainConfig, Trainer

    config = TrainConfig(
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=seed,
        progress=progress,
        device="cpu",
    )
    start = time.perf_counter()
    log.info("training %s", desc)
    eval_data = dict(evals) if settings.eval_each_epoch else {}
    Trainer(vl, train, eval_data=eval_data or None, config=config, label=desc).fit()
    seconds = time.perf_counter() - start
    if announce is not None:
        announce(f"trained {desc} ({seconds:.0f} s)")
    return seconds


def prior_methods(settings: DemoSettings) -> dict[str, Any]:
    """The language-prior methods the demo compares: ``{name: causalvl.efficacy.Method}``.

    ``"oracle"`` is trained on the balanced split; every other entry on the biased one. The
    benchmark (``benchmarks/bench_priors.py``) compares every shipped method the same way."""
    from .efficacy import default_methods

    every = default_methods(settings.efficacy())
    return {name: every[name] for name in PRIOR_METHODS}


def _as_method(name: str, method: Any) -> Any:
    from .efficacy import Method

    if isinstance(method, Method):
        return method
    return Method(tuple(method), train_split="balanced" if name == "oracle" else "train")


def prior_benchmark(
    settings: DemoSettings,
    seed: int,
    progress: bool,
    *,
    source: Any = None,
    methods: Mapping[str, Any] | None = None,
    announce: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float], Any]:
    """Train every language-prior method under the efficacy protocol.

    Args:
        settings: sizes of the run.
        seed: seeds the data, the initial weights (the same for every method) and training.
        progress: show progress bars.
        source: the images (an :class:`~causalvl.datasets.ImageSource`; default: digits).
        methods: ``{name: Method or list of configs}`` (default :func:`prior_methods`);
            ``"oracle"`` trains on the balanced split, prior-based configs get the training
            split's question-type prior.
        announce: called with one line per finished model.

    Returns:
        ``({name: Diagnostics}, {name: train seconds}, EfficacyData)``; diagnostics splits are
        ``"id"`` (held-out images, training prior), ``"ood"`` (uniform answers per type) and
        ``"ood_random"`` (a random prior per type).
    """
    import causalvl

    from .efficacy import build_data, train_method

    eff = settings.efficacy()
    data = build_data(eff, seed, source)
    methods = prior_methods(settings) if methods is None else methods
    diagnostics, times = {}, {}
    for i, (name, method) in enumerate(methods.items()):
        label = f"model {i + 1}/{len(methods)}: {name}"
        start = time.perf_counter()
        vl = train_method(_as_method(name, method), eff, data, seed, progress=progress, label=label)
        times[name] = time.perf_counter() - start
        if announce is not None:
            announce(f"trained {label} ({times[name]:.0f} s)")
        diagnostics[name] = causalvl.diagnose(
            vl,
            data.tests,
            distribution={"id": "id", "ood": "ood", "ood_random": "ood"},
            progress=progress,
            seed=seed,
        )
    return diagnostics, times, data


def reference_rows(
    data: Any, seed: int, min_group_size: int = DEFAULT_MIN_GROUP_SIZE
) -> list[DemoRow]:
    """The blind rules and the image-only probe on the demo's splits (nothing is trained)."""
    from .efficacy import BLIND_RULES, blind_predictions, evaluate, fit_probe

    predictors: dict[str, Callable[[Any], Any]] = {
        rule: (lambda d, r=rule: blind_predictions(data, d, r)) for rule in BLIND_RULES
    }
    predictors["image-only probe"] = fit_probe(data, seed)
    rows = []
    for name, fn in predictors.items():
        scores = evaluate(fn, data, min_group_size)
        rows.append(
            DemoRow(
                method=name,
                benchmark=PRIOR_BENCHMARK,
                id_accuracy=scores["id"]["accuracy"],
                ood_accuracy=scores["ood"]["accuracy"],
                ood_random_accuracy=scores["ood_random"]["accuracy"],
                gap_closed=None,
                reliance=None,
                train_seconds=0.0,
            )
        )
    return rows


PRIOR_BENCHMARK = "language prior (PriorShiftVQA)"


def context_data(settings: DemoSettings, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """The context-shift splits: ``(train, unbiased train, {"id", "ood"})``.

    Training: the context class co-occurs with the target's 90% of the time; the unbiased
    (oracle) training split draws contexts uniformly; ``"id"`` is held-out images with the
    training co-occurrence, ``"ood"`` the shifted test split."""
    from .datasets import ContextShift

    common = dict(image_size=settings.context_image_size, seed=seed)
    train = ContextShift(
        split="train", cooccurrence=0.9, num_examples=settings.context_train, **common
    )
    k = len(train.class_names)
    unbiased = ContextShift(
        split="train", cooccurrence=1.0 / (k - 1), num_examples=settings.context_train, **common
    )
    splits = {
        "id": ContextShift(
            split="test_id", cooccurrence=0.9, num_examples=settings.context_test, **common
        ),
        "ood": ContextShift(split="test", num_examples=settings.context_test, **common),
    }
    return train, unbiased, splits


def context_benchmark(
    settings: DemoSettings,
    seed: int,
    progress: bool,
    announce: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Plain vs backdoor-adjusted region model on the context-shift benchmark (and an oracle)."""
    import causalvl

    train, unbiased, splits = context_data(settings, seed)
    k = len(train.class_names)

    net = _seeded(
        seed, lambda: causalvl.models.TinyRegionClassifier(num_classes=k, hidden=32, width=16)
    )
    oracle_net = copy.deepcopy(net)
    plain = causalvl.intervene(net, causalvl.IdentityConfig())
    times = {
        "plain (context)": _train(
            plain,
            train,
            {},
            epochs=settings.context_epochs,
            settings=settings,
            seed=seed,
            progress=progress,
            desc="plain (context)",
            announce=announce,
        )
    }
    from torch.utils.data import DataLoader

    from .datasets import collate

    loader = DataLoader(train, batch_size=256, collate_fn=collate)
    feats, labels = causalvl.ConfounderDictionary.collect(
        plain,
        loader,
        "vision_features",
        labels_key=["labels", "context_class"],
        pool=False,
        progress=progress,
    )
    dictionary = causalvl.ConfounderDictionary.from_class_means(
        feats, labels, names=train.class_names
    )
    backdoor = causalvl.intervene(
        copy.deepcopy(net),
        causalvl.BackdoorConfig(
            target="vision_features",
            dictionary=dictionary,
            regions="context",
            target_index=0,
            normalize=True,
            init_seed=seed + 1,
        ),
    )
    extra = settings.context_extra_epochs
    times["plain (context)"] += _train(
        plain,
        train,
        {},
        epochs=extra,
        settings=settings,
        seed=seed + 2,
        progress=progress,
        desc="plain (context), continued",
        announce=announce,
    )
    times["backdoor (context)"] = _train(
        backdoor,
        train,
        {},
        epochs=extra,
        settings=settings,
        seed=seed + 2,
        progress=progress,
        desc="backdoor (context)",
        announce=announce,
    )
    oracle = causalvl.intervene(oracle_net, causalvl.IdentityConfig())
    times["oracle (context)"] = _train(
        oracle,
        unbiased,
        {},
        epochs=settings.context_epochs + extra,
        settings=settings,
        seed=seed,
        progress=progress,
        desc="oracle (context)",
        announce=announce,
    )
    diagnostics = {
        name: causalvl.diagnose(
            vl, splits, distribution={"id": "id", "ood": "ood"}, progress=progress, seed=seed
        )
        for name, vl in zip(CONTEXT_METHODS, (plain, backdoor, oracle))
    }
    return diagnostics, times


def _rows(
    diagnostics: Mapping[str, Any],
    times: Mapping[str, float],
    names: tuple[str, ...],
    benchmark: str,
    blind_ood: float | None = None,
) -> list[DemoRow]:
    plain, oracle = names[0], names[-1]
    ood = {n: diagnostics[n]["ood"].accuracy for n in names}
    rows = []
    for n in names:
        ood_diag = diagnostics[n]["ood"]
        reliance = None
        if benchmark.startswith("object context") and ood_diag.context is not None:
            reliance = ood_diag.context.flip_rate
        random_split = diagnostics[n].splits.get("ood_random")
        flag = ""
        if blind_ood is not None and ood[n] <= blind_ood + 1e-9:
            flag = "a blind rule matches this"
        rows.append(
            DemoRow(
                method=n,
                benchmark=benchmark,
                id_accuracy=diagnostics[n]["id"].accuracy,
                ood_accuracy=ood[n],
                ood_random_accuracy=None if random_split is None else random_split.accuracy,
                gap_closed=None
                if n in (plain, oracle)
                else _gap_closed(ood[n], ood[plain], ood[oracle]),
                reliance=reliance,
                train_seconds=times[n],
                flag=flag,
            )
        )
    return rows


def run_demo(
    out: str | os.PathLike = "causalvl-demo",
    *,
    seed: int = 0,
    fast: bool = False,
    progress: bool = True,
    settings: DemoSettings | None = None,
    announce: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train, measure and report; returns the comparison rows and the report's files.

    Args:
        out: output folder for ``index.html``, ``report.json`` and ``summary.md``.
        seed: seeds data construction, model initialisation and training order.
        fast: a small smoke run (seconds) instead of the full demo (a few minutes on 2 cores).
        progress: show progress bars (they never change the numbers).
        settings: explicit sizes (overrides ``fast``).
        announce: called with one line per trained model (the CLI prints them without bars).
    """
    import causalvl

    settings = settings or (DemoSettings.fast() if fast else DemoSettings.full())
    fast = settings.is_smoke
    start = time.perf_counter()
    prior_diag, prior_times, data = prior_benchmark(settings, seed, progress, announce=announce)
    context_diag, context_times = context_benchmark(settings, seed, progress, announce)
    references = reference_rows(data, seed)
    blind = max(r.ood_accuracy for r in references if r.method != "image-only probe")
    rows = references + _rows(prior_diag, prior_times, PRIOR_METHODS, PRIOR_BENCHMARK, blind)
    rows += _rows(context_diag, context_times, CONTEXT_METHODS, "object context (ContextShift)")
    # the templated questions need no sentence embeddings: the fast scorers keep the demo short
    audit = causalvl.audit_blind_solvability(
        data.train, folds=3, seed=seed, scorers=("tfidf", "format")
    )
    definitions = {
        "gap closed": "(OOD_method - OOD_plain) / (OOD_oracle - OOD_plain): the share of the "
        "plain-to-oracle out-of-distribution gap that the method closes.",
        "ID accuracy": "accuracy on held-out images whose answers follow the training prior.",
        "OOD accuracy": "language prior: held-out images with every answer of a question type "
        "equally likely (no blind rule beats chance); object context: uniform context classes.",
        "OOD accuracy (random prior)": "held-out images under a random answer prior per "
        "question type that overlaps the training one (VQA-CP style).",
        "context flip rate": "how often the prediction changes when the context region is "
        "replaced by another example's context.",
    }

    def table(
        bench_rows: list[DemoRow], reliance_name: str | None = None
    ) -> dict[str, dict[str, float]]:
        out = {}
        for r in bench_rows:
            column = {"ID accuracy": r.id_accuracy, "OOD accuracy": r.ood_accuracy}
            if r.ood_random_accuracy is not None:
                column["OOD accuracy (random prior)"] = r.ood_random_accuracy
            if r.gap_closed is not None and math.isfinite(r.gap_closed):
                column["gap closed"] = r.gap_closed
            if reliance_name and r.reliance is not None:
                column[reliance_name] = r.reliance
            out[r.method] = column
        return out

    prior_rows = [r for r in rows if r.benchmark == PRIOR_BENCHMARK]
    context_rows = [r for r in rows if r.method in CONTEXT_METHODS]
    provenance = {"settings": dataclasses.asdict(settings), "fast": fast}
    smoke = (SMOKE_WARNING + " ") if fast else ""
    context_report = causalvl.BiasReport(
        context_diag,
        title="causalvl demo: object context (ContextShift over real digits)",
        baseline="plain (context)",
        config=provenance,
        seed=seed,
        notes=smoke + "A target digit beside a context digit whose class co-occurs with the "
        "target's class 90% of the time in training and uniformly at test time. The backdoor "
        "model replaces the observed context region by its expectation over a confounder "
        "dictionary of class-mean region features.",
    )
    context_files = context_report.save(Path(out) / "context")
    best = max(
        (r for r in prior_rows if r.gap_closed is not None),
        key=lambda r: r.gap_closed or 0.0,
        default=None,
    )
    headline = ""
    if best is not None and not fast:
        headline = (
            f" On the uniform OOD split the blind rules score at most {blind:.3f}; plain "
            f"{prior_diag['plain']['ood'].accuracy:.3f}, the oracle "
            f"{prior_diag['oracle']['ood'].accuracy:.3f}; {best.method} closes "
            f"{best.gap_closed:.0%} of that gap."
        )
    report = causalvl.BiasReport(
        prior_diag,
        title="causalvl demo: language prior (PriorShiftVQA over real digits)",
        baseline="plain",
        extra_sections=[
            causalvl.MetricTable.from_mapping(
                "Comparison with the blind rules and the oracle",
                table(prior_rows),
                definitions=definitions,
                description="The blind rules read only the question type (the training "
                "prior's favourite answer; its least favoured valid answer); the image-only "
                "probe answers from linear classifiers of the image; the oracle trains on a "
                "balanced split without the prior: the out-of-distribution accuracy a "
                "debiasing method can hope to reach.",
            ),
            causalvl.MetricTable.from_mapping(
                "Object context: plain vs backdoor adjustment",
                table(context_rows, "context flip rate"),
                definitions=definitions,
                description="The full context report: context/index.html.",
            ),
        ],
        audit=audit,
        config=provenance,
        seed=seed,
        notes=smoke + "Images are real handwritten digits (scikit-learn); questions are "
        "templated. Every model is the same TinyVQA trained with causalvl.Trainer on CPU; only "
        "the objective, the data it is trained on or its last layer differs." + headline,
    )
    files = dict(report.save(out))
    files["context_html"] = context_files["html"]
    return DemoResult(
        rows=tuple(rows),
        report_files=files,
        seconds=time.perf_counter() - start,
        fast=fast,
    )
