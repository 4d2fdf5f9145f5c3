"""BiasReport: self-contained HTML, every number shown, escaping, JSON round trip, rendering."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from causalvl import GenericAdapter
from causalvl.diagnostics import (
    Diagnostics,
    EffectEstimate,
    MetricTable,
    RefutationResult,
    audit_blind_solvability,
    diagnose,
    winoground_scores,
)
from causalvl.outputs import InterventionOutput
from causalvl.reports import BiasReport, format_number

A = 4
EVIL = "<script>alert(1)</script>"


class Model(nn.Module):
    """Mixes an image-driven and a text-driven answer; ``mix`` = weight of the image."""

    def __init__(self, mix: float, effects: bool = False) -> None:
        super().__init__()
        self.mix = mix
        self.effects = effects
        self.w = nn.Parameter(torch.tensor(4.0))

    def forward(self, image, tokens):
        text = nn.functional.one_hot(tokens[:, 0] % A, A).float()
        logits = self.w * (self.mix * image + (1 - self.mix) * text)
        if not self.effects:
            return logits
        nde = self.w * (1 - self.mix) * text
        return InterventionOutput(
            logits=logits,
            factual_logits=logits,
            effects={"te": logits, "nde": nde, "tie": logits - nde},
        )


def batch(n: int, aligned_share: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, A, (n,), generator=g)
    aligned = torch.rand(n, generator=g) < aligned_share
    prior = torch.where(aligned, labels, (labels + 1) % A)
    noise = 0.8 * torch.rand(n, A, generator=g)
    return {
        "image": nn.functional.one_hot(labels, A).float() + noise,
        "tokens": prior[:, None],
        "labels": labels,
        "group": 2 * (labels % 2) + aligned.long(),
        "bias_aligned": aligned,
    }


def names(g: int) -> str:
    return f"answer={'odd' if g // 2 else 'even'}, prior={'aligned' if g % 2 else 'conflicting'}"


def make_diagnostics(mix: float, effects: bool = False) -> Diagnostics:
    data = {"id": batch(80, 0.9, 0), "ood": batch(80, 0.2, 1)}
    return diagnose(
        Model(mix, effects),
        data,
        adapter=GenericAdapter(vision_keys=["image"], language_keys=["tokens"]),
        progress=False,
        group_names=names,
        ece_bins=10,
    )


@pytest.fixture(scope="module")
def report() -> BiasReport:
    plain = make_diagnostics(0.3)
    debiased = make_diagnostics(0.7, effects=True)
    refutation = RefutationResult(
        name="placebo_treatment_refuter",
        new_effect=0.004,
        p_value=0.82,
        passed=True,
        expectation="Replacing the treatment by a random permutation should give about 0.",
        verdict="Passed: p = 0.82 ≥ 0.05, so the check found no problem.",
        estimate_method="backdoor.linear_regression",
    )
    estimate = EffectEstimate(
        value=0.412,
        method="backdoor.linear_regression",
        treatment="bias_aligned",
        outcome="correct",
        backdoor_variables=("question_type",),
        refutations=(refutation,),
        n=80,
        elapsed_s=1.25,
        seed=0,
    )
    plain = plain.with_split_results("ood", effect_estimate=estimate)
    comp = winoground_scores(torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [0.0, 1.0]]]))
    debiased = debiased.with_split_results("ood", compositional=comp)
    pope = MetricTable.from_mapping(
        "Hallucination (POPE)",
        {
            "random": {"accuracy": 0.861, "yes_ratio": 0.47},
            EVIL: {"accuracy": 0.702, "yes_ratio": 0.61},
        },
        definitions={"accuracy": "Fraction of yes/no object questions answered correctly."},
        description="Object hallucination under three negative-sampling settings.",
    )
    debiased = debiased.with_extras(pope)
    audit = audit_blind_solvability(
        ([f"is it {w}" for w in ("red", "blue", "red", "green")] * 10, [0, 1, 0, 2] * 10), folds=2
    )
    return BiasReport(
        {"plain": plain, EVIL: debiased},
        title=f"Report {EVIL}",
        notes="Two models & one benchmark.",
        audit=audit,
        config={"epochs": 3, "lr": 0.001, "name": EVIL},
        seed=7,
        deterministic=True,
    )


@pytest.fixture(scope="module")
def page(report) -> str:
    return report.to_html()


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.stack: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag == "script":
            self.scripts += 1
        elif tag not in ("meta", "br", "img", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _numbers(value, path=""):
    """Every numeric leaf (not bools) of a JSON value, with its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_save_writes_three_files_and_json_round_trips(report, tmp_path):
    paths = report.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["index.html", "report.json", "summary.md"]
    data = json.loads(paths["json"].read_text())
    assert data["seed"] == 7 and data["config"]["lr"] == 0.001
    assert data["provenance"]["versions"]["causalvl"]
    # the versions come from causalvl.runtime, as run.json's do
    versions = data["provenance"]["versions"]
    assert versions["python"] == data["provenance"]["python"]
    assert {"causalvl", "torch", "transformers", "numpy", "scikit-learn"} <= set(versions)
    assert "created" not in data["provenance"]  # deterministic
    again = BiasReport.from_json(paths["json"])
    assert again.to_dict() == report.to_dict()
    assert BiasReport.from_json(tmp_path / "out").to_json() == report.to_json()
    # every number carries a definition next to it in the JSON
    groups = data["models"]["plain"]["splits"]["ood"]["groups"]
    assert set(groups["definitions"]) >= {
        "average_sample_weighted",
        "average_over_groups",
        "worst_group_accuracy",
    }


