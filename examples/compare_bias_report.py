"""A bias report comparing a plain model with two debiased ones on the same benchmark.

Trains ``causalvl.models.TinyVQA`` three times on ``PriorShiftVQA`` over real digits (plain, CF-VQA,
LMH), measures each with ``causalvl.diagnose`` on the in-distribution and the shifted split,
adds a dowhy estimate of how much agreeing with the training prior drives correctness, and
writes one report: ``index.html`` (open it in a browser), ``report.json`` and ``summary.md``.

    python examples/compare_bias_report.py --out bias-report     # about a minute
    python examples/compare_bias_report.py --fast                  # seconds (smoke test)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import causalvl
from causalvl.datasets import PriorShiftVQA


def summary_text(report: causalvl.BiasReport) -> str:
    """The report's summary sentences and its per-model table, as plain text."""
    from causalvl.reports.formatting import format_number

    lines = [report.title, ""]
    lines += [f"- {sentence}" for sentence in report.headline()]
    header, rows = report.summary_rows()
    if rows:
        names = [m for m, _ in rows]
        table = [["model", *header]] + [[m, *map(format_number, v)] for m, v in rows]
        widths = [max(len(r[j]) for r in table) for j in range(len(header) + 1)]
        widths[0] = max(map(len, [*names, "model"]))
        lines.append("")
        for i, row in enumerate(table):
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells))
            if i == 0:
                lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bias-report"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="a seconds-long smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; 0: every core)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    size = {"num_examples": 160} if args.fast else {}
    train = PriorShiftVQA(split="train", seed=args.seed, **size)
    splits = {
        "id": PriorShiftVQA(split="test_id", seed=args.seed, tokenizer=train.tokenizer, **size),
        "ood": PriorShiftVQA(split="test", seed=args.seed, tokenizer=train.tokenizer, **size),
    }
    methods = {
        "plain": causalvl.IdentityConfig(),
        "CF-VQA": causalvl.CFVQAConfig(hidden_sizes=(64,)),
        "LMH": causalvl.LMHConfig(),
    }
    diagnostics = {}
    for name, cfg in methods.items():
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            net = causalvl.models.TinyVQA(
                vocab_size=len(train.tokenizer),
                num_answers=train.num_answers,
                image_size=train.config.image_size,
            )
        vl = causalvl.intervene(net, cfg)
        if name == "LMH":
            vl.set_bias_prior(train.train_prior())
        config = causalvl.TrainConfig(
            epochs=1 if args.fast else 10, lr=3e-3, seed=args.seed, progress=not args.fast
        )
        causalvl.Trainer(vl, train, eval_data=splits, config=config).fit()
        metrics = ("groups", "bias", "calibration", "language_prior", "effects", "causal")
        diagnostics[name] = causalvl.diagnose(
            vl,
            splits,
            metrics=metrics,
            causal_num_simulations=20 if args.fast else 100,
            progress=not args.fast,
            seed=args.seed,
        )
    report = causalvl.BiasReport(
        diagnostics, title="Plain vs CF-VQA vs LMH on a shifted answer prior", seed=args.seed
    )
    files = report.save(args.out)
    print(summary_text(report))
    print(f"\nbias report: {files['html']}  (also report.json and summary.md)")
    return {name: d["ood"].accuracy for name, d in diagnostics.items()}


if __name__ == "__main__":
    main()
