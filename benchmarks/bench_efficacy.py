"""Does debiasing work? ID / OOD accuracy and gap closed, mean ± std over seeds.

* Language prior (:class:`~causalvl.datasets.PriorShiftVQA`, the VQA-CP recipe) over real
  digits and over CIFAR-10 photos: plain, RUBi, LMH, GGE, CF-VQA with the sum / harmonic /
  rubi fusions, model-agnostic prior subtraction and an oracle trained on the balanced split.
  Models are trained and measured by :func:`causalvl.demo.prior_benchmark`
  (:class:`~causalvl.Trainer` + :func:`~causalvl.diagnose`).
* Object context (:class:`~causalvl.datasets.ContextShift`): plain / backdoor / oracle, by
  :func:`causalvl.demo.context_benchmark`.
* Compositionality (:class:`~causalvl.datasets.compositional.CompositionalPairs`): Winoground
  group score of random negatives vs the hard-negative curriculum, by the functions of
  ``examples/curriculum_compositional.py``.

Gap closed = (OOD_method − OOD_plain) / (OOD_oracle − OOD_plain), per seed, then mean ± std.

    python benchmarks/bench_efficacy.py out.json            # full (several minutes)
    python benchmarks/bench_efficacy.py out.json --quick    # smoke sizes (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

import causalvl
from causalvl.demo import DemoSettings, context_benchmark, prior_benchmark, prior_methods

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, mean_std  # noqa: E402

log = logging.getLogger("benchmarks.efficacy")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

PRIOR_METHODS = (
    "plain",
    "RUBi",
    "LMH",
    "GGE",
    "CF-VQA (sum)",
    "CF-VQA (harmonic)",
    "CF-VQA (rubi)",
    "prior subtraction",
    "oracle",
)


def settings_for(quick: bool) -> DemoSettings:
    """Run sizes: the demo's smoke settings for ``--quick``; 1,200 training questions, 600 per
    test split and 8 epochs (the documented prior-shift setup) otherwise."""
    if quick:
        return dataclasses.replace(DemoSettings.fast(), eval_each_epoch=False)
    return dataclasses.replace(
        DemoSettings.full(), prior_train=1200, prior_test=600, prior_epochs=8, eval_each_epoch=False
    )


def _example(name: str) -> Any:
    """A module of ``examples/`` (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def methods_for(settings: DemoSettings) -> dict[str, list[causalvl.InterventionConfig]]:
    """The demo's methods, with CF-VQA as configured in ``examples/cfvqa_digits.py`` (simple
    graph, branch MLP ``(256, 256)``) under each fusion; the ``rubi`` fusion has no vision slot,
    and one graph for the three keeps them comparable."""
    base = prior_methods(settings)
    cfvqa = _example("cfvqa_digits").CFVQA
    out = {}
    for name in PRIOR_METHODS:
        if name.startswith("CF-VQA"):
            out[name] = [cfvqa.replace(fusion=name.split("(")[1].rstrip(")"))]
        else:
            out[name] = base[name]
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]], names: tuple[str, ...]) -> dict:
    """Mean ± std of ID, OOD and gap closed over seeds (gap closed per seed first)."""
    plain, oracle = names[0], names[-1]
    out = {}
    for n in names:
        row = {
            "id": mean_std([s[n]["id"] for s in per_seed]),
            "ood": mean_std([s[n]["ood"] for s in per_seed]),
            "train_seconds": mean_std([s[n]["seconds"] for s in per_seed]),
        }
        if n not in (plain, oracle):
            closed = []
            for s in per_seed:
                gap = s[oracle]["ood"] - s[plain]["ood"]
                closed.append((s[n]["ood"] - s[plain]["ood"]) / gap if gap > 1e-9 else 0.0)
            row["gap_closed"] = mean_std(closed)
        out[n] = row
    return out


def prior_shift(source: Any, seeds: list[int], settings: DemoSettings) -> dict[str, Any]:
    per_seed = []
    for seed in seeds:
        diag, times, _ = prior_benchmark(
            settings, seed, False, source=source, methods=methods_for(settings)
        )
        per_seed.append(
            {
                n: {"id": d["id"].accuracy, "ood": d["ood"].accuracy, "seconds": times[n]}
                for n, d in diag.items()
            }
        )
        log.info("prior shift seed %d done", seed)
    return {"methods": summarise(per_seed, PRIOR_METHODS), "per_seed": per_seed}


def context_shift(seeds: list[int], settings: DemoSettings) -> dict[str, Any]:
    names = ("plain", "backdoor", "oracle")
    per_seed = []
    for seed in seeds:
        diag, times = context_benchmark(settings, seed, False)
        per_seed.append(
            {
                short: {
                    "id": diag[f"{short} (context)"]["id"].accuracy,
                    "ood": diag[f"{short} (context)"]["ood"].accuracy,
                    "seconds": times[f"{short} (context)"],
                }
                for short in names
            }
        )
    return {"methods": summarise(per_seed, names), "per_seed": per_seed}


def curriculum(seeds: list[int], *, groups: int, epochs: int) -> dict[str, Any]:
    ex = _example("curriculum_compositional")
    per_seed = []
    for seed in seeds:
        train, test, vocab = ex.build_data(groups, seed=seed)
        row = {}
        for name, cfg in ex.ARMS.items():
            start = time.perf_counter()
            scores = ex.train_and_score(train, test, vocab, cfg, seed=seed, epochs=epochs)
            row[name] = {**scores, "seconds": time.perf_counter() - start}
        per_seed.append(row)
    arms = {
        name: {
            key: mean_std([s[name][key] for s in per_seed])
            for key in ("text", "image", "group", "seconds")
        }
        for name in ex.ARMS
    }
    return {"arms": arms, "groups": groups, "epochs": epochs, "per_seed": per_seed}


def run(
    *, quick: bool = False, seeds: list[int] | None = None, cifar: Path | None = None
) -> dict[str, Any]:
    """Every efficacy benchmark; returns the JSON-ready results."""
    from causalvl.datasets import cifar10, default_data_dir

    seeds = seeds or ([0, 1] if quick else [0, 1, 2, 3, 4])
    settings = settings_for(quick)
    result: dict[str, Any] = {
        "benchmark": "efficacy",
        "quick": quick,
        "seeds": seeds,
        "settings": dataclasses.asdict(settings),
    }
    start = time.perf_counter()
    result["digits"] = prior_shift(None, seeds, settings)
    if cifar is None and default_data_dir() is not None:
        cifar = Path(default_data_dir()) / "cifar-10-batches-py"
    if cifar is not None and Path(cifar).is_dir():
        source = cifar10(cifar, split="test")
        result["cifar10"] = {"source": f"{cifar} (test_batch, 10,000 photos)"}
        result["cifar10"].update(prior_shift(source, seeds, settings))
    else:
        result["cifar10"] = {
            "skipped": f"no CIFAR-10 folder at {cifar!s}; pass --cifar PATH/cifar-10-batches-py"
            if cifar is not None
            else "no CIFAR-10 folder given and no default data dir; pass --cifar PATH"
        }
    result["context"] = context_shift(seeds, settings)
    groups, epochs = (40, 1) if quick else (800, 6)  # the example's full run
    result["curriculum"] = curriculum(seeds, groups=groups, epochs=epochs)
    result["seconds"] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, 2 seeds")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--cifar", type=Path, default=None, help="cifar-10-batches-py folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(), **run(quick=args.quick, seeds=args.seeds, cifar=args.cifar)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
