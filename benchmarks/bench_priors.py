"""Language-prior efficacy under the honest protocol (causalvl.efficacy): every shipped method
against the blind rules, an image-only probe, plain and the oracle, over seeds.

    python benchmarks/bench_priors.py docs/priors.json --seeds 0 1 2 3 4 --threads 1
    python benchmarks/bench_priors.py docs/priors.json --render docs/priors.md

Per-seed rows are merged into the JSON file after every seed, so runs on several processes
(different --seeds, same file) and interrupted runs keep what they measured.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine  # noqa: E402

from causalvl import efficacy  # noqa: E402


def _merge(path: Path, key: str, seed: int, rows: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        entry = data.setdefault(key, {"meta": meta, "seeds": {}})
        entry["meta"] = meta
        entry["seeds"].setdefault(str(seed), {}).update(rows)  # a method subset updates its rows
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)


def render(path: Path) -> str:
    data = json.loads(path.read_text())
    out = []
    for key, entry in data.items():
        seeds = sorted(entry["seeds"], key=int)
        per_seed = [entry["seeds"][s] for s in seeds]
        summary = efficacy.summarise(per_seed)
        out.append(f"### {key}\n")
        out.append(
            f"Seeds {', '.join(seeds)}; settings: `{json.dumps(entry['meta']['settings'])}`.\n"
        )
        out.append(efficacy.table(summary))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="JSON file the per-seed rows are merged into")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="plumbing check (1 epoch)")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of the methods")
    parser.add_argument("--render", type=Path, default=None, help="write the Markdown tables")
    args = parser.parse_args(argv)
    if args.render is not None:
        args.render.write_text(render(args.output))
        return 0
    torch.set_num_threads(args.threads)
    settings = efficacy.EfficacySettings.smoke() if args.smoke else efficacy.EfficacySettings.full()
    methods = efficacy.default_methods(settings)
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods}
    key = "digits, from scratch (TinyVQA)"
    meta = {"settings": settings.__dict__, "machine": machine(), "command": " ".join(sys.argv)}
    for seed in args.seeds:
        start = time.perf_counter()
        rows = efficacy.run_seed(settings, seed, methods)
        _merge(args.output, key, seed, rows, meta)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
