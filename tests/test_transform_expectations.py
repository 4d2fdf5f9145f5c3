"""The counterfactual-input entry points give the same tensors as the recorded expectation.

``tests/data/transform_expectations.json`` holds, for every case below, the shape and dtype of
every output tensor and a digest of its values (or the error class when the case raises),
recorded before the input transforms moved into :mod:`causalvl.adapters.transforms`. Integer
and bool tensors are compared by SHA-256; floating ones by their sum, absolute sum and a
position-weighted sum (which a permutation changes), to a relative 1e-6: a reduction such as
the batch std may differ in its last bit with the number of threads. Regenerate it (only when
a change of output is intended) with::

    PYTHONPATH=. python tests/test_transform_expectations.py
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import HF_FAMILIES, inputs_for  # noqa: E402

EXPECTED = Path(__file__).parent / "data" / "transform_expectations.json"
VISION = ("zeros", "mean", "shuffle", "noise", "mask")
LANGUAGE = ("zeros", "mask", "shuffle")
DECODING = ("noise", "blank", "no_image", "instruction")


def _digest(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        if t.is_floating_point():
            x = t.double().flatten()
            w = torch.cos(torch.arange(x.numel(), dtype=torch.float64))
            sums = [float(x.sum()), float(x.abs().sum()), float((x * w).sum())]
            return [list(t.shape), str(t.dtype), sums]
        data = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
        return [list(t.shape), str(t.dtype), hashlib.sha256(data.numpy().tobytes()).hexdigest()]
    return repr(value)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, dict) and isinstance(got, dict):
        return set(got) == set(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list) and len(want) == 3 and isinstance(want[2], list):
        return (
            isinstance(got, list)
            and got[:2] == want[:2]
            and isinstance(got[2], list)
            and all(
                math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
                for a, b in zip(got[2], want[2], strict=True)
            )
        )
    return got == want


def _run(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        out = fn()
    except Exception as exc:  # the recorded expectation includes which cases raise
        return {"error": type(exc).__name__}
    return {k: _digest(v) for k, v in sorted(out.items())}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cases() -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    """``(case id, thunk)`` for every recorded case."""
    import causalvl
    from causalvl.adapters import GenericAdapter, get_adapter
    from causalvl.decoding.tiny import TINY_FAMILIES, tiny_generative_model
    from causalvl.diagnostics.reliance import replace_context
    from causalvl.models import TinyVQA

    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = {name: make() for name, make in HF_FAMILIES.items()}
    for family, model in models.items():
        adapter = get_adapter(model)
        fitted = get_adapter(model)
        fitted.fit_vision_mean([inputs_for(family, batch=2, seed=5)])
        inputs = inputs_for(family, batch=4, seed=1)
        for mode in VISION:
            for name, a in (("plain", adapter), ("fitted", fitted)):
                if name == "fitted" and mode != "mean":
                    continue
                yield (
                    f"{family}/vision/{mode}/{name}",
                    lambda a=a, mode=mode, inputs=inputs: a.counterfactual_inputs(
                        inputs, remove="vision", mode=mode, generator=_gen(3)
                    ),
                )
        for mode in LANGUAGE:
            yield (
                f"{family}/language/{mode}",
                lambda a=adapter, mode=mode, inputs=inputs: a.counterfactual_inputs(
                    inputs, remove="language", mode=mode, generator=_gen(4)
                ),
            )

    for family in TINY_FAMILIES:
        model, inputs = tiny_generative_model(family, batch_size=3, seed=2)
        adapter = get_adapter(model)
        fitted = get_adapter(model)
        fitted.fit_vision_mean([inputs])
        for mode in DECODING:
            yield (
                f"{family}/decoding/{mode}",
                lambda a=adapter, mode=mode, inputs=inputs: a.decoding_counterfactual(
                    inputs, mode, generator=_gen(6), disturbance_ids=[5, 6, 7], noise_step=300
                ),
            )
        for mode in VISION:
            yield (
                f"{family}/vision/{mode}",
                lambda a=adapter, mode=mode, inputs=inputs: a.counterfactual_inputs(
                    inputs, remove="vision", mode=mode, generator=_gen(7)
                ),
            )
        yield (
            f"{family}/vision/mean/fitted",
            lambda a=fitted, inputs=inputs: a.counterfactual_inputs(
                inputs, remove="vision", mode="mean"
            ),
        )
        for mode in LANGUAGE:
            yield (
                f"{family}/language/{mode}",
                lambda a=adapter, mode=mode, inputs=inputs: a.counterfactual_inputs(
                    inputs, remove="language", mode=mode, generator=_gen(8)
                ),
            )

    # a generic adapter over continuous language and a vision mask, and a toy model
    generic = GenericAdapter(
        vision_keys=["image", "image_mask"],
        language_keys=["words"],
        vision_mask_key="image_mask",
    )
    g = _gen(9)
    generic_inputs = {
        "image": torch.randn(3, 5, 2, generator=g),
        "image_mask": torch.ones(3, 5, dtype=torch.long),
        "words": torch.randn(3, 4, 6, generator=g),
    }
    for remove, modes in (("vision", VISION), ("language", LANGUAGE)):
        for mode in modes:
            yield (
                f"generic/{remove}/{mode}",
                lambda remove=remove, mode=mode: generic.counterfactual_inputs(
                    generic_inputs, remove=remove, mode=mode, generator=_gen(10)
                ),
            )
    tiny = causalvl.intervene(TinyVQA(num_answers=5, vocab_size=20), causalvl.IdentityConfig())
    g = _gen(11)
    tiny_inputs = {
        "pixel_values": torch.randn(4, 1, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (4, 6), generator=g),
        "attention_mask": torch.ones(4, 6, dtype=torch.long),
    }
    for remove, modes in (("vision", VISION), ("language", LANGUAGE)):
        for mode in modes:
            yield (
                f"tiny_vqa/{remove}/{mode}",
                lambda remove=remove, mode=mode: tiny.adapter.counterfactual_inputs(
                    tiny_inputs, remove=remove, mode=mode, generator=_gen(12)
                ),
            )

    # context replacement (diagnostics.reliance)
    g = _gen(13)
    target = torch.rand(4, 1, 4, 4, generator=g)
    context = torch.rand(4, 1, 4, 4, generator=g)
    batch = {
        "pixel_values": torch.cat([target, context], -1),
        "region_pixels": torch.stack([target, context], 1),
        "labels": torch.arange(4),
    }
    boxed = {**batch, "boxes": torch.tensor([[[0, 0, 4, 4], [4, 0, 8, 4]]] * 4).float()}
    for mode in ("swap", "zeros"):
        for name, b in (("found", batch), ("boxes", boxed)):
            yield (
                f"context/{mode}/{name}",
                lambda b=b, mode=mode: replace_context(b, mode=mode, generator=_gen(14)),
            )


def _dumps(cases: dict[str, Any]) -> str:
    """One line per case (a readable diff when a case changes)."""
    rows = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(cases.items())]
    return "{\n" + ",\n".join(rows) + "\n}\n"


def record() -> dict[str, Any]:
    return {case: _run(fn) for case, fn in cases()}


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads(EXPECTED.read_text())


def test_entry_points_match_the_recorded_tensors(expected):
    got = record()
    assert sorted(got) == sorted(expected)
    diff = [case for case in expected if not _same(got[case], expected[case])]
    assert not diff, {case: (got[case], expected[case]) for case in diff[:5]}


if __name__ == "__main__":
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(_dumps(record()))
    print(f"wrote {EXPECTED}")
