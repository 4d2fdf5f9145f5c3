"""Diagnostics that do not apply to a model are n/a with a reason, never a misleading 0.000;
the report's summary leads with accuracy against the blind rules and the oracle."""

from __future__ import annotations

from html.parser import HTMLParser

import torch

import causalvl
from causalvl.reports import BiasReport


def _batch(n: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(n, 3, 8, 8, generator=g),
        "input_ids": torch.randint(1, 20, (n, 5), generator=g),
        "labels": torch.randint(0, 4, (n,), generator=g),
    }


def _diagnose(config) -> causalvl.Diagnostics:
    torch.manual_seed(0)
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
    vl = causalvl.intervene(net, config).eval()
    return causalvl.diagnose(vl, {"id": _batch(seed=0), "ood": _batch(seed=1)}, progress=False)


def test_cfvqa_prior_agreement_is_not_applicable():
    d = _diagnose(causalvl.CFVQAConfig(hidden_sizes=(16,)))["ood"]
    lp = d.language_prior
    assert lp.prior_agreement is None and lp.mean_kl is None and lp.null_accuracy is None
    assert "TIE" in lp.not_applicable and lp.n == 0
    assert lp.image_swap_flip_rate is not None  # swapping the image still means something
    assert type(lp).from_dict(lp.to_dict()) == lp
    # the plain ensemble answer (TE) has an image-blind counterpart: a number again
    te_config = causalvl.CFVQAConfig(hidden_sizes=(16,), inference="te")
    te = _diagnose(te_config)["ood"]
    assert te.language_prior.not_applicable is None
    # the same agreement by hand: the answer with the image zeroed vs. the factual answer
    torch.manual_seed(0)
    net = causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)
    vl = causalvl.intervene(net, te_config).eval()
    batch = _batch(seed=1)
    inputs = vl.adapter.model_inputs(batch)
    blind = vl.adapter.counterfactual_inputs(inputs, remove="vision", mode="zeros")
    with torch.no_grad():
        same = vl(**inputs).logits.argmax(-1) == vl(**blind).logits.argmax(-1)
    assert te.language_prior.prior_agreement == same.double().mean().item()
    assert te.language_prior.n == 32


def test_report_shows_na_and_leads_with_accuracy_vs_blind_rules_and_oracle(tmp_path):
    cf = _diagnose(causalvl.CFVQAConfig(hidden_sizes=(16,)))
    plain = _diagnose(causalvl.PriorSubtractionConfig(alpha=0.0))
    assert plain["ood"].language_prior.prior_agreement is not None

    def at(d, acc):
        return d.with_split_results("ood", accuracy=acc)

    models = {
        "plain": at(plain, 0.30),
        "CF-VQA": at(cf, 0.10),
        "LMH": at(plain, 0.42),
        "blind: majority per question type": at(plain, 0.25),
        "oracle": at(plain, 0.80),
    }
    report = BiasReport(models, baseline="plain", deterministic=True)
    lines = report.headline()
    assert lines[0].startswith("Best OOD accuracy on ood: LMH with 0.420 vs plain 0.300")
    assert lines[1] == (
        "For reference on ood: the best blind rule (blind: majority per question type) 0.250 "
        "and the oracle (oracle) 0.800. 2 of 3 models beat the best blind rule."
    )
    assert not any("CF-VQA relies least" in line for line in lines)
    assert any(
        line.startswith("Agreement with the image-blind answer does not apply to CF-VQA")
        for line in lines
    )
    header, rows = report.summary_rows()
    col = header.index("agreement with image-blind answer")
    assert dict(rows)["CF-VQA"][col] == "n/a"
    html = report.to_html()
    HTMLParser().feed(html)
    assert "n/a for CF-VQA / ood" in html and "0.000" not in dict(rows)["CF-VQA"][col]
    assert "| n/a |" in report.to_markdown()
