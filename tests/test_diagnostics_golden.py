"""diagnose() on the demo's data sources gives exactly the numbers recorded in
tests/data/diagnose_golden.json (regenerate only for an intended change of a metric:
``python tests/test_diagnostics_golden.py``)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

import causalvl
from causalvl.diagnostics.diagnose import DEFAULT_METRICS

GOLDEN = Path(__file__).parent / "data" / "diagnose_golden.json"


def _spread(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every weight from N(0, 0.5) so the untrained model's answers vary."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def _cases() -> dict[str, Any]:
    from causalvl.datasets._common import collate
    from causalvl.datasets.context_shift import ContextShift
    from causalvl.datasets.prior_shift import PriorShiftVQA
    from causalvl.models import TinyRegionClassifier, TinyVQA

    ood = PriorShiftVQA(split="test", num_examples=48, seed=0)
    idd = PriorShiftVQA(split="test_id", num_examples=48, tokenizer=ood.tokenizer, seed=1)
    splits = {"test_id": idd, "test": ood}
    weights = {g: 1.0 + g for g in range(8)}
    out: dict[str, Any] = {}
    for name, cfg in (
        ("cfvqa", causalvl.CFVQAConfig(num_answers=ood.num_answers, hidden_sizes=(16,))),
        (
            "cfvqa_te",
            causalvl.CFVQAConfig(num_answers=ood.num_answers, hidden_sizes=(16,), inference="te"),
        ),
        ("prior_subtraction", causalvl.PriorSubtractionConfig(alpha=0.5)),
    ):
        torch.manual_seed(0)
        net = _spread(
            TinyVQA(vocab_size=len(ood.tokenizer), num_answers=ood.num_answers, hidden=16)
        )
        vl = _spread(causalvl.intervene(net, cfg), 1)
        d = causalvl.diagnose(
            vl,
            splits,
            progress=False,
            batch_size=20,
            min_group_size=3,
            train_group_weights=weights,
            metrics=DEFAULT_METRICS,
            causal_num_simulations=20,
            null_vision_mode="noise",
            seed=3,
        )
        out[name] = d.to_dict()
    torch.manual_seed(0)
    net = _spread(TinyVQA(vocab_size=len(ood.tokenizer), num_answers=ood.num_answers, hidden=16))
    out["bare_no_swap"] = causalvl.diagnose(
        net, ood, progress=False, batch_size=7, image_swap=False, ece_bins=7
    ).to_dict()
    ctx = ContextShift(split="test", num_examples=24)
    for mode in ("swap", "zeros"):
        torch.manual_seed(0)
        region_net = _spread(TinyRegionClassifier(num_classes=ctx.num_classes, hidden=8, width=8))
        out[f"context_{mode}"] = causalvl.diagnose(
            region_net, ctx, progress=False, batch_size=12, context_mode=mode, seed=1
        ).to_dict()

    # the image-blind pass, the image swap and the context swap on one batch stream: the three
    # draw from the same generator, in that order (21 examples: a last batch of one is skipped)
    class WithText(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 21

        def __getitem__(self, i: int) -> dict:
            return {**ctx[i], "tokens": torch.tensor([i % 7, i % 5])}

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = torch.nn.Linear(3 * 16 * 32, ctx.num_classes)
            self.text = torch.nn.Embedding(8, ctx.num_classes)

        def forward(self, pixel_values, tokens):
            return self.image(pixel_values.flatten(1)) + self.text(tokens[:, 0])

    torch.manual_seed(0)
    out["prior_and_context"] = causalvl.diagnose(
        _spread(Both(), 2),
        WithText(),
        adapter=causalvl.GenericAdapter(vision_keys=["pixel_values"], language_keys=["tokens"]),
        collate_fn=collate,
        progress=False,
        batch_size=10,
        null_vision_mode="noise",
        min_group_size=2,
        seed=5,
    ).to_dict()

    # the causal estimate: a model that reads the prior token and, half of the time, the image
    g = torch.Generator().manual_seed(0)
    n = 60
    labels = torch.randint(0, 4, (n,), generator=g)
    batch = {
        "image": torch.nn.functional.one_hot(labels, 4).float() * torch.rand(n, 1, generator=g),
        "tokens": torch.randint(0, 4, (n, 2), generator=g),
        "labels": labels,
        "question_type": torch.randint(0, 3, (n,), generator=g),
    }
    batch["bias_aligned"] = batch["tokens"][:, 0] == labels

    class Mixed(torch.nn.Module):
        def forward(self, image, tokens):
            return 0.6 * torch.nn.functional.one_hot(tokens[:, 0], 4).float() + image

    out["causal"] = causalvl.diagnose(
        Mixed(),
        batch,
        adapter=causalvl.GenericAdapter(vision_keys=["image"], language_keys=["tokens"]),
        progress=False,
        metrics=("causal", "bias", "groups"),
        causal_num_simulations=10,
    ).to_dict()
    return json.loads(json.dumps(out))


def _compare(got: Any, want: Any, path: str = "") -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [
                f"{path}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"
            ]
        keys = [k for k in want if k != "elapsed_s"]  # wall-clock time, not a result
        return [e for k in keys for e in _compare(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [
            e for i, (g, w) in enumerate(zip(got, want)) for e in _compare(g, w, f"{path}[{i}]")
        ]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            return []
        return [f"{path}: {got!r} != {want!r}"]
    return [] if got == want and type(got) is type(want) else [f"{path}: {got!r} != {want!r}"]


def test_diagnose_numbers_match_the_recorded_values():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _cases()
    want = json.loads(GOLDEN.read_text())
    errors = _compare(got, want)
    assert not errors, "\n".join(errors[:20])


def test_the_comparison_can_fail():
    want = {"a": [1.0, {"b": None, "c": "x"}], "n": 3}
    assert _compare(want, want) == []
    assert _compare({"a": [1.0 + 1e-6, {"b": None, "c": "x"}], "n": 3}, want)
    assert _compare({"a": [1.0, {"b": 0.0, "c": "x"}], "n": 3}, want)
    assert _compare({"a": [1.0, {"b": None, "c": "x"}], "n": 4}, want)
    assert _compare({"a": [1.0], "n": 3}, want)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GOLDEN.write_text(json.dumps(_cases(), indent=1, sort_keys=True) + "\n")
