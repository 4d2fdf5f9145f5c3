"""The public API: every exported name resolves, and docs/api.md is current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import causalvl

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_public_name_resolves():
    for name in causalvl.__all__:
        assert getattr(causalvl, name) is not None, name
    assert sorted(set(causalvl.__all__)) == sorted(causalvl.__all__)


def test_api_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    assert gen_api.main(["--check"]) == 0, "run: python docs/gen_api.py"
    text = (DOCS / "api.md").read_text()
    for name in causalvl.__all__:
        if name != "__version__":
            assert f"### `{name}`" in text


def test_docs_link_to_existing_files():
    import re

    for page in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_howto_snippets_run(tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "howto.md").read_text(), re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "howto.md", "exec"), {})
    assert (tmp_path / "confounders").is_dir()


def test_moved_names_resolve_with_a_warning_naming_their_home():
    import importlib
    import sys
    import warnings

    import pytest

    with pytest.warns(FutureWarning, match=r"causalvl\.models\.TinyVQA"):
        moved = causalvl.TinyVQA
    assert moved is causalvl.models.TinyVQA
    assert "TinyVQA" not in causalvl.__all__ and "models" in dir(causalvl)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        causalvl.NoSuchName  # noqa: B018
    sys.modules.pop("causalvl.model", None)
    with pytest.warns(FutureWarning, match="renamed causalvl.wrapper"):
        old = importlib.import_module("causalvl.model")
    assert old.intervene is causalvl.intervene
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spellings are quiet
        from causalvl.models import TinyVQA  # noqa: F401
        from causalvl.wrapper import intervene  # noqa: F401


def test_deprecation_warnings_point_at_the_callers_line():
    """However deep inside causalvl a deprecated spelling is reached (a config's generated
    __init__, from_dict, a module __getattr__, a deprecated module's import), the warning names
    the user's file and line."""
    import sys
    import warnings

    from causalvl.interventions.counterfactual import CounterfactualConfig

    sys.modules.pop("causalvl.model", None)
    vars(causalvl).pop("model", None)  # so the import below runs the module again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CounterfactualConfig(hidden_sizes=(8,))
        causalvl.GGEConfig(hidden=(8,))
        causalvl.InterventionConfig.from_dict({"type": "gge", "hidden": [8], "unknown": 1})
        causalvl.models.TinyVQA  # noqa: B018  (the new spelling: quiet)
        causalvl.TinyVQA  # noqa: B018
        from causalvl import model  # noqa: F401
        from causalvl.training import perturb_caption  # noqa: F401
    assert len({(w.lineno, str(w.message)) for w in caught}) == 7  # `from m import x` looks twice
    assert {w.filename for w in caught} == {__file__}
