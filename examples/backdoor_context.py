"""Backdoor adjustment against object-in-context bias (VC R-CNN style), end to end on CPU.

Data: :class:`causalvl.datasets.ContextShift` composites of two real handwritten digits, a
noisy target and a clean context object. In training the context object's class is the
target's "partner" class 90% of the time; in the test split it is uniform, so a model that
reads the context instead of the target fails out of distribution.

Model: :class:`causalvl.models.TinyRegionClassifier`, a CNN over each region crop (region features
``(B, 2, D)``) whose mixer sees both regions, so the context can leak into the prediction.

Steps:

1. train the plain model on the biased training split;
2. collect its region features over the training set and build the confounder dictionary
   from the per-class means (target regions labelled by ``labels``, context regions by
   ``context_class``) with the class-frequency prior;
3. continue training two copies for the same number of epochs: the plain one, and one wrapped
   with ``BackdoorConfig(regions="context")``, which replaces the observed context region by
   its dictionary expectation queried by the target region;
4. report in-distribution (training-split) and shifted-test accuracy, with an oracle trained
   on data without the co-occurrence.

Run ``python examples/backdoor_context.py`` (about a minute on a laptop CPU) or with
``--fast`` for a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time

import torch
from torch.utils.data import DataLoader

import causalvl
from causalvl.datasets import ContextShift, collate


def make_loader(ds: ContextShift, batch_size: int, seed: int | None) -> DataLoader:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        ds, batch_size=batch_size, shuffle=seed is not None, generator=gen, collate_fn=collate
    )


def fit(vl: causalvl.IntervenedModel, loader: DataLoader, epochs: int, lr: float) -> None:
    """Plain Adam training on ``vl.objective`` (task loss plus any intervention loss)."""
    opt = torch.optim.Adam(vl.parameters(), lr=lr)
    vl.train()
    for _ in range(epochs):
        for batch in loader:
            loss = vl.objective(vl(batch), batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    vl.eval()


@torch.no_grad()
def evaluate(vl: causalvl.IntervenedModel, loader: DataLoader) -> dict[str, float]:
    """Accuracy overall and on bias-aligned / bias-conflicting examples (fractions)."""
    vl.eval()
    hits, aligned = [], []
    for batch in loader:
        pred = vl(batch).logits.argmax(-1)
        hits.append(pred == batch["labels"])
        aligned.append(batch["bias_aligned"])
    ok, al = torch.cat(hits).float(), torch.cat(aligned)
    return {
        "accuracy": ok.mean().item(),
        "aligned": ok[al].mean().item() if al.any() else float("nan"),
        "conflicting": ok[~al].mean().item() if (~al).any() else float("nan"),
    }


def run(
    *,
    num_train: int = 2000,
    num_test: int = 1000,
    image_size: int = 16,
    hidden: int = 32,
    width: int = 16,
    epochs: int = 6,
    extra_epochs: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    normalize: bool = True,
) -> dict[str, dict[str, float]]:
    """Train plain, backdoor-adjusted and oracle models; return their accuracies."""
    data = dict(image_size=image_size, seed=seed)
    train = ContextShift(split="train", cooccurrence=0.9, num_examples=num_train, **data)
    test = ContextShift(split="test", num_examples=num_test, **data)
    k = len(train.class_names)
    unbiased = ContextShift(
        split="train", cooccurrence=1.0 / (k - 1), num_examples=num_train, **data
    )
    train_eval, test_eval = make_loader(train, 256, None), make_loader(test, 256, None)

    with torch.random.fork_rng():  # model init draws from the global RNG: keep it local
        torch.manual_seed(seed)
        net = causalvl.models.TinyRegionClassifier(num_classes=k, hidden=hidden, width=width)
        oracle_net = copy.deepcopy(net)
    plain = causalvl.intervene(net, causalvl.IdentityConfig())
    fit(plain, make_loader(train, 64, seed + 1), epochs, lr)

    # the confounder dictionary: per-class mean region features, class-frequency prior
    feats, labels = causalvl.ConfounderDictionary.collect(
        plain,
        train_eval,
        "vision_features",
        labels_key=["labels", "context_class"],
        pool=False,
        progress=False,
    )
    dictionary = causalvl.ConfounderDictionary.from_class_means(
        feats, labels, names=train.class_names
    )
    with tempfile.TemporaryDirectory() as tmp:  # dictionaries save and load without pickle
        dictionary = causalvl.ConfounderDictionary.load(dictionary.save(tmp))

    backdoor = causalvl.intervene(
        copy.deepcopy(net),
        causalvl.BackdoorConfig(
            target="vision_features",
            dictionary=dictionary,
            regions="context",
            target_index=0,
            normalize=normalize,
            init_seed=seed + 1,  # W_y, W_z and the projection, from their own generator
        ),
    )
    fit(plain, make_loader(train, 64, seed + 2), extra_epochs, lr)
    fit(backdoor, make_loader(train, 64, seed + 2), extra_epochs, lr)
    oracle = causalvl.intervene(oracle_net, causalvl.IdentityConfig())
    fit(oracle, make_loader(unbiased, 64, seed + 1), epochs + extra_epochs, lr)

    results = {}
    for name, vl in (("plain", plain), ("backdoor", backdoor), ("oracle", oracle)):
        results[name] = {
            "train": evaluate(vl, train_eval)["accuracy"],
            **{f"test_{k}": v for k, v in evaluate(vl, test_eval).items()},
        }
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; 0: every core)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = (
        dict(
            num_train=400, num_test=300, image_size=8, hidden=16, width=8, epochs=2, extra_epochs=1
        )
        if args.fast
        else {}
    )
    start = time.perf_counter()
    results = run(seed=args.seed, **settings)
    print(f"{'model':<10} {'train acc':>10} {'test acc':>9} {'aligned':>8} {'conflicting':>12}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['train']:>10.3f} {r['test_accuracy']:>9.3f} "
            f"{r['test_aligned']:>8.3f} {r['test_conflicting']:>12.3f}"
        )
    gain = results["backdoor"]["test_accuracy"] - results["plain"]["test_accuracy"]
    print(f"backdoor - plain on the shifted test split: {gain:+.3f}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
