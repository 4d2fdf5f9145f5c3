"""End to end: backdoor adjustment beats the plain model under a context shift."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import causalvl
from causalvl.datasets import ContextShift, collate
from causalvl.hooks import count_hooks

ROOT = Path(__file__).resolve().parents[1]


def _loader(ds, batch_size, seed=None):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        ds, batch_size=batch_size, shuffle=seed is not None, generator=gen, collate_fn=collate
    )


def _fit(vl, loader, epochs, lr=3e-3):
    opt = torch.optim.Adam(vl.parameters(), lr=lr)
    vl.train()
    for _ in range(epochs):
        for batch in loader:
            loss = vl.objective(vl(batch), batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    vl.eval()


@torch.no_grad()
def _accuracy(vl, loader):
    vl.eval()
    hits = [(vl(b).logits.argmax(-1) == b["labels"]).float() for b in loader]
    return torch.cat(hits).mean().item()


@pytest.mark.slow
def test_backdoor_beats_plain_on_the_shifted_test_split():
    data = dict(image_size=12, seed=0)
    train = ContextShift(split="train", cooccurrence=0.9, num_examples=1200, **data)
    test = ContextShift(split="test", num_examples=1000, **data)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = causalvl.models.TinyRegionClassifier(num_classes=10, hidden=24, width=12)
    plain = causalvl.intervene(net, causalvl.IdentityConfig())
    _fit(plain, _loader(train, 64, seed=1), epochs=6)

    feats, labels = causalvl.ConfounderDictionary.collect(
        plain,
        _loader(train, 256),
        "vision_features",
        labels_key=["labels", "context_class"],
        pool=False,
        progress=False,
    )
    assert feats.shape == (1200, 2, 24) and labels.shape == (1200, 2)
    dictionary = causalvl.ConfounderDictionary.from_class_means(feats, labels)
    # the training co-occurrence is visible in the prior: every class appears as target and context
    assert dictionary.num_prototypes == 10 and (dictionary.prior > 0).all()

    with torch.random.fork_rng():  # W_y, W_z and the projection are drawn here
        torch.manual_seed(1)
        backdoor = causalvl.intervene(
            copy.deepcopy(net),
            causalvl.BackdoorConfig(
                dictionary=dictionary, regions="context", target_index=0, normalize=True
            ),
        )
    _fit(plain, _loader(train, 64, seed=2), epochs=4)
    _fit(backdoor, _loader(train, 64, seed=2), epochs=4)

    test_loader = _loader(test, 500)
    plain_id, plain_ood = _accuracy(plain, _loader(train, 500)), _accuracy(plain, test_loader)
    backdoor_ood = _accuracy(backdoor, test_loader)
    # the shortcut is attractive: the plain model loses a lot out of distribution
    assert plain_id - plain_ood > 0.25, (plain_id, plain_ood)
    # cutting the context path recovers a large part of it (measured: 0.40 -> 0.68)
    assert backdoor_ood - plain_ood > 0.12, (plain_ood, backdoor_ood)
    assert count_hooks(net) == 0


@pytest.mark.slow
def test_example_runs_in_fast_mode(capsys):
    spec = importlib.util.spec_from_file_location(
        "backdoor_context", ROOT / "examples" / "backdoor_context.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--fast"])
    assert set(results) == {"plain", "backdoor", "oracle"}
    # the --fast split: 300 test examples; overall accuracy is the aligned / conflicting
    # accuracies weighted by their counts, and every accuracy is a whole number of examples
    test = ContextShift(split="test", num_examples=300, image_size=8, seed=0)
    aligned = int(torch.stack([test[i]["bias_aligned"] for i in range(300)]).sum())
    for r in results.values():
        mixed = (aligned * r["test_aligned"] + (300 - aligned) * r["test_conflicting"]) / 300
        assert r["test_accuracy"] == pytest.approx(mixed)
        assert r["test_accuracy"] * 300 == pytest.approx(round(r["test_accuracy"] * 300))
        assert r["train"] * 400 == pytest.approx(round(r["train"] * 400))
    assert "backdoor - plain" in capsys.readouterr().out
