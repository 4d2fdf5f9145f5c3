"""A word-level tokenizer built from a dataset's own text, exportable to Hugging Face.

Templated questions and captions use a small closed vocabulary, so a word-level tokenizer is
all a model needs; :meth:`WordTokenizer.to_hf` turns it into a
``transformers.PreTrainedTokenizerFast`` (via the ``tokenizers`` library) so Hugging Face
models (ViLT, CLIP text towers, ...) train on these datasets offline.

Encoding: lower-case, split into words and punctuation runs (``\\w+|[^\\w\\s]+``), map
unknown words to ``[UNK]``, wrap as ``[CLS] words [SEP]``, truncate and pad with ``[PAD]`` to
``max_length``.

Example::

    >>> tok = WordTokenizer.from_texts(["what digit is this?", "is it a 3?"], max_length=8)
    >>> enc = tok(["is it a 7?"])
    >>> enc["input_ids"].shape, enc["attention_mask"][0].tolist()
    (torch.Size([1, 8]), [1, 1, 1, 1, 1, 1, 1, 0])
    >>> tok.decode(enc["input_ids"][0])
    'is it a [UNK] ?'
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP)
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


def split_words(text: str, *, lowercase: bool = True) -> list[str]:
    """Split ``text`` into words and punctuation runs (the tokenizer's pre-tokenisation)."""
    if lowercase:
        text = text.lower()
    return _WORD_RE.findall(text)


class WordTokenizer:
    """Word-level tokenizer with ``[PAD]=0``, ``[UNK]=1``, ``[CLS]=2``, ``[SEP]=3``.

    Args:
        vocab: tokens in id order; must start with the four special tokens.
        max_length: every encoding is padded / truncated to this many ids (>= 3).
        lowercase: lower-case text before splitting.

    Build one from text with :meth:`from_texts`; see the module docstring for an example.
    """

    def __init__(
        self, vocab: Sequence[str], *, max_length: int = 16, lowercase: bool = True
    ) -> None:
        vocab = list(vocab)
        if tuple(vocab[:4]) != SPECIAL_TOKENS:
            raise ConfigError(
                f"WordTokenizer.vocab must start with {list(SPECIAL_TOKENS)}, got {vocab[:4]}; "
                "build it with WordTokenizer.from_texts(texts)."
            )
        if len(set(vocab)) != len(vocab):
            raise ConfigError("WordTokenizer.vocab has duplicate tokens.")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 3:
            raise ConfigError(
                f"WordTokenizer.max_length = {max_length!r} is invalid: must be an integer >= 3 "
                "([CLS], one word, [SEP])."
            )
        self.vocab: list[str] = vocab
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(vocab)}
        self.max_length = max_length
        self.lowercase = bool(lowercase)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        *,
        max_length: int = 16,
        min_freq: int = 1,
        lowercase: bool = True,
    ) -> WordTokenizer:
        """Build the vocabulary from ``texts``: words seen at least ``min_freq`` times.

        Words are ordered by decreasing frequency, then alphabetically, so the same texts
        always give the same ids.
        """
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(
                f"WordTokenizer.min_freq = {min_freq!r} is invalid: must be an int >= 1."
            )
        counts: Counter[str] = Counter()
        for t in texts:
            if not isinstance(t, str):
                raise DataError(
                    f"WordTokenizer.from_texts expects strings, got {type(t).__name__}."
                )
            counts.update(split_words(t, lowercase=lowercase))
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        words = [w for w in words if w not in SPECIAL_TOKENS]
        return cls([*SPECIAL_TOKENS, *words], max_length=max_length, lowercase=lowercase)

    # -- properties ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    pad_token_id = 0
    unk_token_id = 1
    cls_token_id = 2
    sep_token_id = 3

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"

    # -- encoding -----------------------------------------------------------------------
    def encode(self, text: str, *, max_length: int | None = None) -> tuple[list[int], list[int]]:
        """``(input_ids, attention_mask)`` of one text, each a list of ``max_length`` ints."""
        length = self.max_length if max_length is None else max_length
        words = split_words(text, lowercase=self.lowercase)[: length - 2]
        ids = [self.cls_token_id, *(self.token_to_id.get(w, self.unk_token_id) for w in words)]
        ids.append(self.sep_token_id)
        mask = [1] * len(ids) + [0] * (length - len(ids))
        ids = ids + [self.pad_token_id] * (length - len(ids))
        return ids, mask

    def __call__(
        self, texts: str | Sequence[str], *, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode a text or a list of texts.

        Returns:
            ``{"input_ids": (B, L) long, "attention_mask": (B, L) long}`` (``B = 1`` for one text).
        """
        if isinstance(texts, str):
            texts = [texts]
        pairs = [self.encode(t, max_length=max_length) for t in texts]
        length = self.max_length if max_length is None else max_length
        if not pairs:
            empty = torch.zeros(0, length, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone()}
        return {
            "input_ids": torch.tensor([p[0] for p in pairs], dtype=torch.long),
            "attention_mask": torch.tensor([p[1] for p in pairs], dtype=torch.long),
        }

    def decode(self, ids: Sequence[int] | torch.Tensor, *, skip_special_tokens: bool = True) -> str:
        """Words of ``ids`` joined by spaces (special tokens dropped unless asked)."""
        if torch.is_tensor(ids):
            ids = ids.tolist()
        out = []
        for i in ids:
            tok = self.vocab[i] if 0 <= i < len(self.vocab) else UNK
            if skip_special_tokens and tok in (PAD, CLS, SEP):
                continue
            out.append(tok)
        return " ".join(out)

    # -- export / persistence -----------------------------------------------------------
    def to_hf(self) -> Any:
        """This tokenizer as a ``transformers.PreTrainedTokenizerFast`` with the same ids.

        ``hf(text, padding="max_length", truncation=True, max_length=L)`` gives the same
        ``input_ids`` as :meth:`encode`.
        """
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordLevel
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(WordLevel(vocab=dict(self.token_to_id), unk_token=UNK))
        norms = [normalizers.Lowercase()] if self.lowercase else []
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            pair=f"{CLS} $A {SEP} $B {SEP}",
            special_tokens=[(CLS, self.cls_token_id), (SEP, self.sep_token_id)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token=UNK,
            pad_token=PAD,
            cls_token=CLS,
            sep_token=SEP,
            model_max_length=self.max_length,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": list(self.vocab),
            "max_length": self.max_length,
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        try:
            return cls(
                data["vocab"], max_length=data["max_length"], lowercase=data.get("lowercase", True)
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"WordTokenizer.from_dict: malformed tokenizer data ({exc}).") from exc

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (vocabulary, max_length, lowercase)."""
        from ..config import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"WordTokenizer.load: no such file {str(path)!r}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"WordTokenizer.load: {str(path)!r} is not valid JSON ({exc})."
            ) from exc
        return cls.from_dict(data)


__all__ = ["SPECIAL_TOKENS", "WordTokenizer", "split_words"]
