"""benchmarks/bench_catt.py runs end to end at smoke sizes and renders a numeric table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_quick_catt_benchmark_has_every_arm_and_only_numbers() -> None:
    import bench_catt

    result = bench_catt.run([0], quick=True)
    assert list(result["methods"]) == list(bench_catt.METHODS)
    assert result["seeds"] == [0] and len(result["per_seed"]) == 1
    for row in result["methods"].values():
        for key in ("id", "ood", "gap_closed"):
            assert 0.0 <= row[key]["mean"] <= 1.0 or key == "gap_closed"
    text = bench_catt.render_markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert [r.split("|")[1].strip() for r in rows] == list(bench_catt.METHODS)
    cell = re.compile(r"^-?\d+\.\d+( ± -?\d+\.\d+)?$")
    assert all(cell.match(c.strip()) for r in rows for c in r.strip("|").split("|")[1:])
