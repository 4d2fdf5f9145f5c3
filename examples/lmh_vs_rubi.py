"""LMH vs RUBi on a VQA set whose answer prior shifts between training and test.

``PriorShiftVQA`` asks templated questions about real handwritten digits (noised, faintly
tinted). In training, 80% of each question type's answers are that type's "train-favoured"
answers. The out-of-distribution test split favours other answers, disjoint from those. A
plain model learns to answer from the question type alone, so it scores well in distribution
and poorly out of distribution. The oracle is the same model trained on answers drawn uniformly
per type.

The script trains TinyVQA five ways and prints in-distribution (``test_id``) and
out-of-distribution (``test``) accuracy, as fractions:

* plain: the task loss (cross-entropy);
* oracle: the task loss on the ``balanced`` split;
* RUBi: a question-only mask ``Z_k * sigmoid(Z_q)`` during training (``causalvl.RUBiConfig``);
* LMH: Learned-Mixin +H with the question-type prior (``causalvl.LMHConfig``);
* GGE: the greedy gradient ensemble (``causalvl.GGEConfig``, one summed step per batch).

All of them predict with the base model's own logits at test time.

    python examples/lmh_vs_rubi.py            # about a minute on a laptop CPU
    python examples/lmh_vs_rubi.py --seed 1 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import causalvl
from causalvl.datasets import PriorShiftVQA, collate
from causalvl.interventions.ensembles import question_type_prior, set_bias_prior

KEYS = ("pixel_values", "input_ids", "attention_mask", "labels", "question_type")


def as_tensors(dataset: PriorShiftVQA) -> dict[str, torch.Tensor]:
    """The whole dataset as one batch of the keys the objectives need."""
    batch = collate([dataset[i] for i in range(len(dataset))])
    return {k: batch[k] for k in KEYS}


def train_and_evaluate(
    config: causalvl.InterventionConfig,
    train: dict[str, torch.Tensor],
    evals: dict[str, dict[str, torch.Tensor]],
    *,
    vocab_size: int,
    num_answers: int,
    prior: torch.Tensor,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> dict[str, float]:
    """Train a fresh TinyVQA wrapped with ``config``; accuracy on each evaluation split."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = causalvl.TinyVQA(vocab_size=vocab_size, num_answers=num_answers, image_size=16)
    vl = causalvl.intervene(net, config)
    if isinstance(config, (causalvl.LMHConfig, causalvl.GGEConfig)):
        set_bias_prior(vl, prior)
    optimizer = torch.optim.Adam(vl.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = train["labels"].shape[0]
    vl.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = {k: v[order[start : start + batch_size]] for k, v in train.items()}
            loss = vl.objective(vl(batch), batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    vl.eval()
    out = {}
    with torch.no_grad():
        for name, data in evals.items():
            predictions = vl(data).logits.argmax(1)
            out[name] = float((predictions == data["labels"]).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--test-size", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; 0: every core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.time()
    train_ds = PriorShiftVQA(split="train", num_examples=args.train_size, seed=args.seed)
    tok = train_ds.tokenizer
    common = dict(seed=args.seed, tokenizer=tok)
    balanced = as_tensors(PriorShiftVQA(split="balanced", num_examples=args.train_size, **common))
    evals = {
        "id": as_tensors(PriorShiftVQA(split="test_id", num_examples=args.test_size, **common)),
        "ood": as_tensors(PriorShiftVQA(split="test", num_examples=args.test_size, **common)),
    }
    train = as_tensors(train_ds)
    prior = question_type_prior(
        train["question_type"],
        train["labels"],
        len(train_ds.question_types),
        len(train_ds.answers),
    )
    runs = {
        "plain": (causalvl.IdentityConfig(), train),
        "oracle": (causalvl.IdentityConfig(), balanced),
        "rubi": (causalvl.RUBiConfig(hidden=(64,)), train),
        "lmh": (causalvl.LMHConfig(), train),
        "gge": (causalvl.GGEConfig(hidden=(64,)), train),
    }
    results = {}
    for name, (config, data) in runs.items():
        results[name] = train_and_evaluate(
            config,
            data,
            evals,
            vocab_size=len(tok.vocab),
            num_answers=len(train_ds.answers),
            prior=prior,
            epochs=args.epochs,
            seed=args.seed,
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'objective':<8} {'ID acc':>8} {'OOD acc':>8}")
    for name, acc in results.items():
        print(f"{name:<8} {acc['id']:>8.3f} {acc['ood']:>8.3f}")
    print(f"({time.time() - start:.0f} s; accuracies are fractions in [0, 1])")


if __name__ == "__main__":
    main()
