"""Time of :func:`causalvl.diagnose` plus :meth:`causalvl.BiasReport.save` on 10,000 examples.

A TinyVQA trained for one epoch on :class:`~causalvl.datasets.PriorShiftVQA` (digits) is
diagnosed on a 10,000-question ``test`` split (every default diagnostic: accuracy, groups,
language-prior reliance, calibration, effects), and the bias report (``index.html``,
``report.json``, figures) is written. Building the split is timed separately.

    python benchmarks/bench_diagnostics.py out.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import causalvl
from causalvl.datasets import PriorShiftVQA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def run(*, quick: bool = False, examples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Seconds to build the split, diagnose it and save the report; JSON-ready results."""
    n = examples or (500 if quick else 10_000)
    train = PriorShiftVQA(split="train", num_examples=300, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = causalvl.models.TinyVQA(
            vocab_size=len(train.tokenizer), num_answers=train.num_answers, image_size=16
        )
    vl = causalvl.intervene(net, causalvl.IdentityConfig())
    causalvl.Trainer(
        vl, train, config=causalvl.TrainConfig(epochs=1, batch_size=64, seed=seed, device="cpu")
    ).fit()
    start = time.perf_counter()
    data = PriorShiftVQA(split="test", num_examples=n, seed=seed, tokenizer=train.tokenizer)
    build = time.perf_counter() - start
    start = time.perf_counter()
    diag = causalvl.diagnose(vl, {"ood": data}, distribution="ood", seed=seed, progress=False)
    diagnose_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        causalvl.BiasReport(diag, title="benchmark").save(tmp)
        report_s = time.perf_counter() - start
    return {
        "benchmark": "diagnostics",
        "quick": quick,
        "examples": n,
        "seconds": {
            "build split": build,
            "diagnose": diagnose_s,
            "report save": report_s,
            "diagnose + report": diagnose_s + report_s,
        },
        "examples_per_s": n / (diagnose_s + report_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="500 examples")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(), **run(quick=args.quick)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
