"""The prior-shift experiment on CIFAR-10 photos (given the path of a CIFAR-10 download).

The same VQA-CP recipe as the digits demo, on harder real images: templated questions about
CIFAR-10 photos (what is it, is it a X, animal or vehicle, its colour after a real recolouring),
with answer priors that differ between train and test. Trains plain, CF-VQA, LMH and an oracle
on the balanced split, and prints in-distribution and out-of-distribution accuracy.

    python examples/cifar_prior_shift.py --cifar path/to/cifar-10-batches-py
    python examples/cifar_prior_shift.py --cifar ... --fast          # smoke test

The folder is the official python version of the dataset (``data_batch_1`` ... ``test_batch``,
``batches.meta``); the reader never unpickles anything but those files' plain data.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import causalvl
from causalvl.datasets import PriorShiftVQA, cifar10, default_data_dir
from causalvl.interventions.ensembles import set_bias_prior


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = default_data_dir()
    parser.add_argument(
        "--cifar",
        type=Path,
        default=None if default is None else Path(default) / "cifar-10-batches-py",
        help="folder of the python version of CIFAR-10",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true")
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
    if args.cifar is None:
        parser.error("give --cifar PATH (the cifar-10-batches-py folder)")

    source = cifar10(args.cifar, split="train")
    settings = {"seed": args.seed, "image_size": 32, "train_images_per_class": 300}
    if args.fast:
        settings.update(num_examples=200, train_images_per_class=20, image_size=16)
    train = PriorShiftVQA(source, split="train", **settings)
    tok = train.tokenizer
    splits = {
        s: PriorShiftVQA(source, split=s, tokenizer=tok, **settings) for s in ("test_id", "test")
    }
    balanced = PriorShiftVQA(source, split="balanced", tokenizer=tok, **settings)
    methods = {
        "plain": causalvl.IdentityConfig(),
        "CF-VQA": causalvl.CounterfactualConfig(hidden=(64,)),
        "LMH": causalvl.LMHConfig(),
        "oracle": causalvl.IdentityConfig(),
    }
    results = {}
    for name, cfg in methods.items():
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            net = causalvl.TinyVQA(
                vocab_size=len(tok),
                num_answers=train.num_answers,
                image_size=settings["image_size"],
            )
        vl = causalvl.intervene(net, cfg)
        if name == "LMH":
            set_bias_prior(vl, train.train_prior())
        config = causalvl.TrainConfig(
            epochs=1 if args.fast else 12, lr=3e-3, seed=args.seed, progress=not args.fast
        )
        result = causalvl.Trainer(
            vl, balanced if name == "oracle" else train, eval_data=splits, config=config
        ).fit()
        results[name] = {s: result.final_metrics[f"{s}/accuracy"] for s in splits}
    print(f"{'method':<8} {'ID acc':>7} {'OOD acc':>8}")
    for name, acc in results.items():
        print(f"{name:<8} {acc['test_id']:>7.3f} {acc['test']:>8.3f}")
    return results


if __name__ == "__main__":
    main()
