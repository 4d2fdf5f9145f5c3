"""The ``causalvl`` command line: ``demo``, ``train``, ``report``, ``audit``.

Every command prints ``--help``; bad arguments and library errors exit non-zero with a one-line
reason on standard error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .errors import CausalVLError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``causalvl: error: ...``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="causalvl",
        description="Causal interventions that remove spurious correlations from vision-language "
        "models, and the measurements that show it.",
    )
    parser.add_argument("--version", action="version", version=f"causalvl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="train plain and debiased models on real digits with a shifted answer prior; "
        "print the comparison and write the bias report",
        description="Runs the whole pipeline on data that ships with scikit-learn: a VQA-CP-style "
        "prior-shift benchmark over handwritten digits (plain, RUBi, LMH, GGE, CF-VQA, null-image "
        "prior subtraction, oracle) and a context-shift benchmark (plain vs backdoor adjustment). "
        "Writes index.html, report.json and summary.md.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("causalvl-demo"),
        help="output folder (default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=_nonneg_int, default=0, help="random seed (default: %(default)s)"
    )
    demo.add_argument("--fast", action="store_true", help="a much smaller run (for smoke tests)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _threads_argument(demo)

    train = sub.add_parser(
        "train",
        help="train a model with interventions from a JSON config",
        description="Train from a JSON file with the keys 'model', 'data', 'interventions', "
        "'trainer' (and optionally 'output_dir'); see docs/cli.md for the schema. Writes "
        "checkpoints, run.json and diagnostics.json to the output folder.",
    )
    train.add_argument("config", type=Path, help="path to CONFIG.json")
    train.add_argument(
        "--out", type=Path, default=None, help="output folder (overrides the config)"
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in the output folder (default: refuse to write over it)",
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _threads_argument(train)

    report = sub.add_parser(
        "report",
        help="one bias report comparing saved runs",
        description="Reads diagnostics.json from each RUN_DIR (written by 'causalvl train') and "
        "writes one report comparing them. A single folder with a saved report.json (such as "
        "the output of 'causalvl demo') is re-rendered instead.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    report.add_argument(
        "--out",
        type=Path,
        default=Path("causalvl-report"),
        help="output folder (default: %(default)s)",
    )
    report.add_argument(
        "--title",
        default=None,
        help="report title (default: 'causalvl bias report', or the saved report's own)",
    )
    report.add_argument("--deterministic", action="store_true", help="leave out timestamps")

    audit = sub.add_parser(
        "audit",
        help="how much of a benchmark a blind, text-only model solves, and which cues it uses",
        description="Scores blind text-only models on a benchmark's texts: caption-vs-negative "
        "benchmarks pairwise (each pair in a random order, chance 0.5), single-text benchmarks "
        "by answer; folds grouped by image so no image or repeated text spans train and test; "
        "scorers tfidf, embedding (optional extra), length, format, bigram_lm. Prints the "
        "result, names the cues, and writes JSON / HTML on request. PATH is a file or a folder "
        "of the benchmark's official layout (e.g. SugarCrepe's data/ with one file per "
        "category).",
    )
    audit.add_argument(
        "--data",
        choices=(
            "prior-shift",
            "sugarcrepe",
            "valse",
            "aro",
            "winoground",
            "nlvr",
            "nlvr2",
            "vqacp",
        ),
        default="prior-shift",
        help="the benchmark (default: %(default)s, the built-in digits prior-shift benchmark)",
    )
    audit.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="benchmark file(s) or folder(s)"
    )
    audit.add_argument(
        "--test",
        nargs="+",
        type=Path,
        metavar="PATH",
        default=None,
        help="fit on PATH..., score these files (train-to-test mode) instead of cross-validating",
    )
    audit.add_argument("--json", type=Path, metavar="OUT.json", help="write the audit as JSON")
    audit.add_argument("--html", type=Path, metavar="OUT.html", help="write the audit as HTML")
    audit.add_argument(
        "--mode",
        choices=("auto", "pairwise", "single"),
        default="auto",
        help="pairwise (caption vs negative) or single-text; default: by benchmark",
    )
    audit.add_argument(
        "--scorers",
        default=None,
        help="comma-separated subset of tfidf,embedding,length,format,bigram_lm (default: all "
        "that apply and are installed)",
    )
    audit.add_argument("--questions", type=Path, help="VQA-CP questions JSON (with --data vqacp)")
    audit.add_argument(
        "--annotations", type=Path, help="VQA-CP annotations JSON (with --data vqacp)"
    )
    audit.add_argument(
        "--split",
        default="train",
        help="prior-shift split, or VQA-CP split read from a folder (default: %(default)s)",
    )
    audit.add_argument(
        "--folds", type=_pos_int, default=5, help="cross-validation folds (default: %(default)s)"
    )
    audit.add_argument("--seed", type=_nonneg_int, default=0)
    audit.add_argument(
        "--limit", type=_pos_int, default=None, help="audit at most this many records"
    )
    audit.add_argument("--no-progress", action="store_true", help="hide progress messages")
    _threads_argument(audit)
    for command in (demo, train, report, audit):  # -v works after the command name too
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log progress details",
        )
    return parser


#: Torch CPU threads of every command unless --threads says otherwise. causalvl's own models
#: are small: on them one thread is fastest, and on a busy machine every-core runs take several
#: times as long. Raise it for large (e.g. pretrained Hugging Face) models.
DEFAULT_THREADS = 1


def _threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_nonneg_int,
        default=DEFAULT_THREADS,
        help="torch CPU threads (default: %(default)s, fastest for small models and fair on a "
        "shared machine; raise it for large pretrained models; 0: torch's own default, every "
        "core)",
    )


def _pos_int(text: str) -> int:
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "threads", 0):
            import torch

            torch.set_num_threads(args.threads)
        if args.command == "demo":
            from .demo import run_demo

            result = run_demo(
                args.out,
                seed=args.seed,
                fast=args.fast,
                progress=not args.no_progress,
                announce=(lambda line: print(line, flush=True)) if args.no_progress else None,
            )
            print(result.table())
            print(f"\nbias report: {result.report_files['html']}  ({result.seconds:.0f} s)")
        elif args.command == "train":
            from .runs import train_from_config

            run = train_from_config(
                args.config,
                out=args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
            print(run.summary())
        elif args.command == "report":
            from .runs import report_runs

            path = report_runs(
                args.runs, args.out, title=args.title, deterministic=args.deterministic
            )
            print(f"wrote {path}")
        elif args.command == "audit":
            from .runs import audit_command

            started = time.perf_counter()
            if not args.no_progress:  # the audit has no finer progress to show yet
                print(
                    f"causalvl audit: reading the {args.data} questions and fitting "
                    f"{args.folds} cross-validation folds ...",
                    file=sys.stderr,
                    flush=True,
                )
            text = audit_command(args)
            if not args.no_progress:
                print(
                    f"causalvl audit: done in {time.perf_counter() - started:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            print(text)
    except CausalVLError as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"causalvl {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"causalvl {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
