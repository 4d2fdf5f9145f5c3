"""Runs described by JSON: what ``causalvl train``, ``report`` and ``audit`` do.

A run config is one JSON object::

    {
      "name": "cfvqa-digits",                        # optional; default: the file name
      "seed": 0,
      "data": {"type": "PriorShiftVQA",               # or "ContextShift"
               "settings": {"prior_strength": 0.8},   # the dataset's config fields
               "source": {"type": "digits"},          # or {"type": "cifar10", "root": "..."}
               "train_split": "train",                # default "train"
               "eval_splits": {"id": "test_id", "ood": "test"}},
      "model": {"type": "TinyVQA", "hidden": 64},      # or TinyRegionClassifier, or
                                                       # {"type": "pretrained", "class":
                                                       #  "ViltForQuestionAnswering", "path": "dir"}
      "interventions": [{"type": "cfvqa", "hidden": [64]}],
      "trainer": {"epochs": 10, "lr": 0.003},          # causalvl.TrainConfig fields
      "output_dir": "runs/cfvqa-digits"
    }

``causalvl train`` writes, in the output folder: the trainer's checkpoints, ``run.json`` and
``metrics.jsonl``, the intervention weights (``interventions/``), the resolved config
(``config.json``) and ``diagnostics.json`` (read back by ``causalvl report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import atomic_write_text
from .errors import ConfigError

log = logging.getLogger("causalvl.runs")

RUN_KEYS = {"name", "seed", "data", "model", "interventions", "trainer", "output_dir"}
DATASETS = ("PriorShiftVQA", "ContextShift")
MODELS = ("TinyVQA", "TinyRegionClassifier", "pretrained")


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ConfigError(
            f"{where} needs a {key!r} entry; see docs/cli.md for the run config schema."
        )
    return mapping[key]


def load_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a run config (unknown top-level keys are an error: typos would be silent)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run config {str(path)!r} does not exist.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run config {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(
            f"run config {str(path)!r} must hold a JSON object, got {type(config).__name__}."
        )
    unknown = sorted(set(config) - RUN_KEYS)
    if unknown:
        raise ConfigError(
            f"run config {str(path)!r} has unknown keys {unknown}; allowed: {sorted(RUN_KEYS)}."
        )
    for key in ("data", "model", "interventions"):
        _require(config, key, f"run config {str(path)!r}")
    config.setdefault("name", path.stem)
    return config


def _source(spec: Mapping[str, Any] | None) -> Any:
    from . import datasets

    if spec is None:
        return None
    kind = _require(spec, "type", "data.source")
    if kind == "digits":
        return datasets.digits()
    if kind == "cifar10":
        return datasets.cifar10(
            _require(spec, "root", "data.source"), split=spec.get("split", "train")
        )
    raise ConfigError(f"data.source.type = {kind!r} is unknown; choose 'digits' or 'cifar10'.")


def build_data(spec: Mapping[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
    """The training dataset and the named evaluation splits of a run config's ``data``."""
    from . import datasets

    kind = _require(spec, "type", "data")
    if kind not in DATASETS:
        raise ConfigError(f"data.type = {kind!r} is unknown; choose one of {list(DATASETS)}.")
    cls = getattr(datasets, kind)
    settings = dict(spec.get("settings", {}))
    settings.setdefault("seed", seed)
    source = _source(spec.get("source"))
    train = cls(source, split=spec.get("train_split", "train"), **settings)
    defaults = {"id": "test_id", "ood": "test"} if kind == "PriorShiftVQA" else {"ood": "test"}
    shared = {"tokenizer": train.tokenizer} if hasattr(train, "tokenizer") else {}
    evals = {
        name: cls(source, split=split, **settings, **shared)
        for name, split in dict(spec.get("eval_splits", defaults)).items()
    }
    return train, evals


