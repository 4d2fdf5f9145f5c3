"""Imports point one way: every module of causalvl imports only from its own package and from
the layers below it (docs/architecture.md draws the same picture)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "causalvl"

#: lowest first; a module may import from its own top-level package and from earlier layers
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors", "_lazy"),
    ("config", "outputs", "runtime", "progress", "batch"),
    ("losses",),
    ("pretrained",),
    ("datasets",),
    ("adapters",),
    ("hooks",),
    ("interventions",),
    ("wrapper", "models"),
    ("diagnostics",),
    ("training", "decoding"),
    ("reports",),
    ("efficacy",),
    ("demo",),
    ("runs",),
    ("cli",),
    ("__main__", "__init__", "model"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, causalvl-relative module)`` of every import in ``path``, also inside functions."""
    parts = _module_name(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:
                    found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
            elif node.module and node.module.split(".")[0] == "causalvl":
                rest = node.module.split(".")[1:]
                if rest:
                    found.append((node.lineno, ".".join(rest)))
                else:
                    found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("causalvl."):
                    found.append((node.lineno, alias.name.split(".", 1)[1]))
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = _module_name(path)[0]
        for line, target in _imports(path):
            theirs = target.split(".")[0]
            if theirs not in RANK:  # a name imported from the top level, e.g. __version__
                theirs = "__init__"
            if mine == theirs:
                continue
            if RANK[theirs] >= RANK[mine]:
                rel = path.relative_to(PACKAGE.parent)
                out.append(f"{rel}:{line} imports causalvl.{target} (layer of {theirs!r})")
    return out


def test_every_module_has_a_layer():
    tops = {_module_name(p)[0] for p in PACKAGE.rglob("*.py")}
    assert not tops - set(RANK), f"add these to LAYERS: {sorted(tops - set(RANK))}"


def test_imports_point_down_the_layers():
    bad = _violations()
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: an upward import in a module of a low layer is reported."""
    fake = tmp_path / "causalvl"
    (fake / "adapters").mkdir(parents=True)
    (fake / "errors.py").write_text("")
    (fake / "adapters" / "__init__.py").write_text("def f():\n    from ..training import Trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations() == [
        "causalvl/adapters/__init__.py:2 imports causalvl.training (layer of 'training')"
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "import causalvl",
        "from causalvl.config import InterventionConfig",
        "import causalvl.batch, causalvl.losses, causalvl.runtime",
    ],
)
def test_light_imports_do_not_load_transformers(statement):
    code = f"import sys\n{statement}\nassert 'transformers' not in sys.modules, statement"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "statement",
    [
        "import causalvl; causalvl.LMHConfig(); causalvl.CounterfactualDecodingConfig()",
        "from causalvl.interventions.lmh import LMHConfig, DEFAULT_ENTROPY_WEIGHT",
        "from causalvl.interventions.cfvqa import CFVQAConfig, CounterfactualConfig",
        "import causalvl; causalvl.BackdoorConfig(num_prototypes=2, feature_dim=3)",
    ],
)
def test_configs_do_not_load_torch(statement):
    code = f"import sys\n{statement}\nassert 'torch' not in sys.modules, {statement!r}"
    subprocess.run([sys.executable, "-c", code], check=True)
