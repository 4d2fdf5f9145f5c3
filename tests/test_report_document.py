"""The report document model, its two renderers, the templates as package data, and results
(POPE, custom sections) going through the one document path."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from conftest import small_diagnostics
from markupsafe import escape

import causalvl
from causalvl.decoding.pope import POPEEvaluator, POPEMetrics, POPEResult
from causalvl.diagnostics.results import (
    MetricTable,
    as_metric_table,
)
from causalvl.errors import DataError
from causalvl.reports import builders
from causalvl.reports.document import (
    BulletList,
    Cell,
    Details,
    Document,
    Grid,
    Heading,
    Paragraph,
    Section,
    Table,
    Text,
    walk,
)
from causalvl.reports.formatting import format_number
from causalvl.reports.render_html import (
    environment,
    render_html,
    render_section_html,
    stylesheet,
)
from causalvl.reports.render_markdown import render_markdown

EVIL = "<script>alert(1)</script>"
LABELS = {"a": {"dog", "ball"}, "b": {"cat"}, "c": {"dog", "cat", "sofa"}}


def _diag(accuracy: float, agreement: float | None = 0.3, flips: float | None = 0.2):
    return small_diagnostics(accuracy, agreement, flips)


def _pope() -> POPEResult:
    return POPEEvaluator(LABELS, num_per_image=1).evaluate(
        lambda qs: ["Yes"] * len(qs), name="always yes"
    )


@pytest.fixture(scope="module")
def report() -> causalvl.BiasReport:
    table = MetricTable.from_mapping(
        f"User table {EVIL}",
        {EVIL: {"score": 0.123}},
        definitions={"score": f"a definition with {EVIL}"},
        description="Details in context/index.html & more.",
    )
    return causalvl.BiasReport(
        {"plain": _diag(0.2, 0.8, 0.4), EVIL: _diag(0.4)},
        title=f"Title {EVIL}",
        notes=f"Notes {EVIL}; see context/index.html.",
        extra_sections=[table, _pope()],
        deterministic=True,
    )


# -- the document model ---------------------------------------------------------------------
def test_nodes_are_frozen_and_check_their_shape():
    p = Paragraph.of("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.style = "footer"  # type: ignore[misc]
    with pytest.raises(DataError, match="2 cells for 3 columns"):
        Table(("a", "b", "c"), ((Cell("1"), Cell("2")),))
    with pytest.raises(DataError, match="1 values for 2 columns"):
        Grid(columns=(("m", None), ("n", None)), rows=(("acc", (0.5,)),))
    inner = Table(("a",), ((Cell("1"),),))
    blocks = (Heading("h"), Details("more", (Details("deeper", (inner,)),), group=True))
    assert inner in list(walk(blocks))
    doc = Document("t", (Section("Summary"), Section("Calibration")))
    assert doc.section("Cal").title == "Calibration"
    with pytest.raises(KeyError, match="Summary"):
        doc.section("Nope")


def test_report_document_has_one_section_per_result(report):
    doc = report.document()
    titles = [s.title for s in doc.sections]
    assert titles[0] == "Summary" and titles[-2:] == ["All numbers", "Provenance"]
    assert "Reliance on the language prior and on context" in titles
    assert f"User table {EVIL}" in titles  # user text stays raw in the model; renderers escape
    assert "Hallucination (POPE): always yes" in titles
    # the builders write the sentences once: the summary's bullets are the headline
    bullets = next(b for b in doc.section("Summary").blocks if isinstance(b, BulletList))
    assert list(bullets.items) == report.headline()


# -- both renderers show the same document ------------------------------------------------------
def _cells(doc: Document) -> set[str]:
    """Every heading, table header and cell text and every formatted grid number."""
    out: set[str] = set()
    for s in doc.sections:
        out.add(s.title)
        for b in walk(s.blocks):
            if isinstance(b, Table):
                out |= set(b.header) | {c.text for row in b.rows for c in row}
            elif isinstance(b, Grid):
                out |= {label for label, _ in b.rows}
                out |= {format_number(v) for _, values in b.rows for v in values}
            elif isinstance(b, Heading):
                out.add(b.text)
    return {x for x in out if x and "<" not in x and "_" not in x and "*" not in x}


def test_html_and_full_markdown_show_the_same_sections_and_tables(report):
    doc = report.document()
    page = render_html(doc)
    md = render_markdown(doc, brief=False)
    for s in doc.sections:
        assert f"## {s.title}" in md or "<" in s.title, s.title
    assert page.count("<section") == len(doc.sections) == md.count("\n## ")
    missing_html = [x for x in _cells(doc) if str(escape(x)) not in page]
    missing_md = [x for x in _cells(doc) if x not in md]
    assert not missing_html and not missing_md, (missing_html[:5], missing_md[:5])


def test_brief_markdown_is_the_brief_sections_without_detail(report):
    doc = report.document()
    md = report.to_markdown()
    shown = [s.title for s in doc.sections if f"## {s.title}" in md]
    assert shown == [s.title for s in doc.sections if s.brief and "<" not in s.title]
    assert "## Provenance" not in md and "## All numbers" not in md
    assert "Per-group accuracy" not in md and "data:image/png" not in md
    assert md.endswith("Full numbers with definitions: report.json; figures: index.html.\n")


def test_user_text_is_escaped_in_html_and_markdown(report):
    page = report.to_html()
    md = report.to_markdown(brief=False)
    assert "<script" not in page and not re.search(r"(?<!\\)<script", md)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\<script\\>alert(1)\\</script\\>" in md
    assert "&amp; more" in page  # descriptions are escaped before links are made
    assert '<a href="context/index.html">context/index.html</a>' in page
    assert "[context/index.html](context/index.html)" in md
    # strong spans, links and escaping together
    doc = Document(
        "t", (Section("s", (Paragraph((Text("a<b", strong=True), Text(" x.html", links=True))),)),)
    )
    assert '<strong>a&lt;b</strong> <a href="x.html">x.html</a>' in render_html(doc)
    assert "**a\\<b** [x.html](x.html)" in render_markdown(doc, brief=False)
    # only relative pages become links: no scheme, no absolute path
    doc = Document("t", notes="see https://evil.org/a.html and /etc/b.html and ../c.html")
    assert "href" not in render_html(doc)


def test_html_is_well_formed_and_self_contained(report):
    page = report.to_html()
    stack: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            assert tag not in ("script", "link", "iframe")
            if tag not in ("meta", "img", "br"):
                stack.append(tag)

        def handle_endtag(self, tag):
            assert stack and stack.pop() == tag

    P().feed(page)
    assert stack == []
    assert page.startswith("<!DOCTYPE html>") and stylesheet().strip()[:20] in page
    assert page.count('<img src="data:image/png;base64,') == len(report.to_dict()["figures"])


def test_unknown_block_is_an_error_not_a_silent_gap():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        kind = "odd"

    doc = Document("t", (Section("s", (Odd(),), brief=True),))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="render_markdown cannot show a Odd block"):
        render_markdown(doc)
    # the HTML renderer fails the same way, also for a block inside Details
    with pytest.raises(DataError, match="render_html cannot show a Odd block"):
        render_html(doc)
    nested = Section("s", (Details("more", (Odd(),)),))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="Odd"):
        render_html(Document("t", (nested,)))
    with pytest.raises(DataError, match="Odd"):
        render_section_html(nested)


# -- templates are package data -----------------------------------------------------------------
def test_templates_load_from_package_data():
    files = resources.files("causalvl.reports").joinpath("templates")
    names = sorted(p.name for p in files.iterdir() if not p.name.startswith("."))
    assert {"report.html.j2", "blocks.html.j2", "style.css"} <= set(names)
    env = environment()
    assert type(env.loader).__name__ == "PackageLoader"
    assert env.autoescape is True
    assert (
        env.get_template("report.html.j2")
        .render(doc=Document(EVIL), css="", figure_uri=lambda n: None)
        .count("&lt;script&gt;")
        == 2
    )  # <title> and <h1>
    assert "--accent" in stylesheet() and stylesheet() == causalvl.reports.report.CSS
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["causalvl.reports"]
    for name in names:  # every template file is shipped in the wheel
        assert any(fnmatch.fnmatch(f"templates/{name}", p) for p in patterns), name
    deps = " ".join(config["project"]["dependencies"]).lower()
    assert "jinja2" in deps


# -- results through the same path --------------------------------------------------------------
def test_pope_result_is_an_ordinary_result_shown_like_any_table(tmp_path):
    res = _pope()
    assert POPEResult.from_dict(res.to_dict()) == res
    assert {m.key for m in res.metrics()} >= {"random.yes_ratio", "adversarial.f1"}
    assert "POPEMetrics(accuracy=0.500" in repr(res.settings["random"])
    with pytest.raises(DataError, match="add up"):
        POPEMetrics(
            accuracy=1, precision=1, recall=1, f1=1, yes_ratio=1, n=5, tp=1, fp=0, tn=0, fn=0
        )
    with pytest.raises(DataError, match="fraction"):
        POPEMetrics(
            accuracy=50, precision=1, recall=1, f1=1, yes_ratio=1, n=1, tp=1, fp=0, tn=0, fn=0
        )
    # straight into a report (it used to need res.to_metric_table() first)
    report = causalvl.BiasReport(_diag(0.4), extra_sections=[res], deterministic=True)
    direct = causalvl.BiasReport(
        _diag(0.4), extra_sections=[res.to_metric_table()], deterministic=True
    )
    assert report.to_json() == direct.to_json() and report.to_html() == direct.to_html()
    assert "| yes\\_ratio | 1.000 | 1.000 | 1.000 |" in report.to_markdown()
    paths = report.save(tmp_path)
    again = causalvl.BiasReport.from_json(paths["json"])
    assert again.to_html() == report.to_html()
    with pytest.raises(DataError, match="to_metric_table"):
        causalvl.BiasReport(_diag(0.4), extra_sections=[object()])


def test_a_new_diagnostic_section_is_one_builder(monkeypatch):
    def shout_section(view: builders.ReportView) -> Section | None:
        rows = tuple((m, (view.split_of(m, "ood").accuracy,)) for m in view.models)
        return Section(
            "Shout test",
            (Paragraph.of("Loud & clear.", "explain"), Grid((("accuracy", None),), rows)),
            anchor="shout",
            brief=True,
        )

    monkeypatch.setattr(
        builders, "DIAGNOSTIC_SECTIONS", (*builders.DIAGNOSTIC_SECTIONS, shout_section)
    )
    import causalvl.reports.report as report_module

    monkeypatch.setattr(report_module, "DIAGNOSTIC_SECTIONS", builders.DIAGNOSTIC_SECTIONS)
    report = causalvl.BiasReport({"plain": _diag(0.25)}, deterministic=True)
    assert '<section id="shout"><h2>Shout test</h2>' in report.to_html()
    assert "Loud &amp; clear." in report.to_html()
    assert "## Shout test" in report.to_markdown() and "| plain | 0.250 |" in report.to_markdown()


def test_audit_page_uses_the_report_template():
    from causalvl.diagnostics import audit_blind_solvability
    from causalvl.reports.audit import audit_page_html, audit_section_html

    audit = audit_blind_solvability(
        ([f"is it {w}" for w in ("red", "blue", "red", "green")] * 10, [0, 1, 0, 2] * 10), folds=2
    )
    page = audit_page_html(audit, title=f"Audit {EVIL}")
    assert "&lt;script&gt;" in page and "<script" not in page
    assert "--accent" in page and "Named cues" in page
    section = audit_section_html(audit, anchor="a1")
    assert section.startswith('<section id="a1"><h2>Benchmark audit') and section.rstrip().endswith(
        "</section>"
    )
    same = audit_section_html(audit).strip()
    assert re.sub(r">\s+<", "><", same) in re.sub(r">\s+<", "><", page)


def test_results_become_metric_tables_one_way_everywhere():
    res = _pope()
    table = res.to_metric_table()
    d = _diag(0.4)
    convert = {
        "with_extras": lambda x: d.with_extras(x).extras[-1],
        "BiasReport": lambda x: causalvl.BiasReport(d, extra_sections=[x]).extra_sections[0],
        "builders": lambda x: builders.as_metric_table(x),
    }
    for name, fn in convert.items():
        assert fn(res) == table and fn(table) is table, name
        # a result class (not an instance) and a plain object are refused with the same hint
        for bad in (POPEResult, object()):
            with pytest.raises(DataError, match=r"to_metric_table\(\).*MetricTable.from_mapping"):
                fn(bad)
    assert builders.as_metric_table is as_metric_table
