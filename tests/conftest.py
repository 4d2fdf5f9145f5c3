"""Shared fixtures: tiny random-init Hugging Face VL models built from configs (no downloads)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch

logging.getLogger("transformers").setLevel(logging.ERROR)

VOCAB = 99
SEQ = 7
IMG = 32


def _text_config() -> dict:
    return dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _vision_config() -> dict:
    return dict(
        image_size=IMG,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
    )


def make_clip():
    from transformers import CLIPConfig, CLIPModel

    return CLIPModel(
        CLIPConfig(text_config=_text_config(), vision_config=_vision_config(), projection_dim=16)
    )


def make_siglip():
    from transformers import SiglipConfig, SiglipModel

    return SiglipModel(SiglipConfig(text_config=_text_config(), vision_config=_vision_config()))


def make_vilt():
    from transformers import ViltConfig, ViltForQuestionAnswering

    cfg = ViltConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=IMG,
        patch_size=8,
        max_position_embeddings=32,
        num_labels=5,
    )
    return ViltForQuestionAnswering(cfg)


def make_vilt_retrieval():
    from transformers import ViltConfig, ViltForImageAndTextRetrieval

    cfg = ViltConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=IMG,
        patch_size=8,
        max_position_embeddings=32,
    )
    return ViltForImageAndTextRetrieval(cfg)


def make_lxmert():
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    cfg = LxmertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_attention_heads=4,
        l_layers=1,
        x_layers=1,
        r_layers=1,
        intermediate_size=37,
        visual_feat_dim=16,
        visual_pos_dim=4,
        num_qa_labels=5,
    )
    return LxmertForQuestionAnswering(cfg)


def make_visual_bert():
    from transformers import VisualBertConfig, VisualBertForQuestionAnswering

    cfg = VisualBertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        visual_embedding_dim=16,
        num_labels=5,
    )
    return VisualBertForQuestionAnswering(cfg)


def _ids(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (batch, SEQ), generator=gen)
    ids[:, 0] = 1
    ids[:, -1] = 2
    return {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.long)}


def inputs_for(family: str, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Valid model inputs of ``batch`` examples for a family."""
    gen = torch.Generator().manual_seed(seed)
    text = _ids(batch, gen)
    if family in ("clip", "siglip"):
        if family == "siglip":
            text.pop("attention_mask")
        return {**text, "pixel_values": torch.randn(batch, 3, IMG, IMG, generator=gen)}
    if family in ("vilt", "vilt_retrieval"):
        return {
            **text,
            "token_type_ids": torch.zeros(batch, SEQ, dtype=torch.long),
            "pixel_values": torch.randn(batch, 3, IMG, IMG, generator=gen),
            "pixel_mask": torch.ones(batch, IMG, IMG, dtype=torch.long),
        }
    if family == "lxmert":
        return {
            **text,
            "token_type_ids": torch.zeros(batch, SEQ, dtype=torch.long),
            "visual_feats": torch.randn(batch, 5, 16, generator=gen),
            "visual_pos": torch.rand(batch, 5, 4, generator=gen),
            "visual_attention_mask": torch.ones(batch, 5),
        }
    if family == "visual_bert":
        return {
            **text,
            "token_type_ids": torch.zeros(batch, SEQ, dtype=torch.long),
            "visual_embeds": torch.randn(batch, 4, 16, generator=gen),
            "visual_attention_mask": torch.ones(batch, 4, dtype=torch.long),
            "visual_token_type_ids": torch.ones(batch, 4, dtype=torch.long),
        }
    raise KeyError(family)


HF_FAMILIES: dict[str, Callable[[], torch.nn.Module]] = {
    "clip": make_clip,
    "siglip": make_siglip,
    "vilt": make_vilt,
    "vilt_retrieval": make_vilt_retrieval,
    "lxmert": make_lxmert,
    "visual_bert": make_visual_bert,
}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest single-threaded, and one thread does not oversubscribe the shared
    CI cores; tests about thread counts set their own."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=sorted(HF_FAMILIES))
def hf_family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def hf_models() -> dict[str, torch.nn.Module]:
    """One tiny model per family (built once; tests must not train them in place)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {name: make() for name, make in HF_FAMILIES.items()}


def small_diagnostics(accuracy: float, agreement: float | None = 0.3, flips: float | None = None):
    """Diagnostics of one model on an id and an ood split (n = 10 each), with a language-prior
    part when ``agreement`` is given and a context part when ``flips`` is given."""
    from causalvl.diagnostics.results import (
        ContextReliance,
        Diagnostics,
        LanguagePriorReliance,
        SplitDiagnostics,
    )

    prior = None
    if agreement is not None:
        prior = LanguagePriorReliance(
            prior_agreement=agreement,
            mean_kl=0.1,
            image_swap_flip_rate=0.5,
            null_accuracy=0.2,
            null_mode="zeros",
            n=10,
            n_swapped=10,
        )
    context = None
    if flips is not None:
        context = ContextReliance(
            flip_rate=flips,
            accuracy_factual=accuracy,
            accuracy_replaced=accuracy,
            accuracy_change=0.0,
            mode="swap",
            n=10,
        )
    return Diagnostics(
        splits={
            "id": SplitDiagnostics(name="id", distribution="id", n=10, accuracy=0.9),
            "ood": SplitDiagnostics(
                name="ood",
                distribution="ood",
                n=10,
                accuracy=accuracy,
                language_prior=prior,
                context=context,
            ),
        }
    )
