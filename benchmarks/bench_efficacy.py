"""Does debiasing work? Object context and compositional training, mean ± std over seeds.

* Object context (:class:`~causalvl.datasets.ContextShift`): plain / backdoor / oracle, by
  :func:`causalvl.demo.context_benchmark`.
* Compositionality (:class:`~causalvl.datasets.compositional.CompositionalPairs`): Winoground
  group score of random negatives vs the hard-negative curriculum, by the functions of
  ``examples/curriculum_compositional.py``.

The language prior has its own protocol and page: ``benchmarks/bench_priors.py`` writes
``docs/efficacy.md``.

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

from causalvl.demo import DemoSettings, context_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, mean_std  # noqa: E402

log = logging.getLogger("benchmarks.efficacy")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def settings_for(quick: bool) -> DemoSettings:
    """Run sizes: the demo's smoke settings for ``--quick``, the demo's own otherwise."""
    if quick:
        return dataclasses.replace(DemoSettings.fast(), eval_each_epoch=False)
    return dataclasses.replace(DemoSettings.full(), eval_each_epoch=False)


def _example(name: str) -> Any:
    """A module of ``examples/`` (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def run(*, quick: bool = False, seeds: list[int] | None = None) -> dict[str, Any]:
    """The object-context and curriculum benchmarks; returns the JSON-ready results."""
    seeds = seeds or ([0, 1] if quick else [0, 1, 2, 3, 4])
    settings = settings_for(quick)
    result: dict[str, Any] = {
        "benchmark": "efficacy",
        "quick": quick,
        "seeds": seeds,
        "settings": dataclasses.asdict(settings),
    }
    start = time.perf_counter()
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
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(), **run(quick=args.quick, seeds=args.seeds)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