def build_model(spec: Mapping[str, Any], train: Any, seed: int) -> Any:
    """The base model of a run config's ``model`` entry, sized from the training data."""
    import torch

    import causalvl

    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in MODELS:
        raise ConfigError(f"model.type = {kind!r} is unknown; choose one of {list(MODELS)}.")
    if kind == "pretrained":
        import transformers

        class_name = _require(spec, "class", "model")
        cls = getattr(transformers, class_name, None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise ConfigError(f"model.class = {class_name!r} is not a transformers model class.")
        return cls.from_pretrained(_require(spec, "path", "model"), local_files_only=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "TinyVQA":
            spec.setdefault("vocab_size", len(train.tokenizer))
            spec.setdefault("num_answers", train.num_answers)
            spec.setdefault("image_size", train.config.image_size)
            return causalvl.TinyVQA(**spec)
        spec.setdefault("num_classes", len(train.class_names))
        return causalvl.TinyRegionClassifier(**spec)


def train_from_config(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train the run described by the JSON file at ``path``; returns the output folder."""
    import causalvl
    from causalvl.config import InterventionConfig

    config = load_run_config(path)
    seed = int(config.get("seed", 0))
    out_dir = Path(out or config.get("output_dir") or Path("runs") / config["name"])
    interventions = config["interventions"]
    if not isinstance(interventions, list) or not interventions:
        raise ConfigError(
            "run config 'interventions' must be a non-empty list of intervention configs."
        )
    configs = [InterventionConfig.from_dict(c) for c in interventions]
    trainer_cfg = causalvl.TrainConfig.from_dict(
        {
            "seed": seed,
            "progress": progress,
            **config.get("trainer", {}),
            "output_dir": str(out_dir),
        }
    )
    train, evals = build_data(config["data"], seed)
    base = build_model(config["model"], train, seed)
    vl = causalvl.intervene(base, configs, seed=seed)
    prior = getattr(train, "train_prior", None)
    if callable(prior) and any(c.type in ("lmh", "gge", "bias_product") for c in configs):
        from .interventions.ensembles import set_bias_prior

        set_bias_prior(vl, prior())
    causalvl.Trainer(vl, train, eval_data=evals, config=trainer_cfg).fit(resume=resume)
    vl.save_pretrained(out_dir / "interventions")
    diagnostics = causalvl.diagnose(vl, evals, progress=progress, seed=seed)
    diagnostics.to_json(out_dir / "diagnostics.json")
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    log.info("run %s written to %s", config["name"], out_dir)
    return out_dir


def report_runs(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    title: str = "causalvl bias report",
    deterministic: bool = False,
) -> Path:
    """One bias report comparing the ``diagnostics.json`` of several run folders."""
    import causalvl

    diagnostics: dict[str, Any] = {}
    for run in runs:
        run = Path(run)
        file = run / "diagnostics.json"
        if not file.is_file():
            raise ConfigError(
                f"{str(run)!r} has no diagnostics.json; pass folders written by 'causalvl train'."
            )
        name = run.name
        cfg = run / "config.json"
        if cfg.is_file():
            name = json.loads(cfg.read_text(encoding="utf-8")).get("name", name)
        if name in diagnostics:
            name = f"{name} ({run})"
        diagnostics[name] = causalvl.Diagnostics.from_json(file)
    report = causalvl.BiasReport(diagnostics, title=title, deterministic=deterministic)
    return Path(report.save(out)["html"])


def audit_command(args: argparse.Namespace) -> str:
    """Run the blind-solvability audit the ``audit`` subcommand describes; returns the text.

    Writes ``--json`` / ``--html`` when given.
    """
    import causalvl

    from .diagnostics.audit.files import load_benchmark
    from .reports.audit import audit_page_html, audit_text

    scorers = None
    if args.scorers:
        scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    test: Any = None
    if args.data == "prior-shift":
        if args.paths or args.test:
            raise ConfigError(
                "--data prior-shift is the built-in benchmark and takes no PATH; name the "
                "benchmark of your files with --data (sugarcrepe, valse, aro, winoground, nlvr, "
                "nlvr2, vqacp)."
            )
        from .datasets import PriorShiftVQA

        settings = {"num_examples": args.limit} if args.limit else {}
        data: Any = PriorShiftVQA(split=args.split, seed=args.seed, **settings)
        benchmark = None
    else:
        paths = list(args.paths)
        if args.data == "vqacp" and not paths:
            if args.questions is None or args.annotations is None:
                raise ConfigError(
                    "--data vqacp needs a folder PATH (with vqacp_v2_<split>_questions.json and "
                    "_annotations.json), the two files as PATHs, or --questions and --annotations."
                )
            paths = [args.questions, args.annotations]
        if not paths:
            raise ConfigError(
                f"--data {args.data} needs at least one PATH (a file or a folder of the "
                "benchmark's official layout)."
            )
        data = load_benchmark(args.data, paths, split=args.split)
        data = data[: args.limit] if args.limit else data
        if args.test:
            test = load_benchmark(args.data, args.test, split="test")
        benchmark = args.data
    audit = causalvl.audit_blind_solvability(
        data,
        test=test,
        mode=args.mode,
        benchmark=benchmark,
        scorers=scorers,
        folds=args.folds,
        seed=args.seed,
    )
    text = audit_text(audit)
    if args.json:
        atomic_write_text(args.json, json.dumps(audit.to_dict(), indent=2, sort_keys=False) + "\n")
        text += f"\nwrote {args.json}"
    if args.html:
        atomic_write_text(args.html, audit_page_html(audit))
        text += f"\nwrote {args.html}"
    return text
