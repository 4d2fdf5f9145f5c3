"""Contrastive decoding against a planted language prior, measured with POPE (CPU, ~2 minutes).

A tiny LLaVA (built from a config, no downloads) learns to answer "Is there a <object> in the
image?" from synthetic images in which each object is a faint fixed pattern under noise. The
training questions plant a language prior: about the three *popular* objects the answer is
"yes" 90% of the time, about the others 50%. As in a real VLM, whose language model was
pretrained on text, the same questions are also trained without the image, so the text-only
branch carries the prior.

On held-out images the script builds POPE questions (random / popular / adversarial negatives)
and compares, each with the yes-ratio, as the critique of contrastive decoding asks:

(a) greedy; (b) sampling at T=1; (c) sampling with only the plausibility mask (alpha = 0,
beta = 0.1); (d) VCD, diffusion-noised image (alpha = 1, beta = 0.1); (e) the no-image
counterfactual (VDD / PAI style, alpha = 1, beta = 0.1), greedy and sampled.

Training on CPU is not bit-reproducible over hundreds of steps (floating-point reductions), so
the table moves by a few points between runs; docs/decoding.md summarises five runs.

    python examples/vcd_tiny.py            # 600 training steps
    python examples/vcd_tiny.py --steps 200 --seed 1
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

import causalvl
from causalvl.decoding.pope import POPEEvaluator
from causalvl.decoding.tiny import BOS, IMAGE_TOKEN, NUM_IMAGE_TOKENS, tiny_generative_model

logging.getLogger("transformers").setLevel(logging.ERROR)

NUM_OBJECTS, POPULAR = 8, 3  # objects 0..2 are frequent, and the prior says "yes" for them
FIRST_OBJECT, YES, NO, QUESTION = 10, 5, 6, 20  # token ids
PRESENCE = torch.tensor([0.6] * POPULAR + [0.25] * (NUM_OBJECTS - POPULAR))


class World:
    """Synthetic images: each present object adds its fixed pattern (weight ``signal``) to noise."""

    def __init__(self, seed: int = 0, signal: float = 0.1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.patterns = torch.randn(NUM_OBJECTS, 3 * 28 * 28, generator=g)
        self.signal = signal

    def images(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.rand(n, NUM_OBJECTS, generator=g) < PRESENCE
        labels[labels.sum(1) == 0, POPULAR] = True
        noise = torch.randn(n, 3 * 28 * 28, generator=g)
        pixels = noise + self.signal * labels.float() @ self.patterns
        return labels, pixels.view(n, 3, 28, 28)


def question_ids(objects: torch.Tensor) -> torch.Tensor:
    """``[bos, <image> x 4, QUESTION, object]`` per row."""
    n = objects.shape[0]
    return torch.cat(
        [
            torch.full((n, 1), BOS),
            torch.full((n, NUM_IMAGE_TOKENS), IMAGE_TOKEN),
            torch.full((n, 1), QUESTION),
            (FIRST_OBJECT + objects)[:, None],
        ],
        1,
    )


def training_batch(world: World, n: int, g: torch.Generator, prior: float = 0.9):
    labels, pixels = world.images(n, g)
    objects = torch.empty(n, dtype=torch.long)
    for i in range(n):
        popular = bool(torch.rand(1, generator=g) < 0.5)
        want_yes = bool(torch.rand(1, generator=g) < (prior if popular else 0.5))
        pool = range(POPULAR) if popular else range(POPULAR, NUM_OBJECTS)
        cands = [k for k in pool if bool(labels[i, k]) == want_yes] or list(pool)
        objects[i] = cands[int(torch.randint(len(cands), (1,), generator=g))]
    answers = torch.where(labels[torch.arange(n), objects], YES, NO)
    return question_ids(objects), pixels, answers


def train(model: torch.nn.Module, world: World, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        ids, pixels, answers = training_batch(world, 64, g)
        logits = model(input_ids=ids, pixel_values=pixels).logits[:, -1]
        text_ids = torch.cat([ids[:, :1], ids[:, 1 + NUM_IMAGE_TOKENS :]], 1)  # no image
        text_logits = model(input_ids=text_ids).logits[:, -1]
        loss = F.cross_entropy(logits, answers) + 0.5 * F.cross_entropy(text_logits, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            logging.getLogger(__name__).info("step %d loss %.3f", step, loss.item())
    model.eval()


class YesOrNo(LogitsProcessor):
    """Restricts the answer to the YES / NO tokens (runs before the contrast)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = torch.full_like(scores, float("-inf"))
        allowed[:, [YES, NO]] = 0.0
        return scores + allowed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seeds the model, data and training")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1, fastest for these small models; 0: every core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    world = World(seed=args.seed)
    model, _ = tiny_generative_model("llava", seed=args.seed, init_std=0.1)
    train(model, world, args.steps, seed=args.seed + 1)

    labels, pixels = world.images(args.images, torch.Generator().manual_seed(99 + args.seed))
    annotations = {
        i: {f"object{k}" for k in range(NUM_OBJECTS) if labels[i, k]} for i in range(args.images)
    }
    evaluator = POPEEvaluator(annotations, num_per_image=3, seed=0)

    def answerer(config: causalvl.CounterfactualDecodingConfig, **gen):
        vl = causalvl.intervene(model, config)

        def answer(questions):
            objects = torch.tensor([int(q.object.removeprefix("object")) for q in questions])
            out = vl.generate(
                input_ids=question_ids(objects),
                pixel_values=pixels[[q.image_id for q in questions]],
                max_new_tokens=1,
                logits_processor=[YesOrNo()],
                **gen,
            )
            return ["Yes" if int(t) == YES else "No" for t in out[:, -1]]

        return answer

    cfg = causalvl.CounterfactualDecodingConfig
    greedy, sample = {"do_sample": False}, {"do_sample": True, "top_k": 0}
    methods = {
        "(a) greedy": (cfg(alpha=0.0, beta=0.0), greedy),
        "(b) sampling T=1": (cfg(alpha=0.0, beta=0.0), sample),
        "(c) sampling + mask only": (cfg(alpha=0.0, beta=0.1), sample),
        "(d) VCD noise t=500, greedy": (cfg(alpha=1.0, beta=0.1), greedy),
        "(d) VCD noise t=500, sampling": (cfg(alpha=1.0, beta=0.1), sample),
        "(e) no-image contrast, greedy": (
            cfg(alpha=1.0, beta=0.1, counterfactual="no_image"),
            greedy,
        ),
        "(e) no-image contrast, sampling": (
            cfg(alpha=1.0, beta=0.1, counterfactual="no_image"),
            sample,
        ),
    }
    settings = list(evaluator.questions)
    print("accuracy / F1 / yes-ratio per POPE setting")
    print("| method | " + " | ".join(settings) + " |")
    print("|---" * (len(settings) + 1) + "|")
    tables = []
    for name, (config, gen) in methods.items():
        result = evaluator.evaluate(answerer(config, **gen), name=name)
        tables.append(result.to_metric_table())
        cells = [
            f"{m.accuracy:.3f} / {m.f1:.3f} / {m.yes_ratio:.3f}" for m in result.settings.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    n = len(evaluator.questions["random"])
    print(f"\n{n} questions per setting. The tables are ready for report sections:")
    print("causalvl.BiasReport(diagnostics, extra_sections=tables)")


if __name__ == "__main__":
    main()
