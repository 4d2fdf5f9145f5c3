"""WordTokenizer: vocabulary, fixed-length encoding, Hugging Face export, persistence."""

from __future__ import annotations

import pytest
import torch

from causalvl.datasets import WordTokenizer
from causalvl.errors import ConfigError, DataError

TEXTS = ["What digit is this?", "is this a 3?", "is this an 8?", "what colour is the digit?"]


def test_vocab_specials_and_determinism():
    tok = WordTokenizer.from_texts(TEXTS, max_length=8)
    assert tok.vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert tok.vocab == WordTokenizer.from_texts(list(TEXTS), max_length=8).vocab
    assert "what" in tok.token_to_id and "What" not in tok.token_to_id
    assert WordTokenizer.from_texts(TEXTS, min_freq=2).vocab[4:] == [
        "?",
        "is",
        "this",
        "digit",
        "what",
    ]


def test_encode_pads_truncates_and_decodes():
    tok = WordTokenizer.from_texts(TEXTS, max_length=6)
    ids, mask = tok.encode("is this a 3?")
    assert len(ids) == len(mask) == 6
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and mask == [1] * 6
    ids, mask = tok.encode("is this a 3 or an 8 or a 5?")  # truncated, [SEP] kept
    assert ids[-1] == tok.sep_token_id and sum(mask) == 6
    enc = tok(["is it a 7?", "what digit"], max_length=8)
    assert enc["input_ids"].shape == (2, 8) and enc["input_ids"].dtype == torch.long
    assert enc["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tok.decode(enc["input_ids"][0]) == "is [UNK] a [UNK] ?"
    assert tok.decode(tok(["what digit"])["input_ids"][0]) == "what digit"


def test_hf_export_matches():
    tok = WordTokenizer.from_texts(TEXTS, max_length=10)
    hf = tok.to_hf()
    for text in [*TEXTS, "is this a 9?", "WHAT colour??"]:
        ids, mask = tok.encode(text)
        out = hf(text, padding="max_length", truncation=True, max_length=10)
        assert out["input_ids"] == ids, text
        assert out["attention_mask"] == mask
    assert hf.pad_token_id == 0 and hf.unk_token_id == 1 and len(hf) == tok.vocab_size


def test_save_load_roundtrip(tmp_path):
    tok = WordTokenizer.from_texts(TEXTS, max_length=7)
    tok.save(tmp_path / "tok.json")
    back = WordTokenizer.load(tmp_path / "tok.json")
    assert back.vocab == tok.vocab and back.max_length == 7
    with pytest.raises(DataError, match="no such file"):
        WordTokenizer.load(tmp_path / "missing.json")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="max_length"):
        WordTokenizer.from_texts(TEXTS, max_length=2)
    with pytest.raises(ConfigError, match="must start with"):
        WordTokenizer(["a", "b"])
    with pytest.raises(DataError, match="strings"):
        WordTokenizer.from_texts(["ok", 3])
