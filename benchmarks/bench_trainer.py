"""Throughput of :class:`causalvl.Trainer` against a hand-written PyTorch loop.

Both train the same model (``TinyVQA`` wrapped with ``IdentityConfig``, the same initial
weights) with the same objective (``vl.objective``: cross-entropy), data
(:class:`~causalvl.datasets.PriorShiftVQA`, its own ``collate``), batch size, optimizer (Adam,
constant learning rate) and a seeded random order; progress bars off, no evaluation, no
checkpoints. Rounds alternate the two (in a shuffled order) and the result is the ratio of the
median examples per second (Trainer / hand loop).

    python benchmarks/bench_trainer.py out.json [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

import causalvl
from causalvl.datasets import PriorShiftVQA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, machine  # noqa: E402


def hand_loop(vl: causalvl.IntervenedModel, data: PriorShiftVQA, *, epochs: int, batch: int,
              lr: float, seed: int) -> None:  # fmt: skip
    """The loop a user would write: DataLoader, Adam, forward, objective, backward, step."""
    gen = torch.Generator()
    opt = torch.optim.Adam(vl.parameters(), lr=lr)
    vl.train()
    for epoch in range(epochs):
        gen.manual_seed(seed * 1000 + epoch)
        loader = DataLoader(
            data,
            batch_size=batch,
            sampler=RandomSampler(data, generator=gen),
            collate_fn=getattr(data, "collate", None),  # what the Trainer uses
        )
        for b in loader:
            loss = vl.objective(vl(b), b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()


def run(*, quick: bool = False, rounds: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Examples per second of both loops; returns the JSON-ready results."""
    n, epochs, batch, lr = (128, 1, 32, 3e-3) if quick else (3000, 2, 64, 3e-3)
    rounds = rounds or (2 if quick else 5)
    data = PriorShiftVQA(split="train", num_examples=n, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = causalvl.models.TinyVQA(
            vocab_size=len(data.tokenizer), num_answers=data.num_answers, image_size=16, hidden=64
        )
    config = causalvl.TrainConfig(
        epochs=epochs, batch_size=batch, lr=lr, seed=seed, progress=False, device="cpu"
    )

    def fresh() -> causalvl.IntervenedModel:
        return causalvl.intervene(copy.deepcopy(net), causalvl.IdentityConfig())

    def trainer() -> None:
        causalvl.Trainer(fresh(), data, config=config).fit()

    def hand() -> None:
        hand_loop(fresh(), data, epochs=epochs, batch=batch, lr=lr, seed=seed)

    times = interleaved_medians({"trainer": trainer, "hand": hand}, rounds=rounds, seed=seed)
    examples = n * epochs
    per_s = {k: examples / v["median"] for k, v in times.items()}
    return {
        "benchmark": "trainer",
        "quick": quick,
        "setup": f"TinyVQA (hidden 64) + IdentityConfig, {n} PriorShiftVQA examples, {epochs} "
        f"epoch(s), batch {batch}, Adam lr {lr}, median of {rounds} rounds",
        "examples_per_s": per_s,
        "seconds": {k: v["median"] for k, v in times.items()},
        "ratio": per_s["trainer"] / per_s["hand"],
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(), **run(quick=args.quick, rounds=args.rounds)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
