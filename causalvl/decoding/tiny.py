"""Tiny random-init generative VLMs (built from configs, no downloads) for tests and benchmarks.

Every model uses a 256-token text vocabulary, hidden size 32, 2 layers and 4 image tokens
(token id 255). Weights are re-drawn from ``N(0, init_std^2)`` so that next-token logits are far
from flat and the image visibly moves them (default init gives near-uniform logits).

Example:
    >>> from causalvl.decoding.tiny import tiny_generative_model
    >>> model, inputs = tiny_generative_model("llava", seed=0)
    >>> sorted(inputs)
    ['attention_mask', 'input_ids', 'pixel_values']
    >>> model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] - inputs["input_ids"].shape[1]
    3
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

#: families :func:`tiny_generative_model` can build
TINY_FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "paligemma")

VOCAB = 256
IMAGE_TOKEN = 255
VISION_START = 254
VISION_END = 253
VIDEO_TOKEN = 252
BOS, EOS, PAD = 1, 2, 0
NUM_IMAGE_TOKENS = 4


def _llama_text(**extra: Any) -> dict[str, Any]:
    return dict(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        **extra,
    )


def _config(family: str) -> Any:
    import transformers as tf

    if family == "llava":
        return tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=28,
                patch_size=14,
                projection_dim=32,
            ),
            text_config=tf.LlamaConfig(
                **{k: v for k, v in _llama_text().items() if k != "model_type"}
            ),
            image_token_index=IMAGE_TOKEN,
            image_seq_length=NUM_IMAGE_TOKENS,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
    if family in ("qwen2_vl", "qwen2_5_vl"):
        text = dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4},
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
        common = dict(
            image_token_id=IMAGE_TOKEN,
            vision_start_token_id=VISION_START,
            vision_end_token_id=VISION_END,
            video_token_id=VIDEO_TOKEN,
        )
        if family == "qwen2_vl":
            vision = dict(
                depth=2,
                embed_dim=32,
                hidden_size=32,
                num_heads=4,
                mlp_ratio=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            )
            return tf.Qwen2VLConfig(text_config=text, vision_config=vision, **common)
        vision = dict(
            depth=2,
            hidden_size=32,
            out_hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            window_size=56,
            fullatt_block_indexes=[1],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    if family in ("idefics3", "smolvlm"):
        klass = tf.Idefics3Config if family == "idefics3" else tf.SmolVLMConfig
        return klass(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=56,
                patch_size=14,
            ),
            text_config=_llama_text(),
            image_token_id=IMAGE_TOKEN,
            scale_factor=2,
            pad_token_id=PAD,
        )
    if family == "paligemma":
        return tf.PaliGemmaConfig(
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=28,
                patch_size=14,
            ),
            text_config=dict(
                model_type="gemma",
                vocab_size=VOCAB,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                head_dim=8,
                bos_token_id=BOS,
                eos_token_id=EOS,
                pad_token_id=PAD,
            ),
            image_token_index=IMAGE_TOKEN,
            projection_dim=32,
        )
    raise ConfigError(
        f"tiny_generative_model: family {family!r} unknown; choose one of {TINY_FAMILIES}."
    )


def _model_class(family: str) -> type[nn.Module]:
    import transformers as tf

    return {
        "llava": tf.LlavaForConditionalGeneration,
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "idefics3": tf.Idefics3ForConditionalGeneration,
        "smolvlm": tf.SmolVLMForConditionalGeneration,
        "paligemma": tf.PaliGemmaForConditionalGeneration,
    }[family]


def tiny_inputs(
    family: str,
    *,
    batch_size: int = 1,
    prompt_tokens: int = 6,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Processor-style inputs for a tiny model of ``family`` with the image tokens expanded.

    Args:
        family: one of :data:`TINY_FAMILIES`.
        batch_size: rows ``B``.
        prompt_tokens: text tokens around the image (split before / after it).
        seed: seeds the pixel values and the text tokens.

    Returns:
        dict: ``input_ids`` / ``attention_mask`` ``(B, L)`` plus the family's pixel inputs
        (``pixel_values`` and, per family, ``image_grid_thw`` + ``mm_token_type_ids``,
        ``pixel_attention_mask``, or ``token_type_ids``).
    """
    if family not in TINY_FAMILIES:
        raise ConfigError(f"tiny_inputs: family {family!r} unknown; choose one of {TINY_FAMILIES}.")
    g = torch.Generator().manual_seed(seed)
    n_before = prompt_tokens // 2
    before = torch.randint(3, 200, (batch_size, n_before), generator=g)
    after = torch.randint(3, 200, (batch_size, prompt_tokens - n_before), generator=g)
    img = torch.full((batch_size, NUM_IMAGE_TOKENS), IMAGE_TOKEN)
    bos = torch.full((batch_size, 1), BOS)
    out: dict[str, torch.Tensor] = {}
    if family == "llava":
        ids = torch.cat([bos, before, img, after], 1)
        out["pixel_values"] = torch.randn(batch_size, 3, 28, 28, generator=g)
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        start = torch.full((batch_size, 1), VISION_START)
        end = torch.full((batch_size, 1), VISION_END)
        ids = torch.cat([before, start, img, end, after], 1)
        out["pixel_values"] = torch.randn(batch_size * 16, 3 * 2 * 14 * 14, generator=g)
        out["image_grid_thw"] = torch.tensor([[1, 4, 4]] * batch_size)
        out["mm_token_type_ids"] = (ids == IMAGE_TOKEN).long()
    elif family in ("idefics3", "smolvlm"):
        ids = torch.cat([bos, before, img, after], 1)
        out["pixel_values"] = torch.randn(batch_size, 1, 3, 56, 56, generator=g)
        out["pixel_attention_mask"] = torch.ones(batch_size, 1, 56, 56, dtype=torch.bool)
    else:  # paligemma: image tokens first, then bos + prefix
        ids = torch.cat([img, bos, before, after], 1)
        out["pixel_values"] = torch.randn(batch_size, 3, 28, 28, generator=g)
        out["token_type_ids"] = torch.zeros_like(ids)
    out["input_ids"] = ids
    out["attention_mask"] = torch.ones_like(ids)
    return out


def tiny_generative_model(
    family: str,
    *,
    seed: int = 0,
    init_std: float = 0.2,
    batch_size: int = 1,
    prompt_tokens: int = 6,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A tiny random-init generative VLM of ``family`` in eval mode, and matching inputs.

    Args:
        family: one of :data:`TINY_FAMILIES`.
        seed: seeds the weights (a local generator; global RNGs are not touched) and the inputs.
        init_std: standard deviation every weight with ``dim >= 2`` is re-drawn with.
        batch_size / prompt_tokens: as in :func:`tiny_inputs`.

    Returns:
        ``(model, inputs)``: the model (float32, CPU) and a dict of inputs (see :func:`tiny_inputs`).
    """
    if family not in TINY_FAMILIES:
        raise ConfigError(
            f"tiny_generative_model: family {family!r} unknown; choose one of {TINY_FAMILIES}."
        )
    config = _config(family)
    model = _model_class(family)(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * init_std)
    model.eval()
    gen_cfg = model.generation_config
    gen_cfg.pad_token_id = PAD
    gen_cfg.eos_token_id = None  # tiny random models: always generate max_new_tokens
    gen_cfg.bos_token_id = BOS
    return model, tiny_inputs(
        family, batch_size=batch_size, prompt_tokens=prompt_tokens, seed=seed + 1
    )
