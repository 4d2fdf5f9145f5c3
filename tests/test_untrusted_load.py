"""``causalvl.load`` on hostile or corrupted folders: every failure is a CheckpointError.

The property test mutates a valid saved folder (hostile literals in the config, non-UTF-8
bytes, flipped bits in the weights) with a fixed seed and a bounded number of examples.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import causalvl
from causalvl.errors import CheckpointError


def _net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return causalvl.models.TinyVQA(vocab_size=20, num_answers=4, image_size=8, hidden=16)


def _saved(tmp: Path, cfg=None) -> Path:
    net = _net()
    cfg = cfg if cfg is not None else causalvl.CFVQAConfig(hidden_sizes=(8,))
    causalvl.intervene(net, cfg).save_pretrained(tmp)
    return tmp


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "intervention_config.json"
    meta = json.loads(path.read_text())
    meta["interventions"][0].update(changes)
    path.write_text(json.dumps(meta))


# -- item 1: role strings from a file are never compiled as regular expressions ---------------------
def test_load_never_compiles_saved_targets(tmp_path, monkeypatch):
    folder = _saved(tmp_path)
    _edit_config(folder, question_role="question_enc.*")
    import causalvl.adapters.base as base

    def no_regex(*args, **kwargs):
        raise AssertionError("load() compiled a target read from the file as a regex")

    monkeypatch.setattr(base, "re", SimpleNamespace(compile=no_regex, error=re.error))
    with pytest.raises(CheckpointError, match="never as regular expressions.*looks like a regex"):
        causalvl.load(folder, _net())


def test_catastrophic_regex_role_fails_fast(tmp_path):
    folder = _saved(tmp_path)
    _edit_config(folder, question_role="(.*)*Z", vision_role="(a|a|aa)*(b|c)+$")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=re.escape("'(.*)*Z' matched no module")):
        causalvl.load(folder, _net())
    assert time.perf_counter() - start < 5.0


def test_regex_targets_from_code_still_work_and_are_saved_as_exact_paths(tmp_path):
    net = _net()
    cfg = causalvl.CFVQAConfig(hidden_sizes=(8,), question_role=r"question_enc\w+")
    vl = causalvl.intervene(net, cfg)  # a regex in code is the user's own
    vl.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "intervention_config.json").read_text())
    assert saved["interventions"][0]["question_role"] == "question_encoder"
    assert vl.configs[0].question_role == r"question_enc\w+"  # the in-memory config is untouched
    back = causalvl.load(tmp_path, net)
    batch = {"pixel_values": torch.rand(2, 3, 8, 8), "input_ids": torch.randint(1, 20, (2, 5))}
    vl.eval(), back.eval()
    torch.testing.assert_close(back(**batch).logits, vl(**batch).logits)
    # role names and suffixes from a file still resolve
    _edit_config(tmp_path, question_role="question_encoder", vision_role="0")
    with pytest.raises(CheckpointError, match="'0' matches 3 modules"):
        causalvl.load(tmp_path, net)
    _edit_config(tmp_path, vision_role="net")  # the dotted suffix of vision_encoder.net
    assert causalvl.load(tmp_path, net).configs[0].vision_role == "net"


# -- item 2: raw errors and unbounded sizes -------------------------------------------------------
@pytest.mark.parametrize(
    "raw, match",
    [
        (b'{"interventions": [{"type": "identity", "x": "\xff"}]}', "not UTF-8 text"),
        (b'{"interventions": [' + b"9" * 5000 + b"]}", "digits"),
        (b'{"interventions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"interventions": []}', "list is empty"),
        (b'{"interventions": 5}', "'interventions' list"),
        (b"[1, 2]", "'interventions' list"),
        (b'{"interventions": [5]}', r"interventions\[0\]"),
        (
            b'{"interventions": [{"type": "cfvqa", "hidden_sizes": "x"}]}',
            r"interventions\[0\].*hidden_sizes",
        ),
    ],
)
def test_malformed_config_files_are_checkpoint_errors(tmp_path, raw, match):
    folder = _saved(tmp_path)
    (folder / "intervention_config.json").write_bytes(raw)
    with pytest.raises(CheckpointError, match=match) as info:
        causalvl.load(folder, _net())
    assert "intervention_config.json" in str(info.value)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"hidden_sizes": [10**12]}, "hidden_sizes"),
        ({"num_answers": 10**12}, "num_answers"),
        ({"question_feature_dim": 10**9}, "question_feature_dim"),
        ({"hidden_sizes": [8] * 1000}, "hidden_sizes"),
    ],
)
def test_sizes_from_a_file_are_checked_before_anything_is_built(tmp_path, changes, field):
    folder = _saved(tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(CheckpointError, match=rf"interventions\[0\]\.{field}"):
        causalvl.load(folder, _net())


def test_building_errors_are_checkpoint_errors(tmp_path):
    folder = _saved(tmp_path)
    _edit_config(folder, question_role="no_such_module")
    with pytest.raises(CheckpointError, match="intervention_config.json.*no_such_module"):
        causalvl.load(folder, _net())


# -- weights: bit flips, dtypes, NaN ------------------------------------------------------------------
def _weights(folder: Path) -> Path:
    return folder / "intervention_weights.safetensors"


def test_bit_flipped_weights_are_refused(tmp_path):
    folder = _saved(tmp_path)
    data = bytearray(_weights(folder).read_bytes())
    data[-3] ^= 0x10  # one bit of the last float
    _weights(folder).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        causalvl.load(folder, _net())


def _rewrite(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(_weights(folder)))
    edit(tensors)
    save_file(tensors, str(_weights(folder)))  # no digest: an older or hand-made file


def test_wrong_dtype_and_nan_weights_are_refused(tmp_path):
    folder = _saved(tmp_path)
    key = "0_cfvqa.question.head.weight"
    _rewrite(folder, lambda t: t.update({key: t[key].to(torch.int32)}))
    with pytest.raises(CheckpointError, match="is torch.int32, the model expects torch.float32"):
        causalvl.load(folder, _net())
    folder = _saved(tmp_path / "nan")
    _rewrite(folder, lambda t: t.update({key: torch.full_like(t[key], float("nan"))}))
    with pytest.raises(CheckpointError, match="16 NaN value"):
        causalvl.load(folder, _net())
    folder = _saved(tmp_path / "f64")
    _rewrite(folder, lambda t: t.update({key: t[key].double()}))
    with pytest.warns(UserWarning, match="saved as torch.float64 and is cast"):
        causalvl.load(folder, _net())


# -- property: whatever the bytes, load() succeeds or raises CheckpointError ---------------------------
NASTY = [
    "9" * 5000,
    "[" * 3000 + "]" * 3000,
    '"(.*)*Z"',
    '"(a|aa)*b"',
    '"' + "x" * 300 + '"',
    '"vision_features"',
    '"encoder"',
    "1e400",
    "-1",
    "0",
    "1000000000000",
    "null",
    "true",
    "[]",
    "[1000000000000]",
    "{}",
    '"cfvqa"',
    '"identity"',
    '"prior_subtraction"',
    '"\\ud800"',
]


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    return _saved(folder), _net()


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_load(saved_folder, data):
    folder, net = saved_folder
    meta = json.loads((folder / "intervention_config.json").read_text())
    cfg = meta["interventions"][0]
    slots = {}
    for i in range(data.draw(st.integers(0, 3), label="n_mutations")):
        key = data.draw(st.sampled_from(sorted(cfg) + ["extra"]), label="key")
        marker = f"@@{i}@@"
        cfg[key] = marker
        slots[f'"{marker}"'] = data.draw(st.sampled_from(NASTY), label="literal")
    text = json.dumps(meta)
    for marker, literal in slots.items():
        text = text.replace(marker, literal)
    config = text.encode("utf-8", "surrogatepass")
    weights = bytearray(_weights(folder).read_bytes())
    kind = data.draw(st.sampled_from(["config", "config", "flip", "truncate", "bytes"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(weights) - 1), label="at")
        weights[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif kind == "truncate":
        weights = weights[: data.draw(st.integers(0, len(weights) - 1), label="cut")]
    elif kind == "bytes":
        config = data.draw(st.binary(max_size=100), label="bytes")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "intervention_config.json").write_bytes(config)
        _weights(Path(d)).write_bytes(bytes(weights))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                causalvl.load(d, net)
            except CheckpointError as exc:
                assert str(exc)
            except Exception as exc:  # pragma: no cover - what the property forbids
                pytest.fail(f"raw {type(exc).__name__} escaped load(): {exc!s:.300}")


def test_confounder_dictionary_load_turns_deep_nesting_into_checkpoint_error(tmp_path):
    folder = causalvl.ConfounderDictionary(torch.eye(2)).save(tmp_path)
    (folder / "confounders.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="corrupted or not a confounder dictionary"):
        causalvl.ConfounderDictionary.load(folder)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b'{"epochs": "\xff"}', "cannot read"),
        (b'{"epochs": ' + b"9" * 5000 + b"}", "invalid JSON value"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_config_files_with_hostile_bytes_are_config_errors(tmp_path, raw, match):
    (tmp_path / "train.json").write_bytes(raw)
    with pytest.raises(causalvl.ConfigError, match=match):
        causalvl.TrainConfig.from_json(tmp_path / "train.json")
    with pytest.raises(causalvl.ConfigError, match="cannot read|no such file"):
        causalvl.TrainConfig.from_json(tmp_path / ("x" * 300 + ".json"))
