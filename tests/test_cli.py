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
    assert "unknown keys ['trainr']" in capsys.readouterr().err


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
    for row in result.rows:
        assert 0 <= row.id_accuracy <= 1 and 0 <= row.ood_accuracy <= 1
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
        runs.append(str(out))
    assert main(["report", *runs, "--out", str(tmp_path / "report"), "--deterministic"]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "plain" in html and "lmh" in html
    assert main(["audit", "--limit", "200", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "text-only model" in out and "most common answer overall" in out
