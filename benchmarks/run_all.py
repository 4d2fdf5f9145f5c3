"""Run every benchmark once and write docs/benchmarks.md (and the raw numbers as JSON beside it).

    python benchmarks/run_all.py                      # full run (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick --out /tmp/b.md   # smoke sizes (CI; about a minute)

Sections: efficacy (context shift, compositional curriculum), wrapper overhead, Trainer
throughput, diagnostics + report time, counterfactual decoding. The language-prior efficacy has
its own protocol and page (``benchmarks/bench_priors.py`` -> ``docs/efficacy.md``). Every number in the Markdown comes from this one run; the file names the command that
generated it and is not edited by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_catt  # noqa: E402
import bench_decoding  # noqa: E402
import bench_diagnostics  # noqa: E402
import bench_efficacy  # noqa: E402
import bench_overhead  # noqa: E402
import bench_trainer  # noqa: E402
from _common import fmt, machine, pm, table  # noqa: E402

log = logging.getLogger("benchmarks")

SECTIONS = (
    "Machine and versions",
    "Targets",
    "Efficacy: language prior",
    "Efficacy: object context",
    "Efficacy: causal attention (CATT) on object context",
    "Efficacy: compositional curriculum",
    "Wrapper overhead",
    "Trainer throughput",
    "Diagnostics and report time",
    "Counterfactual decoding",
)

#: project goals
OVERHEAD_TARGETS = {"identity": 1.02, "CF-VQA (branch heads)": 1.10, "backdoor K=1000": 1.05}
TRAINER_TARGET = 0.97


# -- sections ---------------------------------------------------------------------------------
def _context_section(res: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in res["methods"].items():
        gap = (
            pm(r["gap_closed"])
            if "gap_closed" in r
            else "0.000 ± 0.000"
            if name == "plain"
            else "1.000 ± 0.000"
        )
        rows.append([name, pm(r["id"]), pm(r["ood"]), gap, fmt(r["train_seconds"]["mean"], 1)])
    return [
        "## Efficacy: object context",
        "",
        f"`ContextShift` over digits ({settings['context_train']} training composites, "
        f"{settings['context_test']} per test split, {settings['context_image_size']}px regions): "
        "the context digit's class co-occurs with the target's 90% of the time in training and "
        "is uniform in the OOD split. TinyRegionClassifier trained plain for "
        f"{settings['context_epochs']} + {settings['context_extra_epochs']} epochs; the backdoor "
        "model continues from the plain model's first epochs with the context region replaced "
        "by its NWGM expectation over the class-mean confounder dictionary; the oracle trains on "
        "uniform contexts (`causalvl.demo.context_benchmark`).",
        "",
        table(["method", "ID accuracy", "OOD accuracy", "gap closed", "train s"], rows),
        "",
    ]


def _curriculum_section(res: dict[str, Any]) -> list[str]:
    rows = [
        [name, pm(a["group"]), pm(a["text"]), pm(a["image"]), fmt(a["seconds"]["mean"], 1)]
        for name, a in res["arms"].items()
    ]
    return [
        "## Efficacy: compositional curriculum",
        "",
        f'`CompositionalPairs` (two digits side by side, "a 3 left of a 7"), {res["groups"]} '
        f"training groups seen in one word order only, {res['epochs']} epochs of "
        "TinyContrastive; 300 balanced Winoground test groups (`examples/"
        "curriculum_compositional.py`). Scores are fractions; ties count as failures; chance "
        "group score is 1/6.",
        "",
        table(["negatives", "group score", "text score", "image score", "train s"], rows),
        "",
    ]


def _overhead_section(res: dict[str, Any]) -> list[str]:
    out = [
        "## Wrapper overhead",
        "",
        f"Sizes: {res['sizes']}. Eval mode, `torch.no_grad()`, 2 warm-up calls each, then "
        f"{', '.join(str(r['rounds']) for r in res['rows'])} rounds (per model, in the order "
        "below) calling the bare model and every wrapper once in a "
        "shuffled order; ratio = median wrapped time / median bare time. CF-VQA adds branch "
        "heads on captured features (no extra pass); prior subtraction runs a second, "
        "zero-image pass unless the question cache answers it; backdoor targets ViLT's pooled "
        "fused feature and CLIP's projected image feature. The TinyVQA rows time 50 calls per "
        "sample and show the wrapper's fixed cost per call, which real-size models hide. The "
        "ratio of the fastest calls is less sensitive to other jobs on the machine than the "
        "ratio of medians (the targets use the medians).",
        "",
    ]
    for row in res["rows"]:
        rows = [["bare model", fmt(row["bare_ms"], 2), "1.000", "1.000", "0"]]
        rows += [
            [
                n,
                fmt(w["ms"], 2),
                fmt(w["ratio"]),
                fmt(w["min_ms"] / row["bare_min_ms"]),
                str(w["extra_params"]),
            ]
            for n, w in row["wrappers"].items()
        ]
        header = [
            "wrapper",
            "median ms",
            "ratio",
            "ratio of fastest calls",
            "intervention parameters",
        ]
        load = ", ".join(map(str, row["load_average_after"]))
        out += [
            f"**{row['description']}** (load average after these rounds: {load})",
            "",
            table(header, rows),
            "",
        ]
    return out


def _trainer_section(res: dict[str, Any]) -> list[str]:
    rows = [
        ["hand-written loop", fmt(res["examples_per_s"]["hand"], 1), fmt(res["seconds"]["hand"], 2)],
        ["causalvl.Trainer", fmt(res["examples_per_s"]["trainer"], 1), fmt(res["seconds"]["trainer"], 2)],
    ]  # fmt: skip
    return [
        "## Trainer throughput",
        "",
        f"{res['setup']}; no evaluation, no checkpoints, progress bars off.",
        "",
        table(["loop", "examples/s", "median s"], rows),
        "",
        f"Trainer / hand loop: {fmt(res['ratio'])}x.",
        "",
    ]


def _diagnostics_section(res: dict[str, Any]) -> list[str]:
    rows = [[k, fmt(v, 2)] for k, v in res["seconds"].items()]
    return [
        "## Diagnostics and report time",
        "",
        f"`causalvl.diagnose` (every default diagnostic) on {res['examples']:,} PriorShiftVQA "
        "`test` questions with a TinyVQA trained for one epoch, then `BiasReport.save` "
        f"(HTML, JSON, figures): {fmt(res['examples_per_s'], 0)} examples/s.",
        "",
        table(["step", "seconds"], rows),
        "",
    ]


def _decoding_section(res: dict[str, Any]) -> list[str]:
    meta = res["meta"]
    patterns = bench_decoding.PATTERNS
    rows = []
    for r in res["rows"]:
        rows.append(
            [f"{r['family']} ({r['params'] / 1e3:.0f}k params)"]
            + [
                f"{fmt(r['ms_per_token'][p], 2)} ({fmt(r['ratio_to_plain'][p], 2)}x)"
                for p in patterns
            ]
        )
    return [
        "## Counterfactual decoding",
        "",
        f"From `benchmarks/bench_decoding.py`: {res['description']} {meta['threads']} thread(s), "
        f"{meta['new_tokens']} new tokens including prefill, median of {meta['repeats']}; "
        "ms per token (ratio to plain generate).",
        "",
        table(["family", *(f"{p} ms/token" for p in patterns)], rows),
        "",
    ]


def _targets(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in results["overhead"]["rows"]:
        if row["model"] not in ("vilt", "clip"):  # the targets are for real model sizes
            continue
        for name, limit in OVERHEAD_TARGETS.items():
            ratio = row["wrappers"][name]["ratio"]
            rows.append(
                [
                    f"{name} overhead ≤ {limit:.2f}x ({row['model']})",
                    f"{fmt(ratio)}x",
                    "✓" if ratio <= limit else "✗",
                ]
            )
    ratio = results["trainer"]["ratio"]
    rows.append(
        [
            f"Trainer ≥ {TRAINER_TARGET:.2f}x the hand loop's examples/s",
            f"{fmt(ratio)}x",
            "✓" if ratio >= TRAINER_TARGET else "✗",
        ]
    )
    return rows


def _notes(results: dict[str, Any]) -> list[str]:
    """What the Targets table means for each miss, worded from this run's numbers."""
    notes = []
    for row in results["overhead"]["rows"]:
        if row["model"] not in ("vilt", "clip"):
            continue
        for name, limit in OVERHEAD_TARGETS.items():
            w = row["wrappers"][name]
            if w["ratio"] > limit:
                extra_ms = w["ms"] - row["bare_ms"]
                text = (
                    f"**{name} on {row['model']}: missed** ({fmt(w['ratio'])}x, "
                    f"+{fmt(extra_ms, 1)} ms per call over {fmt(row['bare_ms'], 1)} ms; "
                    f"ratio of the fastest calls {fmt(w['min_ms'] / row['bare_min_ms'])}x)."
                )
                if name.startswith("CF-VQA"):
                    text += (
                        f" The wrapper adds {w['extra_params'] / 1e6:.1f}M head parameters "
                        "(branch MLPs and an answers x answers output head per branch), read "
                        "from memory once per call: at a batch of 2 their cost is set by that "
                        "read, not by the batch, so it weighs most on small models and batches."
                    )
                notes.append(text)
    if results["trainer"]["ratio"] < TRAINER_TARGET:
        notes.append(
            f"**Trainer: missed** ({fmt(results['trainer']['ratio'])}x). Per step the Trainer "
            "also checks that the loss is finite (one device sync), sets the learning rate of "
            "each parameter group and accumulates the logged loss parts."
        )
    if not notes:
        return []
    return ["Notes on the misses:", "", *(f"- {n}" for n in notes), ""]


