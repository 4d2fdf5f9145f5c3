"""CATT (front-door causal attention) next to the backdoor adjustment on the digits context
benchmark: ID / OOD accuracy and gap closed, mean ± std over seeds.

The data and recipe are those of :func:`causalvl.demo.context_benchmark`
(:class:`~causalvl.datasets.ContextShift`: a noisy target digit beside a clean context digit
whose class is the target's partner 90% of the time in training and uniform in the OOD
split). CATT wraps attention blocks, which ``TinyRegionClassifier`` has none of, so every arm
here uses :class:`RegionTransformer`: the same per-region CNN, a learned position embedding,
one BERT layer over the regions, and a classifier on the target region's output.

Arms (all from the same initial weights, per seed):

* ``plain``: trained ``context_epochs + context_extra_epochs`` epochs on the biased split;
* ``backdoor``: continues from the plain model after ``context_epochs`` with the context
  region replaced by its NWGM expectation over the class-mean confounder dictionary (as in the
  demo);
* ``CATT``: continues from the same point with CATT on the BERT layer's attention (dictionary
  ``rand / 100``, K = 100, identity fusion at the start);
* ``CATT (class-mean M)``: the same with ``M`` initialised from the class-mean dictionary;
* ``oracle``: trained on uniform contexts for all epochs.

Gap closed = (OOD_method − OOD_plain) / (OOD_oracle − OOD_plain), per seed, then mean ± std.

    python benchmarks/bench_catt.py out.json            # full sizes (minutes on a CPU)
    python benchmarks/bench_catt.py out.json --quick    # smoke sizes (seconds)

From ``benchmarks/run_all.py``: ``res = bench_catt.run(seeds, quick)`` and
``bench_catt.render_markdown(res)`` for the section.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import causalvl
from causalvl.demo import DemoSettings
from causalvl.models import RegionEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, mean_std, pm, table  # noqa: E402

log = logging.getLogger("benchmarks.catt")

METHODS = ("plain", "backdoor", "CATT", "CATT (class-mean M)", "oracle")
DICTIONARY_SIZE = 100


class RegionTransformer(nn.Module):
    """Region crops ``(B, R, C, h, w)`` -> logits ``(B, num_classes)``: a CNN per region, a
    learned position embedding, ``layers`` BERT layers over the ``R`` region tokens, and a
    classifier on region 0 (the target)."""

    def __init__(
        self,
        num_classes: int,
        num_regions: int = 2,
        hidden: int = 32,
        width: int = 16,
        heads: int = 2,
        layers: int = 1,
    ) -> None:
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertEncoder

        self.region_encoder = RegionEncoder(3, hidden, width)
        self.position = nn.Parameter(torch.randn(num_regions, hidden) * 0.02)
        cfg = BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
        )
        self.encoder = BertEncoder(cfg)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, region_pixels: torch.Tensor) -> torch.Tensor:
        x = self.region_encoder(region_pixels) + self.position
        h = self.encoder(x).last_hidden_state
        return self.classifier(h[:, 0])


def adapter() -> causalvl.GenericAdapter:
    """The :class:`RegionTransformer` adapter: region features and the attention blocks."""
    return causalvl.GenericAdapter(
        vision_keys=["region_pixels"],
        language_keys=[],
        roles={
            "vision_features": "region_encoder",
            "attention_layers": r"encoder\.layer\.\d+\.attention",
        },
    )


def settings_for(quick: bool) -> DemoSettings:
    """The demo's context sizes (smoke sizes with ``quick``)."""
    base = DemoSettings.fast() if quick else DemoSettings.full()
    return dataclasses.replace(base, eval_each_epoch=False)


def _seeded(seed: int, build: Any) -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _train(vl: Any, data: Any, epochs: int, settings: DemoSettings, seed: int) -> float:
    from causalvl.training import TrainConfig, Trainer

    config = TrainConfig(
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=seed,
        progress=False,
        device="cpu",
    )
    start = time.perf_counter()
    Trainer(vl, data, config=config).fit()
    return time.perf_counter() - start


