"""Malformed and hostile dataset files: every failure is a DataError naming the file.

The property tests feed the public-format loaders mutated copies of valid files (non-UTF-8
bytes, integers over Python's 4,300-digit conversion limit, nesting deeper than the JSON
parser's recursion limit, file names over 255 bytes, NUL bytes, wrong types) with a fixed seed
and a bounded number of examples, so they run in CI in seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from causalvl.datasets import (
    load_nlvr,
    load_nlvr2,
    load_sugarcrepe,
    load_valse,
    load_vqacp,
    load_winoground,
)
from causalvl.datasets._common import iter_csv, iter_jsonl, read_json
from causalvl.errors import DataError

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# raw JSON literals that break naive readers
HUGE_INT = "9" * 5000
DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJ = '{"a":' * 3000 + "1" + "}" * 3000
LONG_NAME = '"' + "n" * 300 + '"'
NASTY = [
    HUGE_INT,
    "-" + HUGE_INT,
    DEEP,
    DEEP_OBJ,
    LONG_NAME,
    '"a/' + "b" * 260 + '/c.png"',
    '"a\\u0000b"',
    '"a**b"',
    '"../../x"',
    '"[x"',
    "1e400",
    "NaN",
    "-Infinity",
    "null",
    "true",
    "[]",
    "{}",
    '""',
    '"   "',
    "0",
    "-1",
    "3.5",
    '["a", 1]',
    '{"caption": 2}',
    '"\\ud800"',
]

WINO = {
    "id": 0,
    "image_0": "ex_0_img_0",
    "image_1": "ex_0_img_1",
    "caption_0": "an old person kisses a young person",
    "caption_1": "a young person kisses an old person",
    "tag": "Object",
}
NLVR = {
    "sentence": "There are two towers.",
    "label": "false",
    "identifier": "77-0",
    "directory": "3",
}
NLVR2 = {
    "sentence": "One image shows two acorns.",
    "label": "False",
    "identifier": "dev-850-0-0",
    "left_url": "https://example.org/a.jpg",
    "directory": "1",
}
VALSE = {
    "dataset": "SWiG",
    "image_file": "exercising_255.jpg",
    "caption": "A man exercises his torso.",
    "foil": "A torso exercises for a man.",
    "mturk": {"foil": 0, "caption": 3, "other": 0},
}
SUGAR = {"filename": "000000397133.jpg", "caption": "A man.", "negative_caption": "A woman."}
VQA_Q = {"question_id": 1, "image_id": 9, "question": "What?", "coco_split": "val2014"}
VQA_A = {
    "question_id": 1,
    "question_type": "what",
    "answer_type": "other",
    "multiple_choice_answer": "cat",
    "answers": [{"answer": "cat"}],
}


def _mutate(record: dict, data: st.DataObject) -> str:
    """The JSON text of ``record`` with some fields replaced by raw hostile literals."""
    rec = dict(record)
    slots: dict[str, str] = {}
    keys = sorted(rec) + ["extra"]
    for i in range(data.draw(st.integers(0, 3), label="n_mutations")):
        key = data.draw(st.sampled_from(keys), label="key")
        action = data.draw(st.sampled_from(["nasty", "drop", "text"]), label="action")
        if action == "drop":
            rec.pop(key, None)
            continue
        marker = f"@@{i}@@"
        rec[key] = marker
        if action == "nasty":
            slots[f'"{marker}"'] = data.draw(st.sampled_from(NASTY), label="literal")
        else:
            slots[f'"{marker}"'] = json.dumps(data.draw(st.text(max_size=20), label="text"))
    text = json.dumps(rec)
    for marker, literal in slots.items():
        text = text.replace(marker, literal)
    return text


def _content(data: st.DataObject, texts: list[str], *, lines: bool) -> bytes:
    body = ("\n" if lines else ", ").join(texts)
    blob = body.encode("utf-8", "surrogatepass")
    kind = data.draw(st.sampled_from(["mutated", "mutated", "bytes", "splice"]), label="kind")
    if kind == "bytes":
        return data.draw(st.binary(max_size=200), label="bytes")
    if kind == "splice":  # invalid UTF-8 or garbage spliced into an otherwise valid file
        junk = data.draw(
            st.sampled_from([b"\xff\xfe", b"\xc3", b"\x80abc", b"\x00", b"\xed\xa0\x80", b"{"]),
            label="junk",
        )
        at = data.draw(st.integers(0, len(blob)), label="at")
        return blob[:at] + junk + blob[at:]
    return blob


def _check(call) -> None:
    try:
        call()
    except DataError as exc:
        assert str(exc)  # the message names the file (checked in the targeted tests below)
    except Exception as exc:  # pragma: no cover - what the property forbids
        pytest.fail(f"raw {type(exc).__name__} escaped instead of DataError: {exc!s:.300}")


def _jsonl_case(data: st.DataObject, base: dict, **extra: dict) -> bytes:
    n = data.draw(st.integers(1, 3), label="n_records")
    return _content(data, [_mutate(base, data) for _ in range(n)], lines=True)


def _dict_case(data: st.DataObject, base: dict) -> bytes:
    n = data.draw(st.integers(1, 2), label="n_records")
    texts = [f'"r{i}": {_mutate(base, data)}' for i in range(n)]
    blob = _content(data, texts, lines=False)
    return b"{" + blob + b"}" if blob.startswith(b'"r0"') else blob


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize(
    "loader, base",
    [
        (load_winoground, WINO),
        (load_nlvr, NLVR),
        (load_nlvr, {k: v for k, v in NLVR.items() if k != "directory"}),
        (load_nlvr2, NLVR2),
    ],
    ids=["winoground", "nlvr", "nlvr_flat", "nlvr2"],
)
def test_fuzz_jsonl_loaders(loader, base, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "examples.jsonl"
        path.write_bytes(_jsonl_case(data, base))
        images = Path(d) / "images"
        images.mkdir()
        _check(lambda: loader(path, image_root=images, load_images=True))


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize(
    "loader, base", [(load_valse, VALSE), (load_sugarcrepe, SUGAR)], ids=["valse", "sugarcrepe"]
)
def test_fuzz_dict_loaders(loader, base, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "piece.json"
        path.write_bytes(_dict_case(data, base))
        _check(lambda: loader(path, image_root=d, load_images=True))


@FUZZ
@given(data=st.data())
def test_fuzz_vqacp(data):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name, base in (("questions", VQA_Q), ("annotations", VQA_A)):
            blob = _content(data, [_mutate(base, data)], lines=False)
            (root / f"vqacp_v2_train_{name}.json").write_bytes(b"[" + blob + b"]")
        _check(lambda: load_vqacp(root, split="train", image_root=root, load_images=True))


# -- targeted regressions: each names the file and the line or record -------------------------
def test_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_bytes(json.dumps(NLVR).encode() + b"\n" + b'{"sentence": "\xff"}\n')
    with pytest.raises(DataError, match=r"dev\.json:2: not UTF-8"):
        load_nlvr(path)


def test_huge_integer_and_deep_nesting_name_the_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(NLVR) + "\n" + '{"sentence": ' + HUGE_INT + "}\n")
    with pytest.raises(DataError, match=r"dev\.json:2: invalid JSON value"):
        load_nlvr(path)
    path.write_text(DEEP + "\n")
    with pytest.raises(DataError, match=r"dev\.json:1: the JSON is nested too deeply"):
        load_nlvr(path)
    (tmp_path / "p.json").write_text('{"x": ' + DEEP_OBJ + "}")
    with pytest.raises(DataError, match=r"load_valse: .*p\.json: the JSON is nested too deeply"):
        load_valse(tmp_path / "p.json")


def test_overlong_file_names_are_data_errors(tmp_path):
    rec = dict(SUGAR, filename="f" * 300 + ".jpg")
    (tmp_path / "s.json").write_text(json.dumps({"0": rec}))
    rows = load_sugarcrepe(tmp_path / "s.json", image_root=tmp_path, load_images=True)
    assert "image" not in rows[0]  # the image cannot exist: no OSError, no decode attempt
    with pytest.raises(DataError, match="load_nlvr: cannot read|load_nlvr: no such file"):
        load_nlvr(tmp_path / ("x" * 300 + ".json"))
    rec = dict(NLVR, directory="d" * 300)
    (tmp_path / "n.json").write_text(json.dumps(rec) + "\n")
    assert load_nlvr(tmp_path / "n.json", image_root=tmp_path)[0]["image_paths"] == []
    rec = dict(WINO, image_0="a\x00b")
    (tmp_path / "w.jsonl").write_text(json.dumps(rec) + "\n")
    assert load_winoground(tmp_path / "w.jsonl", load_images=True)[0]["image_0_path"]


def test_shared_readers(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"a": 1}')
    assert read_json(tmp_path / "a.json", "reader") == {"a": 1}
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf[1]")  # a byte-order mark is accepted
    assert read_json(tmp_path / "b.json", "reader") == [1]
    with pytest.raises(DataError, match=r"reader: cannot read|reader: no such file"):
        read_json(tmp_path, "reader")
    (tmp_path / "c.jsonl").write_bytes(b'{"a": 1}\n\n[2]\n')
    with pytest.raises(DataError, match=r"c\.jsonl:3: expected a JSON object, got list"):
        list(iter_jsonl(tmp_path / "c.jsonl", "reader"))
    (tmp_path / "d.csv").write_bytes(b"a,b\n1,2\n3\n")
    assert list(iter_csv(tmp_path / "d.csv", "reader")) == [
        (2, {"a": "1", "b": "2"}),
        (3, {"a": "3", "b": ""}),
    ]
    (tmp_path / "e.csv").write_bytes(b"a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"e\.csv:2: 3 fields, the header has 2"):
        list(iter_csv(tmp_path / "e.csv", "reader"))
    (tmp_path / "f.csv").write_bytes(b"a\n\xff\n")
    with pytest.raises(DataError, match=r"f\.csv: line 2: not UTF-8"):
        list(iter_csv(tmp_path / "f.csv", "reader"))
    (tmp_path / "g.csv").write_bytes(b"a\n" + b'"' + b"x" * 200_000 + b'"\n')
    with pytest.raises(DataError, match=r"g\.csv:\d+: malformed CSV"):
        list(iter_csv(tmp_path / "g.csv", "reader"))
    (tmp_path / "h.csv").write_bytes(b"")
    with pytest.raises(DataError, match="no header row"):
        list(iter_csv(tmp_path / "h.csv", "reader"))


def test_nlvr_identifier_is_data_not_a_glob_pattern(tmp_path):
    (tmp_path / "images").mkdir()
    for ident in ("a**b", "x/../../y", "[z"):
        rec = {k: v for k, v in NLVR.items() if k != "directory"}
        (tmp_path / "n.json").write_text(json.dumps(dict(rec, identifier=ident)) + "\n")
        assert (
            load_nlvr(tmp_path / "n.json", image_root=tmp_path / "images")[0]["image_paths"] == []
        )
    (tmp_path / "images" / "dev-a**b-0.png").write_bytes(b"")
    rec = {k: v for k, v in NLVR.items() if k != "directory"}
    (tmp_path / "n.json").write_text(json.dumps(dict(rec, identifier="a**b")) + "\n")
    [row] = load_nlvr(tmp_path / "n.json", image_root=tmp_path / "images")
    assert row["image_paths"] == [str(tmp_path / "images" / "dev-a**b-0.png")]