def test_html_parses_has_every_figure_and_no_script(report, page):
    parser = _Parser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.scripts == 0
    figures = report.to_dict()["figures"]
    assert set(figures) == {"accuracy", "group_accuracy", "reliance", "reliability", "effects"}
    pngs = [s for s in parser.imgs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == len(parser.imgs) == len(figures)
    assert page.count('<img src="data:image/png;base64,') == len(figures)


def test_html_shows_every_number_of_the_json(report, page):
    data = report.to_dict()
    missing = []
    for section in ("models", "extra_sections", "audit", "config"):
        for path, value in _numbers(data[section], section):
            if format_number(value) not in page:
                missing.append((path, value, format_number(value)))
    assert not missing, missing[:10]
    assert format_number(data["seed"]) in page


def test_user_strings_are_escaped(report, page):
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Two models &amp; one benchmark." in page
    md = report.to_markdown()
    assert "<script>" not in md


def test_page_reads_well(report, page):
    headline = report.headline()
    assert any("relies least on the language prior" in line for line in headline)
    assert any("vs plain" in line for line in headline)
    for title in (
        "Summary",
        "Group robustness",
        "Calibration",
        "Causal effect of the spurious cue",
        "Hallucination (POPE)",
        "Benchmark audit",
        "Provenance",
        "Compositional",
    ):
        assert title in page
    assert "passed" in page and "found no problem" in page
    assert BiasReport.from_json(report.to_json()).to_html() == page  # deterministic output


def test_extra_sections_and_validation():
    d = make_diagnostics(0.5)
    r = BiasReport(d, extra_sections={"Hallucination (POPE)": {"random": {"f1": 0.8}}})
    assert r.extra_sections[0].rows[0].values == (0.8,)
    assert "created" in r.provenance
    assert "Hallucination (POPE)" in r.to_html()
    from causalvl.errors import DataError

    with pytest.raises(DataError, match="baseline"):
        BiasReport({"a": d}, baseline="b")
    with pytest.raises(DataError, match="Diagnostics"):
        BiasReport({"a": {"accuracy": 0.5}})


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(page, tmp_path):
    html_file = tmp_path / "index.html"
    html_file.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", html_file.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    assert shot.is_file() and shot.stat().st_size > 20_000
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page


# -- many models -----------------------------------------------------------------------------

MANY = [f"debiasing method number {k}" if k % 3 else f"m{k}" for k in range(10)]


@pytest.fixture(scope="module")
def many(report) -> BiasReport:
    """Ten models (two distinct diagnostics under ten names, some of them long)."""
    plain, debiased = report.models["plain"], report.models[EVIL]
    models = {name: (plain if k % 2 else debiased) for k, name in enumerate(MANY)}
    return BiasReport(models, baseline=MANY[1], deterministic=True)


class _Tables(HTMLParser):
    """Every <table>: its class and rows of (tag, attributes, text) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.cell: list | None = None
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class", ""), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = [tag, dict(attrs), ""]
            self.tables[-1]["rows"][-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data


def test_many_models_tables_stay_compact(many):
    page = many.to_html()
    parser = _Tables()
    parser.feed(page)
    # metric x (model, split) tables, whose width grows with the number of models
    wide = [t for t in parser.tables if t["class"] == "grid" and max(map(len, t["rows"])) > 5]
    assert wide, "expected model-by-split tables"
    definitions = {
        x.definition for d in many.models.values() for sp in d.splits.values() for x in sp.metrics()
    }
    for t in wide:
        # no prose in a wide table: definitions are listed under it, not in a column
        cells = [c for r in t["rows"] for c in r]
        assert max(len(c[2]) for c in cells if c[0] == "td") <= 60
        assert not any(c[2] in definitions or c[1].get("class") == "def" for c in cells)
    glance = next(t for t in wide if len(t["rows"][0]) == 11)
    # model names once, spanning their splits; split names on the second header row
    assert [c[2] for c in glance["rows"][0][1:]] == MANY
    assert all(c[1].get("colspan") == "2" for c in glance["rows"][0][1:])
    assert {c[2] for c in glance["rows"][1]} == {"id", "ood"}
    assert '<dl class="defs">' in page
    # the summary does not grow with the number of models; the per-model numbers are a table
    two = BiasReport({m: many.models[m] for m in MANY[:2]}, baseline=MANY[1])
    assert len(many.headline()) == len(two.headline()) <= 8
    header, rows = many.summary_rows()
    assert [m for m, _ in rows] == MANY and "ID accuracy" in header
    assert sum("vs m1" in line or "vs debiasing" in line for line in many.headline()) == 1


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def test_many_models_figures_have_no_clipped_or_colliding_text(many):
    for name, fig in many.figures().items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for ax in fig.axes:
            (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
            # tick labels matplotlib draws: those inside the view limits
            xticks = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
            yticks = [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
            texts = [t for t in ax.texts if t.get_text()]
            for t in xticks + yticks + texts:
                ext = t.get_window_extent(renderer)
                assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (name, t.get_text())
                assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (name, t.get_text())
            for group in (xticks, yticks, texts):
                exts = [t.get_window_extent(renderer) for t in group if t.get_text()]
                for i, a in enumerate(exts):
                    for b in exts[i + 1 :]:
                        assert not _overlaps(a, b), (name, ax.get_title())
        assert fig.get_figwidth() <= 11.0, name


def test_save_builds_the_document_and_the_headline_once(report, tmp_path, monkeypatch):
    from causalvl.reports import builders
    from causalvl.reports import report as report_module

    counts = {"document": 0, "headline": 0}
    summary_section, headline_sentences = builders.summary_section, builders.headline_sentences

    def counted_summary(view):
        counts["document"] += 1
        return summary_section(view)

    def counted_headline(view):
        counts["headline"] += 1
        return headline_sentences(view)

    monkeypatch.setattr(report_module, "summary_section", counted_summary)
    monkeypatch.setattr(builders, "headline_sentences", counted_headline)
    paths = report.save(tmp_path / "out")
    assert counts == {"document": 1, "headline": 1}
    monkeypatch.undo()
    # the same files as the one-at-a-time methods write
    assert paths["html"].read_text() == report.to_html()
    assert paths["markdown"].read_text() == report.to_markdown()
    assert paths["json"].read_text() == report.to_json() + "\n"
