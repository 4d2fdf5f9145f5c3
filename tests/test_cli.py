"""The command line: demo (fast), train / report / audit, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from causalvl.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causalvl", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "argv", [[], ["demo", "--seed", "x"], ["bogus"], ["audit", "--folds", "0"], ["report"]]
)
def test_bad_arguments_exit_nonzero_with_one_line(argv):
    proc = _run(*argv)
    assert proc.returncode == 2
    if argv:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "error:" in lines[0]


def test_help_for_every_command():
    for cmd in ("demo", "train", "report", "audit"):
        proc = _run(cmd, "--help")
        assert proc.returncode == 0 and "usage: causalvl " + cmd in proc.stdout


def test_library_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "data": {"type": "PriorShiftVQA"},
                "model": {"type": "TinyVQA"},
                "interventions": [{"type": "nope"}],
            }
        )
    )
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown intervention type 'nope'" in err[0]
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"data": {}, "model": {}, "interventions": [], "trainr": {}}))
    assert main(["train", str(typo)]) == 2
    assert "unknown key 'trainr' (did you mean 'trainer'?)" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_fast_writes_the_report(tmp_path):
    from causalvl.demo import CONTEXT_METHODS, PRIOR_METHODS, REFERENCE_ROWS, run_demo

    result = run_demo(tmp_path / "demo", fast=True, progress=False)
    assert (tmp_path / "demo" / "index.html").is_file()
    assert (tmp_path / "demo" / "context" / "index.html").is_file()
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert set(PRIOR_METHODS) <= set(json.dumps(report).split('"'))
    assert [r.method for r in result.rows] == [*REFERENCE_ROWS, *PRIOR_METHODS, *CONTEXT_METHODS]
    assert result.table().startswith("SMOKE RUN")
    # every trained row is the accuracy diagnose wrote to the report, model by model and split
    # by split; the untrained rules score a whole number of the report's examples
    context = json.loads((tmp_path / "demo" / "context" / "report.json").read_text())
    splits = {**report["models"], **context["models"]}
    n = {s: report["models"]["plain"]["splits"][s]["n"] for s in ("id", "ood")}
    for row in result.rows:
        if row.method in REFERENCE_ROWS:
            for s, value in (("id", row.id_accuracy), ("ood", row.ood_accuracy)):
                assert value * n[s] == pytest.approx(round(value * n[s]), abs=1e-6), row
            continue
        got = splits[row.method]["splits"]
        assert (row.id_accuracy, row.ood_accuracy) == (
            got["id"]["accuracy"],
            got["ood"]["accuracy"],
        ), row.method
    HTMLParser().feed((tmp_path / "demo" / "index.html").read_text())
    assert "gap closed" in result.table()


@pytest.mark.slow
def test_train_report_audit_round_trip(tmp_path, capsys):
    runs = []
    for name, intervention in (("plain", {"type": "identity"}), ("lmh", {"type": "lmh"})):
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(
            json.dumps(
                {
                    "name": name,
                    "data": {"type": "PriorShiftVQA", "settings": {"num_examples": 120}},
                    "model": {"type": "TinyVQA", "hidden": 16},
                    "interventions": [intervention],
                    "trainer": {"epochs": 1},
                }
            )
        )
        out = tmp_path / "runs" / name
        assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 0
        assert {"diagnostics.json", "run.json", "config.json", "interventions"} <= {
            p.name for p in out.iterdir()
        }
        summary = capsys.readouterr().out
        assert f"trained {name!r}: 1 epoch" in summary and f"run folder: {out}" in summary
        assert "ood (n=" in summary and "accuracy" in summary
        runs.append(str(out))
    # an earlier run is replaced only when asked to
    assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (out / "best").mkdir()  # a stale output of the earlier run goes too
    assert main(["train", str(cfg), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert not (out / "best").exists() and (out / "diagnostics.json").is_file()
    capsys.readouterr()
    assert main(["report", *runs, "--out", str(tmp_path / "report"), "--deterministic"]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "plain" in html and "lmh" in html
    assert main(["audit", "--limit", "200", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "text-only model" in out and "most common answer overall" in out


def _config(tmp_path, name="run", **parts):
    spec = {
        "name": name,
        "data": {"type": "PriorShiftVQA", "settings": {"num_examples": 120}},
        "model": {"type": "TinyVQA", "hidden": 16},
        "interventions": [{"type": "identity"}],
        "trainer": {"epochs": 1},
    }
    spec.update(parts)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "parts, expected",
    [
        ({"trainer": {"epoch": 2}}, "trainer (TrainConfig fields"),
        ({"interventions": [{"type": "cfvqa", "fuson": "sum"}]}, "did you mean 'fusion'?"),
        ({"trainer": {"epoch": 2}}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        (
            {"data": {"type": "PriorShiftVQA", "settings": {"prior_strenght": 0.8}}},
            "'prior_strength'",
        ),
        (
            {"data": {"type": "PriorShiftVQA", "sorce": {"type": "digits"}}},
            "did you mean 'source'?",
        ),
        ({"model": {"type": "TinyVQA", "hiden": 16}}, "did you mean 'hidden'?"),
        ({"trainr": {}}, "unknown key 'trainr' (did you mean 'trainer'?)"),
    ],
)
def test_unknown_config_keys_are_errors_with_the_closest_key(tmp_path, capsys, parts, expected):
    path = _config(tmp_path, **parts)
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("causalvl train: error:") and expected in line
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_pretrained_model_without_a_model_folder_is_one_line(tmp_path, make):
    folder = tmp_path / "model"
    if make == "empty":
        folder.mkdir()
    path = _config(
        tmp_path,
        model={"type": "pretrained", "class": "ViltForQuestionAnswering", "path": str(folder)},
    )
    proc = _run("train", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.path" in lines[0], lines
    assert ("does not exist" in lines[0]) == (make == "missing")


def test_train_refuses_an_earlier_run_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{}")
    assert main(["train", str(_config(tmp_path)), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "holds an earlier run (run.json)" in line and "--overwrite" in line
    (out / "run.json").unlink()
    (out / "notes.txt").write_text("mine")
    assert main(["train", str(_config(tmp_path)), "--out", str(out)]) == 2
    assert "is not empty" in _one_line_error(capsys)
    assert (
        main(["train", str(_config(tmp_path)), "--out", str(out), "--resume", "--overwrite"]) == 2
    )
    assert "pass one of the two" in _one_line_error(capsys)


def test_report_on_a_missing_or_wrong_path_says_what_it_accepts(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "'" + str(tmp_path / "nope") + "' does not exist" in _one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    line = _one_line_error(capsys)
    assert "neither diagnostics.json" in line and "report.json" in line


def test_report_rerenders_a_saved_report_folder(tmp_path, capsys):
    import causalvl
    from causalvl.diagnostics.results import Diagnostics, SplitDiagnostics

    d = Diagnostics(
        splits={"ood": SplitDiagnostics(name="ood", distribution="ood", n=10, accuracy=0.4)}
    )
    saved = tmp_path / "demo"
    causalvl.BiasReport({"plain": d}, title="demo report").save(saved)
    causalvl.BiasReport({"plain (context)": d}, title="context").save(saved / "context")
    out = tmp_path / "again"
    assert main(["report", str(saved), "--out", str(out), "--deterministic"]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    html = (out / "index.html").read_text()
    assert "demo report" in html and "plain" in html
    assert (out / "context" / "index.html").is_file()
    assert "created" not in json.loads((out / "report.json").read_text())["provenance"]
    assert main(["report", str(saved), str(saved), "--out", str(out)]) == 2
    assert "re-rendered on its own" in _one_line_error(capsys)


def test_threads_option_on_every_command():
    from causalvl.cli import DEFAULT_THREADS, build_parser

    parser = build_parser()
    for argv in (["demo"], ["train", "x.json"], ["audit"]):
        assert parser.parse_args(argv).threads == DEFAULT_THREADS == 1
    assert parser.parse_args(["train", "x.json", "--threads", "4"]).threads == 4


def test_audit_says_what_it_is_doing_unless_asked_not_to(capsys):
    assert main(["audit", "--limit", "80", "--folds", "2"]) == 0
    captured = capsys.readouterr()
    assert "causalvl audit: reading the prior-shift questions and fitting 2" in captured.err
    assert "causalvl audit: done in" in captured.err and "text-only model" in captured.out
    assert main(["audit", "--limit", "80", "--folds", "2", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_verbose_before_or_after_the_command():
    from causalvl.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "x.json"]).verbose is False
    assert parser.parse_args(["-v", "train", "x.json"]).verbose is True
    assert parser.parse_args(["train", "x.json", "-v"]).verbose is True