def one_seed(settings: DemoSettings, seed: int) -> dict[str, dict[str, float]]:
    """Train every arm for one seed; ``{method: {"id", "ood", "seconds"}}``."""
    from torch.utils.data import DataLoader

    from causalvl.datasets import collate
    from causalvl.demo import context_data

    train, unbiased, splits = context_data(settings, seed)
    k = len(train.class_names)
    first, extra = settings.context_epochs, settings.context_extra_epochs
    net = _seeded(seed, lambda: RegionTransformer(num_classes=k))
    oracle_net = copy.deepcopy(net)
    plain = causalvl.intervene(net, causalvl.IdentityConfig(), adapter=adapter())
    times = {"plain": _train(plain, train, first, settings, seed)}
    feats, labels = causalvl.ConfounderDictionary.collect(
        plain,
        DataLoader(train, batch_size=256, collate_fn=collate),
        "vision_features",
        labels_key=["labels", "context_class"],
        pool=False,
        progress=False,
    )
    dictionary = causalvl.ConfounderDictionary.from_class_means(
        feats, labels, names=train.class_names
    )
    arms = {
        "backdoor": causalvl.BackdoorConfig(
            target="vision_features",
            dictionary=dictionary,
            regions="context",
            target_index=0,
            normalize=True,
            init_seed=seed + 1,
        ),
        "CATT": causalvl.CATTConfig(dictionary_size=DICTIONARY_SIZE, init_seed=seed),
        "CATT (class-mean M)": causalvl.CATTConfig(dictionary=dictionary, init_seed=seed),
    }
    models = {"plain": plain}
    for name, cfg in arms.items():  # each arm's init_seed fixes its new parameters
        models[name] = causalvl.intervene(copy.deepcopy(net), cfg, adapter=adapter())
    times["plain"] += _train(plain, train, extra, settings, seed + 2)
    for name in arms:
        times[name] = _train(models[name], train, extra, settings, seed + 2)
    models["oracle"] = causalvl.intervene(oracle_net, causalvl.IdentityConfig(), adapter=adapter())
    times["oracle"] = _train(models["oracle"], unbiased, first + extra, settings, seed)
    out = {}
    for name in METHODS:
        diag = causalvl.diagnose(
            models[name], splits, distribution={"id": "id", "ood": "ood"}, progress=False, seed=seed
        )
        out[name] = {
            "id": diag["id"].accuracy,
            "ood": diag["ood"].accuracy,
            "seconds": times[name],
        }
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean ± std over seeds of ID, OOD, seconds and gap closed, per method."""
    out: dict[str, Any] = {}
    for name in METHODS:
        row = {key: mean_std([s[name][key] for s in per_seed]) for key in ("id", "ood", "seconds")}
        closed = []
        for s in per_seed:
            gap = s["oracle"]["ood"] - s["plain"]["ood"]
            closed.append((s[name]["ood"] - s["plain"]["ood"]) / gap if gap > 1e-9 else 0.0)
        row["gap_closed"] = mean_std(closed)
        out[name] = row
    return out


def run(seeds: list[int] | None = None, quick: bool = False) -> dict[str, Any]:
    """Every arm over ``seeds`` (default ``[0, 1]`` quick, ``[0, 1, 2, 3, 4]`` full)."""
    seeds = list(seeds) if seeds else ([0, 1] if quick else [0, 1, 2, 3, 4])
    settings = settings_for(quick)
    start = time.perf_counter()
    per_seed = []
    for seed in seeds:
        per_seed.append(one_seed(settings, seed))
        log.info("CATT context seed %d done", seed)
    return {
        "benchmark": "catt_context",
        "quick": quick,
        "seeds": seeds,
        "settings": dataclasses.asdict(settings),
        "dictionary_size": DICTIONARY_SIZE,
        "methods": summarise(per_seed),
        "per_seed": per_seed,
        "seconds": time.perf_counter() - start,
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The section for ``docs/benchmarks.md``: a description and the table."""
    s = result["settings"]
    rows = [
        [
            name,
            pm(m["id"]),
            pm(m["ood"]),
            pm(m["gap_closed"]),
            f"{m['seconds']['mean']:.1f}",
        ]
        for name, m in result["methods"].items()
    ]
    text = (
        "## Efficacy: causal attention (CATT) on object context\n\n"
        f"`ContextShift` over digits ({s['context_train']} training composites, "
        f"{s['context_test']} per test split, {s['context_image_size']}px regions), seeds "
        f"{result['seeds']}. Every arm uses a region transformer (the per-region CNN, a "
        "position embedding, one BERT layer over the regions, a classifier on the target "
        f"region): plain for {s['context_epochs']} + {s['context_extra_epochs']} epochs; "
        "backdoor, CATT (K = "
        f"{result['dictionary_size']}, `M` = rand/100) and CATT with `M` initialised from the "
        "class-mean dictionary continue from the plain model's first epochs; the oracle trains "
        "on uniform contexts (`benchmarks/bench_catt.py`).\n\n"
    )
    return text + table(["method", "ID accuracy", "OOD accuracy", "gap closed", "train s"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args.seeds, args.quick)
    result["machine"] = machine()
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(render_markdown(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
