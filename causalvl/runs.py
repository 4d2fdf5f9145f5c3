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
      "interventions": [{"type": "cfvqa", "hidden_sizes": [64]}],
      "trainer": {"epochs": 10, "lr": 0.003},          # causalvl.TrainConfig fields
      "output_dir": "runs/cfvqa-digits"
    }

``causalvl train`` writes, in the output folder: the trainer's checkpoints, ``run.json`` and
``metrics.jsonl``, the intervention weights (``interventions/``), the resolved config
(``config.json``) and ``diagnostics.json`` (read back by ``causalvl report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import atomic_write_text
from .errors import ConfigError

log = logging.getLogger("causalvl.runs")

RUN_KEYS = {"name", "seed", "data", "model", "interventions", "trainer", "output_dir"}
DATA_KEYS = {"type", "settings", "source", "train_split", "eval_splits"}
SOURCE_KEYS = {"digits": {"type"}, "cifar10": {"type", "root", "split"}}
PRETRAINED_KEYS = {"type", "class", "path"}
DATASETS = ("PriorShiftVQA", "ContextShift")
MODELS = ("TinyVQA", "TinyRegionClassifier", "pretrained")
#: What ``causalvl train`` writes into its output folder (and ``--overwrite`` removes first).
RUN_OUTPUTS = (
    "last",
    "best",
    "run.json",
    "metrics.jsonl",
    "interventions",
    "config.json",
    "diagnostics.json",
)


def check_keys(mapping: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for a key of ``mapping`` not in ``allowed``, naming the
    closest allowed key (``"epoch"`` -> ``"epochs"``): a typo must not pass silently."""
    allowed = sorted(set(allowed))
    unknown = sorted(set(mapping) - set(allowed), key=str)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "key" if len(unknown) == 1 else "keys"
    raise ConfigError(
        f"{where} has unknown {noun} {', '.join(hints)}; allowed: {', '.join(allowed)}."
    )


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
    check_keys(config, RUN_KEYS, f"run config {str(path)!r}")
    for key in ("data", "model", "interventions"):
        _require(config, key, f"run config {str(path)!r}")
    for key in ("data", "model", "trainer"):
        if key in config and not isinstance(config[key], Mapping):
            raise ConfigError(
                f"run config {str(path)!r}: {key!r} must be a JSON object, got "
                f"{type(config[key]).__name__}; see docs/cli.md for the run config schema."
            )
    check_keys(config["data"], DATA_KEYS, "data")
    config.setdefault("name", path.stem)
    return config


def _source(spec: Mapping[str, Any] | None) -> Any:
    from . import datasets

    if spec is None:
        return None
    kind = _require(spec, "type", "data.source")
    if kind in SOURCE_KEYS:
        check_keys(spec, SOURCE_KEYS[kind], f"data.source ({kind})")
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
    config_cls = (
        datasets.PriorShiftConfig if kind == "PriorShiftVQA" else datasets.ContextShiftConfig
    )
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"split"}
    check_keys(settings, fields, f"data.settings ({kind}; the split is data.train_split)")
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

        check_keys({"type": kind, **spec}, PRETRAINED_KEYS, "model (pretrained)")
        class_name = _require(spec, "class", "model")
        cls = getattr(transformers, str(class_name), None)
        if cls is None or not hasattr(cls, "from_pretrained"):
            raise ConfigError(f"model.class = {class_name!r} is not a transformers model class.")
        folder = Path(str(_require(spec, "path", "model")))
        if not folder.is_dir():
            what = "is a file" if folder.exists() else "does not exist"
            raise ConfigError(
                f"model.path {str(folder)!r} {what}; give the folder a Hugging Face model was "
                "saved to with save_pretrained (config.json plus weights)."
            )
        try:
            return cls.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"model.path {str(folder)!r}: {class_name} could not load it ({first})."
            ) from exc
    model_cls = (
        causalvl.models.TinyVQA if kind == "TinyVQA" else causalvl.models.TinyRegionClassifier
    )
    params = set(inspect.signature(model_cls.__init__).parameters) - {"self"}
    check_keys(spec, params, f"model ({kind})")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "TinyVQA":
            spec.setdefault("vocab_size", len(train.tokenizer))
            spec.setdefault("num_answers", train.num_answers)
            spec.setdefault("image_size", train.config.image_size)
            return causalvl.models.TinyVQA(**spec)
        spec.setdefault("num_classes", len(train.class_names))
        return causalvl.models.TinyRegionClassifier(**spec)


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """What :func:`train_from_config` did: the run's name and folder, the trainer's result and
    the final diagnostics. :meth:`summary` is the few lines ``causalvl train`` prints."""

    name: str
    output_dir: Path
    result: Any  # causalvl.TrainResult
    diagnostics: Any  # causalvl.Diagnostics
    seconds: float = 0.0

    def summary(self) -> str:
        """Where the run went, its final evaluation metrics and the best epoch."""
        from .reports.formatting import format_number

        r = self.result
        lines = [
            f"trained {self.name!r}: {r.epochs_completed} epoch"
            f"{'' if r.epochs_completed == 1 else 's'}, {r.global_step} steps"
            + (" (stopped early)" if r.stopped_early else "")
            + (f", {self.seconds:.0f} s" if self.seconds else ""),
        ]
        for split_name, sp in self.diagnostics.splits.items():
            parts = [f"accuracy {format_number(sp.accuracy)}"]
            if sp.groups is not None:
                parts.append(f"worst group {format_number(sp.groups.worst_group_accuracy)}")
            if sp.language_prior is not None and sp.language_prior.prior_agreement is not None:
                parts.append(
                    f"agreement with image-blind answer "
                    f"{format_number(sp.language_prior.prior_agreement)}"
                )
            if sp.context is not None and sp.context.flip_rate is not None:
                parts.append(f"context flip rate {format_number(sp.context.flip_rate)}")
            lines.append(f"  {split_name} (n={sp.n}): " + ", ".join(parts))
        if r.best_metric is not None and r.best_epoch is not None:
            lines.append(
                f"  best epoch {r.best_epoch} by {r.best_metric} = {format_number(r.best_value)} "
                f"(weights in {self.output_dir / 'best'})"
            )
        lines.append(
            f"run folder: {self.output_dir}  (diagnostics.json for 'causalvl report', "
            "metrics.jsonl per epoch)"
        )
        return "\n".join(lines)


def _prepare_output(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write over an earlier run unless asked to; ``overwrite`` removes only what
    ``causalvl train`` writes, never other files in the folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output folder {str(out_dir)!r} is a file; pass --out NEW_DIR.")
    if resume or not out_dir.is_dir():
        return
    previous = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if overwrite:
        for name in previous:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        return
    if previous or any(out_dir.iterdir()):
        held = f"holds an earlier run ({', '.join(previous)})" if previous else "is not empty"
        raise ConfigError(
            f"output folder {str(out_dir)!r} {held}; pass --overwrite to replace it, --resume "
            "to continue it, or --out NEW_DIR."
        )


def train_from_config(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainRun:
    """Train the run described by the JSON file at ``path``.

    Refuses an output folder that already holds files unless ``resume`` (continue from its
    last checkpoint) or ``overwrite`` (remove the earlier run's outputs first) is set.

    Returns:
        TrainRun: the output folder, the trainer's result and the diagnostics.
    """
    import time

    import causalvl
    from causalvl.config import InterventionConfig, intervention_config_class

    if resume and overwrite:
        raise ConfigError(
            "--resume continues the earlier run in the output folder and --overwrite replaces "
            "it; pass one of the two."
        )
    start = time.perf_counter()
    config = load_run_config(path)
    seed = int(config.get("seed", 0))
    out_dir = Path(out or config.get("output_dir") or Path("runs") / config["name"])
    interventions = config["interventions"]
    if not isinstance(interventions, list) or not interventions:
        raise ConfigError(
            "run config 'interventions' must be a non-empty list of intervention configs."
        )
    for i, c in enumerate(interventions):
        if isinstance(c, Mapping) and "type" in c:
            klass = intervention_config_class(c["type"])
            # old names of renamed fields still load, with a FutureWarning, for one release
            fields = {f.name for f in dataclasses.fields(klass)} | set(klass.renamed_fields)
            check_keys(
                c, fields | {"type", "causalvl_version"}, f"interventions[{i}] ({c['type']})"
            )
    configs = [InterventionConfig.from_dict(c) for c in interventions]
    trainer_spec = config.get("trainer", {})
    check_keys(
        trainer_spec,
        {f.name for f in dataclasses.fields(causalvl.TrainConfig)} - {"output_dir"},
        "trainer (TrainConfig fields; the output folder is the top-level output_dir or --out)",
    )
    trainer_cfg = causalvl.TrainConfig.from_dict(
        {"seed": seed, "progress": progress, **trainer_spec, "output_dir": str(out_dir)}
    )
    _prepare_output(out_dir, resume=resume, overwrite=overwrite)
    train, evals = build_data(config["data"], seed)
    base = build_model(config["model"], train, seed)
    vl = causalvl.intervene(base, configs, seed=seed)
    prior = getattr(train, "train_prior", None)
    if callable(prior) and vl.needs_prior:
        vl.set_bias_prior(prior())
    result = causalvl.Trainer(vl, train, eval_data=evals, config=trainer_cfg).fit(resume=resume)
    vl.save_pretrained(out_dir / "interventions")
    diagnostics = causalvl.diagnose(vl, evals, progress=progress, seed=seed)
    diagnostics.to_json(out_dir / "diagnostics.json")
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    log.info("run %s written to %s", config["name"], out_dir)
    return TrainRun(
        name=str(config["name"]),
        output_dir=out_dir,
        result=result,
        diagnostics=diagnostics,
        seconds=time.perf_counter() - start,
    )


def report_runs(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    title: str | None = None,
    deterministic: bool = False,
) -> Path:
    """One bias report comparing the ``diagnostics.json`` of several run folders.

    A single folder holding a saved bias report (``report.json``, e.g. the output of
    ``causalvl demo``) is re-rendered instead, together with its ``context/`` report when
    present. Returns the path of the new ``index.html``.
    """
    import causalvl

    folders = [Path(run) for run in runs]
    for run in folders:
        if not run.exists():
            raise ConfigError(
                f"{str(run)!r} does not exist; pass run folders written by 'causalvl train' "
                "(or one folder with a saved report.json, such as the demo's output)."
            )
        if not run.is_dir():
            raise ConfigError(
                f"{str(run)!r} is a file; pass the folder that holds it (a run folder with "
                "diagnostics.json, or a report folder with report.json)."
            )
    saved = [run for run in folders if (run / "report.json").is_file()]
    saved = [run for run in saved if not (run / "diagnostics.json").is_file()]
    if saved:
        if len(folders) > 1:
            raise ConfigError(
                f"{str(saved[0])!r} holds a saved bias report (report.json), which is "
                "re-rendered on its own; pass it as the only folder, or pass run folders with "
                "diagnostics.json to compare runs."
            )
        return _rerender(saved[0], Path(out), title=title, deterministic=deterministic)
    diagnostics: dict[str, Any] = {}
    for run in folders:
        file = run / "diagnostics.json"
        if not file.is_file():
            raise ConfigError(
                f"{str(run)!r} has neither diagnostics.json (a run folder written by "
                "'causalvl train') nor report.json (a saved bias report such as the demo's "
                "output); 'causalvl report' reads one of the two."
            )
        name = run.name
        cfg = run / "config.json"
        if cfg.is_file():
            name = json.loads(cfg.read_text(encoding="utf-8")).get("name", name)
        if name in diagnostics:
            name = f"{name} ({run})"
        diagnostics[name] = causalvl.Diagnostics.from_json(file)
    report = causalvl.BiasReport(
        diagnostics, title=title or "causalvl bias report", deterministic=deterministic
    )
    return Path(report.save(out)["html"])


def _rerender(folder: Path, out: Path, *, title: str | None, deterministic: bool) -> Path:
    """Write a saved report (and the reports in its sub-folders, e.g. ``context/``) again."""
    import causalvl

    if out.resolve() == folder.resolve():
        raise ConfigError(
            f"--out {str(out)!r} is the report folder being read; pass another --out folder."
        )
    html = None
    for file in sorted(folder.glob("**/report.json")):
        report = causalvl.BiasReport.from_json(file)
        rel = file.parent.relative_to(folder)
        if title is not None and rel == Path("."):
            report.title = title
        if deterministic:
            report.deterministic = True
            report.provenance = {
                k: v for k, v in dict(report.provenance or {}).items() if k != "created"
            }
        path = report.save(out / rel)["html"]
        html = path if rel == Path(".") else html
    if html is None:  # report.json vanished while reading
        raise ConfigError(f"{str(folder)!r} has no report.json any more.")
    return Path(html)


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
        progress=not args.no_progress,
    )
    text = audit_text(audit)
    if args.json:
        atomic_write_text(args.json, json.dumps(audit.to_dict(), indent=2, sort_keys=False) + "\n")
        text += f"\nwrote {args.json}"
    if args.html:
        atomic_write_text(args.html, audit_page_html(audit))
        text += f"\nwrote {args.html}"
    return text
