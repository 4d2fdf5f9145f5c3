"""Report summaries use only the measures that exist for the data and the set of models."""

from __future__ import annotations

import pytest
import torch
from conftest import small_diagnostics as _diag

import causalvl


def test_one_model_report_compares_the_model_with_nothing():
    report = causalvl.BiasReport({"cfvqa-digits": _diag(0.4, flips=0.2)}, deterministic=True)
    text = " ".join(report.headline())
    assert "cfvqa-digits's answer equals its image-blind answer on 0.300" in text
    assert "cfvqa-digits's answer flips on 0.200" in text
    assert "least" not in text and "vs cfvqa-digits" not in text and "Best" not in text
    header, rows = report.summary_rows()
    assert not any(h.startswith("vs ") for h in header)
    assert (
        "vs cfvqa-digits" not in report.to_html() and "vs cfvqa-digits" not in report.to_markdown()
    )


def test_several_models_keep_the_comparison_but_not_with_the_baseline_itself():
    report = causalvl.BiasReport({"plain": _diag(0.2, 0.8), "cfvqa": _diag(0.4, 0.3)})
    text = " ".join(report.headline())
    assert "cfvqa relies least on the language prior" in text and "vs 0.800 for plain" in text
    header, rows = report.summary_rows()
    col = header.index("vs plain")
    assert dict(rows)["plain"][col] is None and dict(rows)["cfvqa"][col] == pytest.approx(0.2)


def test_no_question_no_language_prior_sentence():
    report = causalvl.BiasReport(
        {"plain (context)": _diag(0.5, None, 0.4), "backdoor (context)": _diag(0.7, None, 0.0)}
    )
    text = " ".join(report.headline())
    assert "language prior" not in text and "image-blind" not in text
    assert "backdoor (context) relies least on context" in text
    html = report.to_html()
    assert "<h2>Reliance on context</h2>" in html and "Reliance on the language prior" not in html
    both = causalvl.BiasReport({"m": _diag(0.5, 0.3, 0.4)}).to_html()
    assert "<h2>Reliance on the language prior and on context</h2>" in both


def test_vision_only_model_gets_no_language_prior_and_named_groups():
    from causalvl.datasets import ContextShift

    data = ContextShift(split="test", num_examples=40, seed=0)
    torch.manual_seed(0)
    model = causalvl.models.TinyRegionClassifier(num_classes=data.num_classes, hidden=8, width=8)
    d = causalvl.diagnose(model, {"ood": data}, progress=False)
    split = d["ood"]
    assert split.language_prior is None  # no question: nothing to be blind to
    assert split.context is not None
    names = {g.name for g in split.groups.per_group}
    assert all(n.startswith("target ") for n in names), names
    assert any(n.endswith("(aligned)") for n in names)
    partner = data.class_names[int(data.partner[3])]
    assert data.group_names[2 * 3 + 1] == f"target 3, context {partner} (aligned)"
    text = " ".join(causalvl.BiasReport({"plain (context)": d}).headline())
    assert "language prior" not in text


def test_relative_html_paths_in_descriptions_become_links():
    table = causalvl.MetricTable.from_mapping(
        "Object context",
        {"plain": {"accuracy": 0.5}},
        description="The full context report is in context/index.html; see https://x.org/a.html.",
    )
    report = causalvl.BiasReport({"plain": _diag(0.4)}, extra_sections=[table])
    html = report.to_html()
    assert '<a href="context/index.html">context/index.html</a>' in html
    assert 'href="https' not in html.split("Object context")[1].split("</p>")[0]
    assert "[context/index.html](context/index.html)" in report.to_markdown()
