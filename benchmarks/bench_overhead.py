"""Wall-time overhead of ``causalvl.intervene`` over the bare model, on ViLT- and CLIP-sized models.

Both models are random-init Hugging Face models built from their default configs
(``ViltConfig()``: ViLT-B/32, 384x384 images, 12 layers of width 768, a 3,129-answer VQA head;
``CLIPConfig()``: CLIP ViT-B/32, 224x224 images). Nothing is downloaded. Each wrapper runs on
the same inputs as the bare model in eval mode under ``torch.no_grad()``; after a warm-up, every
round calls the bare model and every wrapper once in a shuffled order, and the overhead is the
ratio of the medians (wrapped / bare).

Wrappers: the identity wrapper; CF-VQA (branch heads on captured features, no extra pass);
model-agnostic prior subtraction without and with the question cache (the same questions each
call, so every call after the first is a cache hit); backdoor adjustment over K = 100 and
K = 1,000 prototypes (ViLT: the pooled fused feature; CLIP: the projected image feature).

    python benchmarks/bench_overhead.py out.json           # real sizes (a few minutes)
    python benchmarks/bench_overhead.py out.json --quick   # reduced configs (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

import causalvl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, machine  # noqa: E402

WRAPPERS = (
    "identity",
    "CF-VQA (branch heads)",
    "prior subtraction, no cache",
    "prior subtraction, cached questions",
    "backdoor K=100",
    "backdoor K=1000",
)


def _reduced(kind: str, config: Any) -> Any:
    """Shrink a default config for the quick mode (same architecture, far fewer FLOPs)."""
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    if kind == "vilt":
        for k, v in small.items():
            setattr(config, k, v)
        config.image_size = 64
        return config
    import transformers

    return transformers.CLIPConfig(
        text_config=small,
        vision_config={**small, "image_size": 64},
        projection_dim=32,
    )


def build_model(kind: str, *, quick: bool, seed: int = 0) -> tuple[torch.nn.Module, dict, str]:
    """A random-init ``ViltForQuestionAnswering`` or ``CLIPModel`` and a batch of its inputs."""
    import transformers

    gen = torch.Generator().manual_seed(seed)
    if kind == "tiny":
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = causalvl.models.TinyVQA(vocab_size=100, num_answers=30, image_size=16).eval()
        inputs = {
            "pixel_values": torch.rand(2, 3, 16, 16, generator=gen),
            "input_ids": torch.randint(1, 100, (2, 12), generator=gen),
            "attention_mask": torch.ones(2, 12, dtype=torch.long),
        }
        params = sum(p.numel() for p in model.parameters())
        desc = (
            f"TinyVQA, {params / 1e3:.0f}k parameters, 16x16 images, batch of 2 questions of 12 "
            "tokens (a forward pass of about a millisecond: shows the per-call cost of the wrapper)"
        )
        return model, inputs, desc
    if kind == "vilt":
        config = transformers.ViltConfig(num_labels=3129)
        config = _reduced(kind, config) if quick else config
        cls = transformers.ViltForQuestionAnswering
        size, n_img, n_txt = config.image_size, 2, 2
    else:
        config = _reduced(kind, transformers.CLIPConfig()) if quick else transformers.CLIPConfig()
        cls = transformers.CLIPModel
        size, n_img, n_txt = config.vision_config.image_size, 2, 4
    with torch.random.fork_rng():  # HF init draws from the global RNG: keep it local
        torch.manual_seed(seed)
        model = cls(config).eval()
    vocab = config.vocab_size if kind == "vilt" else config.text_config.vocab_size
    length = 16
    inputs = {
        "pixel_values": torch.rand(n_img, 3, size, size, generator=gen),
        "input_ids": torch.randint(1, vocab, (n_txt, length), generator=gen),
        "attention_mask": torch.ones(n_txt, length, dtype=torch.long),
    }
    params = sum(p.numel() for p in model.parameters())
    desc = (
        f"{'reduced ' if quick else ''}{cls.__name__}, {params / 1e6:.1f}M parameters, "
        f"{size}x{size} images, batch of {n_img} image(s) and {n_txt} question(s)/text(s) "
        f"of {length} tokens"
    )
    return model, inputs, desc


def wrapper_configs(kind: str, model: torch.nn.Module, seed: int = 0) -> dict[str, list]:
    """The intervention configs of every wrapper measured on ``model``."""
    if kind == "tiny":
        target, dim = "fused", model.classifier.in_features
        cfvqa = causalvl.CFVQAConfig(hidden_sizes=(64,))
    elif kind == "vilt":
        target, dim = "fused", model.config.hidden_size
        cfvqa = causalvl.CFVQAConfig()
    else:
        target, dim = "vision_features", model.config.projection_dim
        cfvqa = causalvl.CFVQAConfig(graph="simple")
    gen = torch.Generator().manual_seed(seed)

    def backdoor(k: int) -> causalvl.BackdoorConfig:
        d = causalvl.ConfounderDictionary.from_tensors(torch.randn(k, dim, generator=gen))
        return causalvl.BackdoorConfig(target=target, dictionary=d)

    return {
        "identity": [causalvl.IdentityConfig()],
        "CF-VQA (branch heads)": [cfvqa],
        "prior subtraction, no cache": [causalvl.PriorSubtractionConfig()],
        "prior subtraction, cached questions": [causalvl.PriorSubtractionConfig(cache=True)],
        "backdoor K=100": [backdoor(100)],
        "backdoor K=1000": [backdoor(1000)],
    }


def bench_model(kind: str, *, quick: bool, rounds: int, seed: int = 0) -> dict[str, Any]:
    model, inputs, desc = build_model(kind, quick=quick, seed=seed)
    configs = wrapper_configs(kind, model, seed)
    wrapped = {}
    for name, cfg in configs.items():
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            wrapped[name] = causalvl.intervene(model, cfg).eval()

    inner = 50 if kind == "tiny" else 1  # calls per timed sample (sub-millisecond calls)

    def call(fn: Any) -> Any:
        def run() -> None:
            with torch.no_grad():
                for _ in range(inner):
                    fn(**inputs)

        return run

    fns = {"bare": call(model), **{n: call(vl) for n, vl in wrapped.items()}}
    times = interleaved_medians(fns, rounds=rounds, warmup=2, seed=seed)
    times = {n: {k: v / inner if k != "n" else v for k, v in t.items()} for n, t in times.items()}
    bare = times["bare"]["median"]
    return {
        "model": kind,
        "description": desc,
        "bare_ms": 1000 * bare,
        "bare_min_ms": 1000 * times["bare"]["min"],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wrappers": {
            n: {
                "ms": 1000 * times[n]["median"],
                "extra_params": sum(p.numel() for p in wrapped[n].intervention_parameters()),
                "ratio": times[n]["median"] / bare,
                "min_ms": 1000 * times[n]["min"],
                "max_ms": 1000 * times[n]["max"],
            }
            for n in configs
        },
        "rounds": rounds,
    }


def run(*, quick: bool = False, rounds: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure every wrapper on both models; returns the JSON-ready results."""
    # ViLT-B at 384x384 takes about half a second per call on 2 cores: fewer, longer rounds
    per_model = {
        k: rounds or (3 if quick else n) for k, n in (("vilt", 9), ("clip", 21), ("tiny", 21))
    }
    return {
        "benchmark": "overhead",
        "quick": quick,
        "sizes": "reduced configs (2 layers, width 64, 64x64 images)"
        if quick
        else "real sizes: ViltConfig() (ViLT-B/32) and CLIPConfig() (CLIP ViT-B/32)",
        "rows": [bench_model(k, quick=quick, rounds=n, seed=seed) for k, n in per_model.items()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="reduced model configs")
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
