"""Per-token cost of counterfactual (contrastive) decoding over plain ``generate``.

For each tiny generative VLM family and each integration pattern, the script times greedy
decoding of ``--new-tokens`` tokens (prefill included) and reports the median over
``--repeats`` runs in one process, after one warm-up run:

* ``plain``: ``model.generate`` with no contrast (the baseline);
* ``processor``: plain ``model.generate`` with a :class:`causalvl.CounterfactualLogitsProcessor`
  (a second branch with its own cache: two forwards per step);
* ``wrapped_processor``: ``causalvl.intervene(model, CounterfactualDecodingConfig(
  strategy="processor")).generate(...)``;
* ``wrapped_batched``: the same with ``strategy="batched"`` (one forward over the
  ``[factual; counterfactual]`` rows per step).

Usage::

    python benchmarks/bench_decoding.py results/decoding.json            # full run
    python benchmarks/bench_decoding.py results/decoding.json --quick    # CI smoke run

The markdown table goes to stdout; the JSON file holds the same numbers and the environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import causalvl
from causalvl.decoding.tiny import TINY_FAMILIES, tiny_generative_model

PATTERNS = ("plain", "processor", "wrapped_processor", "wrapped_batched")


def _time(fn: Any, repeats: int, sync: Any) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_family(family: str, *, new_tokens: int, repeats: int, device: str) -> dict[str, Any]:
    model, inputs = tiny_generative_model(family, seed=0)
    model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gen = {"max_new_tokens": new_tokens, "do_sample": False}

    def plain() -> Any:
        return model.generate(**inputs, **gen)

    def processor() -> Any:
        proc = causalvl.CounterfactualLogitsProcessor.from_inputs(
            model, inputs, alpha=1.0, beta=0.1
        )
        return model.generate(**inputs, **gen, logits_processor=[proc])

    wrapped = {
        s: causalvl.intervene(model, causalvl.CounterfactualDecodingConfig(strategy=s))
        for s in ("processor", "batched")
    }
    fns = {
        "plain": plain,
        "processor": processor,
        "wrapped_processor": lambda: wrapped["processor"].generate(**inputs, **gen),
        "wrapped_batched": lambda: wrapped["batched"].generate(**inputs, **gen),
    }
    ms = {name: 1000 * _time(fn, repeats, sync) / new_tokens for name, fn in fns.items()}
    params = sum(p.numel() for p in model.parameters())
    return {
        "family": family,
        "params": params,
        "ms_per_token": ms,
        "ratio_to_plain": {k: v / ms["plain"] for k, v in ms.items()},
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = "| family (params) | " + " | ".join(f"{p} ms/token" for p in PATTERNS) + " |"
    lines = [
        f"Counterfactual decoding overhead ({meta['device']}, {meta['threads']} thread(s), "
        f"{meta['new_tokens']} new tokens incl. prefill, median of {meta['repeats']}; "
        "ratio to plain in parentheses)",
        "",
        head,
        "|" + "---|" * (len(PATTERNS) + 1),
    ]
    for r in rows:
        cells = [f"{r['ms_per_token'][p]:.2f} ({r['ratio_to_plain'][p]:.2f}x)" for p in PATTERNS]
        lines.append(f"| {r['family']} ({r['params'] / 1e3:.0f}k) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="2 families, few tokens (CI)")
    parser.add_argument("--families", nargs="*", default=None, choices=TINY_FAMILIES)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="e.g. cpu or cuda")
    args = parser.parse_args(argv)

    families = args.families or (["llava", "qwen2_vl"] if args.quick else list(TINY_FAMILIES))
    new_tokens = args.new_tokens or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 7)
    torch.set_num_threads(args.threads)
    meta = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": args.threads,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "quick": args.quick,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "causalvl": causalvl.__version__,
        "python": sys.version.split()[0],
    }
    rows = [
        bench_family(f, new_tokens=new_tokens, repeats=repeats, device=args.device)
        for f in families
    ]
    table = markdown(rows, meta)
    print(table)
    result = {
        "benchmark": "decoding",
        "description": "Per-token time of counterfactual (contrastive) decoding patterns vs plain "
        "generate on tiny random-init generative VLMs (alpha=1, beta=0.1, noise t=500, greedy).",
        "meta": meta,
        "rows": rows,
        "markdown": table,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