def markdown(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    eff = results["efficacy"]
    settings = eff["settings"]
    v = m["versions"]
    quick = results["quick"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {results['date']} in {fmt(results['seconds'] / 60, 1)} "
        "minutes. Do not edit by hand: every number comes from this one run (raw numbers in "
        f"`{results['json_name']}`).",
        "",
    ]
    if quick:
        lines += [
            "**Quick mode**: smoke sizes (tiny training sets, one epoch, reduced model configs). "
            "The numbers check that the pipeline runs; they say nothing about the methods.",
            "",
        ]
    lines += [
        "## Machine and versions",
        "",
        table(
            ["item", "value"],
            [
                ["CPU", m["cpu"]],
                ["cores", str(m["cores"])],
                ["torch threads", str(m["torch_threads"])],
                [
                    "load average at start (1, 5, 15 min)",
                    ", ".join(map(str, m["load_average_at_start"])),
                ],
                ["platform", m["platform"]],
                *[[k, val] for k, val in v.items()],
                ["efficacy seeds", ", ".join(map(str, eff["seeds"]))],
                ["timing seeds", "0 (model init, inputs, call order)"],
            ],
        ),  # fmt: skip
        "",
        "## Targets",
        "",
        "The project's goals, and where each stands in this run.",
        "",
        table(["goal", "measured", "met"], _targets(results)),
        "",
        *_notes(results),
    ]
    lines += [
        "## Efficacy: language prior",
        "",
        "Measured under its own protocol (uniform held-out OOD split, blind rules, image probe, "
        "plain and oracle beside every method, five seeds) on its own page: "
        "[efficacy.md](efficacy.md), with the commands that produce it.",
        "",
    ]
    lines += _context_section(eff["context"], settings)
    lines += [bench_catt.render_markdown(results["catt"]), ""]
    lines += _curriculum_section(eff["curriculum"])
    lines += _overhead_section(results["overhead"])
    lines += _trainer_section(results["trainer"])
    lines += _diagnostics_section(results["diagnostics"])
    lines += _decoding_section(results["decoding"])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (CI)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 2; 1 with --quick, which stays fast on a busy "
        "machine where a second thread would wait for a core)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    torch.set_num_threads(args.threads)
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    if args.out != HERE.parent / "docs" / "benchmarks.md":
        command += f" --out {args.out}"
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine(),
    }
    # timing-sensitive parts first, training-heavy efficacy last
    log.info("overhead")
    results["overhead"] = bench_overhead.run(quick=args.quick)
    log.info("trainer throughput")
    results["trainer"] = bench_trainer.run(quick=args.quick)
    log.info("diagnostics")
    results["diagnostics"] = bench_diagnostics.run(quick=args.quick)
    log.info("decoding")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decoding.json"
        flags = ["--quick"] if args.quick else []
        bench_decoding.main([str(path), *flags, "--threads", str(args.threads)])
        results["decoding"] = json.loads(path.read_text(encoding="utf-8"))
    torch.set_num_threads(args.threads)
    log.info("efficacy")
    results["efficacy"] = bench_efficacy.run(quick=args.quick)
    log.info("causal attention (CATT)")
    results["catt"] = bench_catt.run(results["efficacy"]["seeds"], quick=args.quick)
    results["seconds"] = time.perf_counter() - start
    json_path = args.out.with_suffix(".json")
    results["json_name"] = json_path.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    args.out.write_text(markdown(results, command), encoding="utf-8")
    log.info("wrote %s and %s in %.0f s", args.out, json_path, results["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
