"""Wrap a Hugging Face vision-language model with causal interventions and run it.

No download is needed: the model is a ViLT question-answering model built from a tiny config
with random weights, saved to a folder and loaded back with ``from_pretrained`` — the same code
path as a real checkpoint (``dandelin/vilt-b32-finetuned-vqa`` and friends).

What it shows:

1. ``causalvl.inspect_targets`` — which module each role (vision / language / fused) maps to;
2. ``causalvl.intervene`` with the identity intervention — the logits equal the bare model's;
3. null-image prior subtraction — ``logits = 2 * factual - counterfactual`` where the
   counterfactual is the model's answer with the image removed (ViLT's own pixel mask);
4. a CF-VQA wrapper with question-only and vision-only branches, its TE / NDE / TIE effects,
   one training step, and saving / loading the intervention weights.

    python examples/wrap_hf_model.py          # a few seconds
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import ViltConfig, ViltForQuestionAnswering

import causalvl


def tiny_vilt(folder: str) -> ViltForQuestionAnswering:
    config = ViltConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        max_position_embeddings=16,
        num_labels=6,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ViltForQuestionAnswering(config).save_pretrained(folder)
    return ViltForQuestionAnswering.from_pretrained(folder, local_files_only=True).eval()


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (size, 8), generator=gen)
    ids[:, 0], ids[:, -1] = 101 % 100, 102 % 100  # stand-ins for [CLS] / [SEP]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(size, 8, dtype=torch.long),
        "token_type_ids": torch.zeros(size, 8, dtype=torch.long),
        "pixel_values": torch.randn(size, 3, 32, 32, generator=gen),
        "pixel_mask": torch.ones(size, 32, 32, dtype=torch.long),
        "labels": torch.randint(0, 6, (size,), generator=gen),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="accepted for symmetry; already fast")
    parser.parse_args(argv)
    inputs = batch()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_vilt(tmp)
        print("roles:")
        for target in causalvl.inspect_targets(model):
            print(f"  {target.role:<18} -> {target.path} ({target.module_type})")

        identity = causalvl.intervene(model, causalvl.IdentityConfig())
        # ViLT draws a random patch order in every forward, so fix the seed for both calls
        with torch.random.fork_rng():
            torch.manual_seed(0)
            wrapped = identity(**inputs).logits
        with torch.random.fork_rng():
            torch.manual_seed(0)
            bare = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        same = torch.equal(wrapped, bare)
        print(f"identity wrapper reproduces the model exactly: {same}")

        subtract = causalvl.intervene(
            model, causalvl.PriorSubtractionConfig(alpha=1.0, mode="mask")
        )
        out = subtract(**inputs)
        expected = 2 * out.factual_logits - out.counterfactual_logits
        print(
            f"prior subtraction = 2*factual - image-blind: {torch.allclose(out.logits, expected)}"
        )

        cfvqa = causalvl.intervene(model, causalvl.CFVQAConfig(hidden_sizes=(32,)))
        cfvqa.train()
        out = cfvqa(**inputs)
        loss = cfvqa.objective(out, inputs)
        loss.loss.backward()
        print("CF-VQA loss parts:", {k: round(v, 3) for k, v in loss.as_floats().items()})
        cfvqa.eval()
        with torch.no_grad():
            out = cfvqa(**inputs)
        print("effects:", {k: tuple(v.shape) for k, v in out.effects.items()})
        cfvqa.save_pretrained(f"{tmp}/cfvqa")
        restored = causalvl.load(f"{tmp}/cfvqa", model)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            before = cfvqa(**inputs).logits
            torch.manual_seed(0)
            same_after_load = torch.equal(restored(**inputs).logits, before)
        print(f"saved and restored CF-VQA predicts the same: {same_after_load}")
    return {"identity_equal": float(same), "restored_equal": float(same_after_load)}


if __name__ == "__main__":
    main()
