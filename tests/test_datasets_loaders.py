"""Public-benchmark loaders: fixtures in the published formats, and malformed records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from causalvl.datasets import (
    load_image,
    load_nlvr,
    load_nlvr2,
    load_sugarcrepe,
    load_valse,
    load_vqacp,
    load_winoground,
    vqa_soft_scores,
)
from causalvl.datasets.loaders import vqa_targets
from causalvl.errors import DataError


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def _png(path: Path, value: float = 0.5) -> None:
    import matplotlib.image as mpimg

    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, np.full((4, 6, 3), value, dtype=np.float32))


# ---------------------------------------------------------------------------------------
# Winoground
# ---------------------------------------------------------------------------------------

WINO = [
    {
        "id": 0,
        "image_0": "ex_0_img_0",
        "image_1": "ex_0_img_1",
        "caption_0": "an old person kisses a young person",
        "caption_1": "a young person kisses an old person",
        "tag": "Object",
        "secondary_tag": "",
        "num_main_preds": 1,
        "collapsed_tag": "Object",
    },
    {
        "id": 1,
        "image_0": "ex_1_img_0",
        "image_1": "ex_1_img_1",
        "caption_0": "the taller person hugs the shorter person",
        "caption_1": "the shorter person hugs the taller person",
        "tag": "Relation",
        "secondary_tag": "Symbolic",
        "num_main_preds": 1,
        "collapsed_tag": "Relation",
    },
]


def test_winoground(tmp_path):
    _jsonl(tmp_path / "examples.jsonl", WINO)
    _png(tmp_path / "images" / "ex_0_img_0.png")
    rows = load_winoground(tmp_path, load_images=True)
    assert [r["id"] for r in rows] == [0, 1]
    assert rows[0]["caption_1"] == WINO[0]["caption_1"] and rows[1]["tag"] == "Relation"
    assert rows[0]["image_0_path"].endswith("images/ex_0_img_0.png")
    assert rows[0]["image_0"] == "ex_0_img_0" and rows[0]["image_0_pixels"].shape == (3, 4, 6)
    assert "image_1_pixels" not in rows[0] and rows[1]["image_1_path"].endswith("ex_1_img_1.png")


def test_winoground_loads_existing_images_only(tmp_path):
    _jsonl(tmp_path / "examples.jsonl", WINO[:1])
    _png(tmp_path / "images" / "ex_0_img_1.png", 0.25)
    (row,) = load_winoground(
        tmp_path / "examples.jsonl", image_root=tmp_path / "images", load_images=True
    )
    assert row["image_1_pixels"].shape == (3, 4, 6)
    assert abs(float(row["image_1_pixels"].mean()) - 0.25) < 0.01
    assert "image_0_pixels" not in row  # not on disk: only the name and the path


def test_winoground_rejects_malformed(tmp_path):
    bad = dict(WINO[0])
    del bad["caption_1"]
    _jsonl(tmp_path / "examples.jsonl", [WINO[1], bad])
    with pytest.raises(DataError, match=r"examples\.jsonl:2: missing field 'caption_1'"):
        load_winoground(tmp_path)
    (tmp_path / "examples.jsonl").write_text(json.dumps(WINO[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r":2: invalid JSON"):
        load_winoground(tmp_path)
    _jsonl(tmp_path / "examples.jsonl", [WINO[0], WINO[0]])
    with pytest.raises(DataError, match="duplicate id"):
        load_winoground(tmp_path)
    with pytest.raises(DataError, match="examples.jsonl"):
        load_winoground(tmp_path / "missing")


# ---------------------------------------------------------------------------------------
# VQA-CP v2
# ---------------------------------------------------------------------------------------


def _vqacp(tmp_path: Path, questions: list, annotations: list) -> None:
    (tmp_path / "vqacp_v2_train_questions.json").write_text(json.dumps(questions))
    (tmp_path / "vqacp_v2_train_annotations.json").write_text(json.dumps(annotations))


QS = [
    {
        "image_id": 9,
        "question": "What color is the bus?",
        "question_id": 90,
        "coco_split": "train2014",
    },
    {"image_id": 9, "question": "Is it raining?", "question_id": 91, "coco_split": "train2014"},
    {"image_id": 42, "question": "Is this a cat?", "question_id": 420, "coco_split": "val2014"},
]


def _ann(qid: int, qtype: str, atype: str, answers: list[str]) -> dict:
    return {
        "question_type": qtype,
        "multiple_choice_answer": max(set(answers), key=answers.count),
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
            for i, a in enumerate(answers)
        ],
        "image_id": 9,
        "answer_type": atype,
        "question_id": qid,
    }


ANNS = [
    _ann(91, "is it", "yes/no", ["no"] * 9 + ["yes"]),
    _ann(90, "what color is the", "other", ["red"] * 2 + ["blue"] * 8),
    _ann(420, "is this a", "yes/no", ["yes"] * 10),
]


def test_vqacp(tmp_path):
    _vqacp(tmp_path, QS, ANNS)
    rows = load_vqacp(tmp_path, "train", image_root=tmp_path / "coco")
    assert [r["question_id"] for r in rows] == [90, 91, 420]
    r0 = rows[0]
    assert r0["question_type"] == "what color is the" and r0["multiple_choice_answer"] == "blue"
    assert r0["scores"] == {"red": pytest.approx(2 / 3), "blue": 1.0}
    assert rows[1]["scores"]["yes"] == pytest.approx(1 / 3)
    assert rows[2]["image_path"].endswith("val2014/COCO_val2014_000000000042.jpg")
    assert vqa_soft_scores(["A ", "a", "b"]) == {
        "a": pytest.approx(2 / 3),
        "b": pytest.approx(1 / 3),
    }
    t = vqa_targets(rows, min_count=1)
    assert t["labels"].shape == (3, len(t["answers"])) and t["prior"].shape == (
        3,
        len(t["answers"]),
    )
    assert t["question_types"] == ["is it", "is this a", "what color is the"]
    j = t["answers"].index("blue")
    assert t["labels"][0, j] == 1.0
    assert float(t["prior"].sum(1).sub(1).abs().max()) < 1e-6


def test_vqacp_rejects_malformed(tmp_path):
    _vqacp(tmp_path, QS, ANNS[:2])
    with pytest.raises(DataError, match=r"entry 2 \(question_id=420\): no annotation"):
        load_vqacp(tmp_path)
    bad = [dict(QS[0]), QS[1]]
    del bad[0]["question"]
    _vqacp(tmp_path, bad, ANNS)
    with pytest.raises(
        DataError, match=r"questions\.json: entry 0 \(question_id=90\): missing field 'question'"
    ):
        load_vqacp(tmp_path)
    anns = [dict(ANNS[0], answers=[{"answer_id": 1}]), *ANNS[1:]]
    _vqacp(tmp_path, QS, anns)
    with pytest.raises(
        DataError, match=r"annotations\.json: entry 0 \(question_id=91\): answers\[0\]"
    ):
        load_vqacp(tmp_path)
    _vqacp(tmp_path, {"questions": QS}, ANNS)
    with pytest.raises(DataError, match="JSON list"):
        load_vqacp(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_vqacp(tmp_path, "test")


# ---------------------------------------------------------------------------------------
# VALSE, SugarCrepe
# ---------------------------------------------------------------------------------------

VALSE = {
    "actions_test_0": {
        "dataset": "SWiG",
        "original_split": "test",
        "dataset_idx": "exercising_255.jpg",
        "linguistic_phenomena": "actions",
        "image_file": "exercising_255.jpg",
        "caption": "A man exercises his torso.",
        "classes": "man",
        "classes_foil": "torso",
        "mturk": {"foil": 0, "caption": 3, "other": 0},
        "foil": "A torso exercises for a man.",
    },
    "existence_1": {
        "dataset": "visual7w",
        "image_file": "v7w_2390.jpg",
        "caption": "There are no people.",
        "foils": ["There are people."],
        "mturk": {"foil": 2, "caption": 1, "other": 0},
    },
}


def test_valse(tmp_path):
    (tmp_path / "actions.json").write_text(json.dumps(VALSE))
    _png(tmp_path / "img" / "SWiG" / "exercising_255.jpg".replace(".jpg", ".png"))
    rows = load_valse(tmp_path / "actions.json", image_root=tmp_path / "img")
    assert [r["id"] for r in rows] == ["actions_test_0", "existence_1"]
    assert rows[0]["foils"] == ["A torso exercises for a man."] and rows[0]["valid"] is True
    assert rows[1]["foil"] == "There are people." and rows[1]["valid"] is False
    assert rows[0]["image_path"].endswith("exercising_255.jpg")
    assert [r["id"] for r in load_valse(tmp_path / "actions.json", valid_only=True)] == [
        "actions_test_0"
    ]


def test_valse_rejects_malformed(tmp_path):
    bad = {"x": {k: v for k, v in VALSE["actions_test_0"].items() if k != "foil"}}
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"record 'x': missing field 'foil'"):
        load_valse(tmp_path / "p.json")
    bad = {"x": dict(VALSE["existence_1"], foils=[])}
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"record 'x': field 'foils'"):
        load_valse(tmp_path / "p.json")
    (tmp_path / "p.json").write_text(json.dumps([VALSE["existence_1"]]))
    with pytest.raises(DataError, match="mapping ids to records"):
        load_valse(tmp_path / "p.json")


SUGAR = {
    "0": {
        "filename": "000000397133.jpg",
        "caption": "A man is in a kitchen making pizzas.",
        "negative_caption": "A man is in a kitchen eating pizzas.",
    },
    "1": {
        "filename": "000000037777.jpg",
        "caption": "The dining table near the kitchen has a bowl of fruit on it.",
        "negative_caption": "The dining table near the kitchen has a bowl of vegetables on it.",
    },
}


def test_sugarcrepe(tmp_path):
    (tmp_path / "replace_att.json").write_text(json.dumps(SUGAR))
    rows = load_sugarcrepe(tmp_path / "replace_att.json", image_root=tmp_path / "val2017")
    assert [r["id"] for r in rows] == ["0", "1"] and rows[0]["category"] == "replace_att"
    assert rows[1]["negative_caption"].endswith("vegetables on it.")
    assert rows[0]["image_path"].endswith("val2017/000000397133.jpg") and "image" not in rows[0]
    bad = {"0": {"filename": "a.jpg", "caption": "x", "negative_caption": ""}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"record '0': field 'negative_caption' is empty"):
        load_sugarcrepe(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(
        json.dumps({"0": {"filename": 3, "caption": "x", "negative_caption": "y"}})
    )
    with pytest.raises(DataError, match="field 'filename' must be str"):
        load_sugarcrepe(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------
# NLVR, NLVR2
# ---------------------------------------------------------------------------------------

NLVR = [
    {
        "sentence": "There is a black square touching the wall.",
        "label": "true",
        "identifier": "1304-2",
        "directory": "61",
        "evals": {"r0": "true"},
        "structured_rep": [
            [{"y_loc": 21, "size": 20, "type": "square", "x_loc": 27, "color": "Black"}]
        ],
    },
    {
        "sentence": "There are two towers.",
        "label": "false",
        "identifier": "77-0",
        "directory": "3",
        "evals": {},
    },
]


def test_nlvr(tmp_path):
    path = _jsonl(tmp_path / "dev.json", NLVR)
    _png(tmp_path / "images" / "61" / "dev-1304-2-0.png")
    with pytest.warns(UserWarning, match="no image found for 1 of 2 sentences"):
        rows = load_nlvr(path, image_root=tmp_path / "images", load_images=True)
    assert [r["label"] for r in rows] == [True, False] and [r["labels"] for r in rows] == [1, 0]
    assert (
        rows[0]["image_paths"][0].endswith("61/dev-1304-2-0.png") and rows[0]["image"].shape[0] == 3
    )
    assert rows[1]["image_path"] is None and rows[0]["structured_rep"][0][0]["type"] == "square"
    _jsonl(path, [NLVR[0], dict(NLVR[1], label="maybe")])
    with pytest.raises(DataError, match=r"dev\.json:2: field 'label' must be 'true' or 'false'"):
        load_nlvr(path)
    _jsonl(path, [{k: v for k, v in NLVR[0].items() if k != "sentence"}])
    with pytest.raises(DataError, match=r"dev\.json:1: missing field 'sentence'"):
        load_nlvr(path)


NLVR2 = [
    {
        "validation": {"AMCT5ON8WHY1B": "True"},
        "sentence": "One image shows exactly two brown acorns in back-to-back caps on green foliage.",
        "left_url": "https://example.org/acorn-a.jpg",
        "writer": "103",
        "label": "False",
        "right_url": "https://example.org/acorn-b.jpg",
        "synset": "n12267677",
        "query": "acorn7",
        "identifier": "dev-850-0-0",
        "extra_validations": {"AXSMXADIHN8HA": "False"},
    },
    {
        "sentence": "The left image contains twice the number of dogs as the right image.",
        "label": "True",
        "identifier": "train-10171-0-0",
        "directory": 74,
        "left_url": "https://example.org/dog-a.jpg",
        "right_url": "https://example.org/dog-b.jpg",
    },
]


def test_nlvr2(tmp_path):
    path = _jsonl(tmp_path / "dev.json", NLVR2)
    _png(tmp_path / "images" / "74" / "train-10171-0-img1.png")
    rows = load_nlvr2(path, image_root=tmp_path / "images", load_images=True)
    assert [r["label"] for r in rows] == [False, True] and rows[0]["synset"] == "n12267677"
    assert rows[0]["image_left_path"].endswith("dev-850-0-img0.png")
    assert rows[1]["image_right_path"].endswith("74/train-10171-0-img1.png")
    assert rows[1]["image_right"].shape[0] == 3 and "image_left" not in rows[1]
    _jsonl(path, [dict(NLVR2[0], identifier="dev850")])
    with pytest.raises(DataError, match=r"dev\.json:1: identifier 'dev850'"):
        load_nlvr2(path)
    _jsonl(path, [NLVR2[1], {k: v for k, v in NLVR2[0].items() if k != "label"}])
    with pytest.raises(DataError, match=r"dev\.json:2: missing field 'label'"):
        load_nlvr2(path)
    _jsonl(path, [dict(NLVR2[0], left_url=None)])
    with pytest.raises(DataError, match="left_url"):
        load_nlvr2(path)


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not decode"):
        load_image(tmp_path / "x.png")
