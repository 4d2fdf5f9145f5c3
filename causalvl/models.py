"""Small reference models: a VQA classifier and a contrastive image-text model.

They train in seconds on a CPU and have the module structure the published methods assume
(separate vision and question encoders, a fusion, an answer classifier), so the demo, the
examples and the tests exercise every intervention on them. Their adapters are registered by
class name, so ``causalvl.intervene(TinyVQA(...), cfg)`` needs no adapter argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapters.base import ModelAdapter
from .errors import ConfigError, InputError


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} = {value!r} is invalid: must be an integer >= 1.")


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` -> features ``(B, hidden)`` with two conv blocks."""

    def __init__(self, in_channels: int, hidden: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * width, hidden),
            nn.ReLU(),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


class BagOfWordsEncoder(nn.Module):
    """Token ids ``(B, L)`` (+ mask) -> features ``(B, hidden)``: masked mean of embeddings,
    then a linear layer. Token id 0 is padding."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.proj(pooled)


class Fusion(nn.Module):
    """Element-wise product of the two modalities followed by an MLP: ``(B, hidden)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, vision: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        return self.mlp(vision * language)


class TinyVQA(nn.Module):
    """A small VQA classifier: CNN image encoder, bag-of-words question encoder, product fusion.

    Args:
        vocab_size: question vocabulary size (id 0 is padding).
        num_answers: size of the answer vocabulary.
        image_size: side of the square input images (any size works; used for documentation).
        channels: image channels.
        hidden: feature width.

    Inputs: ``pixel_values`` ``(B, channels, H, W)``, ``input_ids`` ``(B, L)``,
    optional ``attention_mask`` ``(B, L)``. Returns logits ``(B, num_answers)``.

    Roles: ``vision_features`` (``vision_encoder``), ``language_features``
    (``question_encoder``), ``fused`` (``fusion``), all ``(B, hidden)``.

    Example:
        >>> import torch
        >>> net = TinyVQA(vocab_size=20, num_answers=4, image_size=8)
        >>> net(torch.rand(2, 3, 8, 8), torch.randint(1, 20, (2, 5))).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        vocab_size: int,
        num_answers: int,
        image_size: int = 16,
        channels: int = 3,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        _check_dims(
            vocab_size=vocab_size,
            num_answers=num_answers,
            image_size=image_size,
            channels=channels,
            hidden=hidden,
        )
        self.vision_encoder = ConvEncoder(channels, hidden)
        self.question_encoder = BagOfWordsEncoder(vocab_size, hidden)
        self.fusion = Fusion(hidden)
        self.classifier = nn.Linear(hidden, num_answers)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        v = self.vision_encoder(pixel_values)
        q = self.question_encoder(input_ids, attention_mask)
        return self.classifier(self.fusion(v, q))


class TinyContrastive(nn.Module):
    """A small CLIP-like dual encoder. Returns ``logits_per_image`` ``(num_images, num_texts)``
    = ``exp(logit_scale) * cos(image_i, text_j)``.

    Example:
        >>> import torch
        >>> net = TinyContrastive(vocab_size=20)
        >>> net(torch.rand(3, 3, 16, 16), torch.randint(1, 20, (5, 6))).shape
        torch.Size([3, 5])
    """

    def __init__(
        self, vocab_size: int, channels: int = 3, hidden: int = 64, embed_dim: int = 32
    ) -> None:
        super().__init__()
        _check_dims(vocab_size=vocab_size, channels=channels, hidden=hidden, embed_dim=embed_dim)
        self.vision_encoder = ConvEncoder(channels, hidden)
        self.text_encoder = SequenceEncoder(vocab_size, hidden)
        self.image_proj = nn.Linear(hidden, embed_dim)
        self.text_proj = nn.Linear(hidden, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        img = F.normalize(self.image_proj(self.vision_encoder(pixel_values)), dim=-1)
        txt = F.normalize(self.text_proj(self.text_encoder(input_ids, attention_mask)), dim=-1)
        return self.logit_scale.exp() * img @ txt.t()


class SequenceEncoder(nn.Module):
    """Token ids ``(B, L)`` -> ``(B, hidden)`` with a GRU, so word order matters (unlike a bag
    of words, it can tell "a 3 left of a 7" from "a 7 left of a 3")."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        states, _ = self.gru(self.embed(input_ids))
        last = attention_mask.long().sum(1).clamp_min(1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]


class TinyVQAAdapter(ModelAdapter):
    """Adapter of :class:`TinyVQA`."""

    family = "tiny_vqa"
    vision_keys = ("pixel_values",)
    language_keys = ("input_ids", "attention_mask")
    required_keys = ("pixel_values", "input_ids")
    float_keys = ("pixel_values",)
    roles = {
        "vision_features": "vision_encoder",
        "language_features": "question_encoder",
        "fused": "fusion",
    }


class TinyContrastiveAdapter(TinyVQAAdapter):
    """Adapter of :class:`TinyContrastive`."""

    family = "tiny_contrastive"
    kind = "contrastive"
    roles = {
        "vision_features": "image_proj",
        "language_features": "text_proj",
    }


class RegionEncoder(nn.Module):
    """Region crops ``(B, R, C, h, w)`` -> region features ``(B, R, hidden)``: one shared
    :class:`ConvEncoder` applied to every crop (a stand-in for a detector's RoI features)."""

    def __init__(self, in_channels: int, hidden: int, width: int = 32) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, hidden, width)

    def forward(self, region_pixels: torch.Tensor) -> torch.Tensor:
        b, r = region_pixels.shape[:2]
        return self.encoder(region_pixels.flatten(0, 1)).reshape(b, r, -1)


class TinyRegionClassifier(nn.Module):
    """A small region-feature classifier: each region crop is encoded on its own, then the
    region features are concatenated and mixed, so context regions can sway the prediction
    (the object-in-context setting of :class:`~causalvl.datasets.ContextShift`).

    Args:
        num_classes: number of output classes.
        num_regions: regions per example ``R`` (region 0 is usually the target).
        channels: image channels.
        hidden: region feature width ``D``.
        width: convolution channels of the region encoder.

    Inputs: ``region_pixels`` ``(B, R, channels, h, w)``. Returns logits ``(B, num_classes)``.

    Roles: ``vision_features`` (``region_encoder``) ``(B, R, hidden)``; ``fused`` (``mixer``)
    ``(B, hidden)``.

    Example:
        >>> import torch
        >>> net = TinyRegionClassifier(num_classes=10)
        >>> net(torch.rand(4, 2, 3, 16, 16)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        num_classes: int,
        num_regions: int = 2,
        channels: int = 3,
        hidden: int = 32,
        width: int = 32,
    ) -> None:
        super().__init__()
        _check_dims(
            num_classes=num_classes,
            num_regions=num_regions,
            channels=channels,
            hidden=hidden,
            width=width,
        )
        self.num_regions = num_regions
        self.region_encoder = RegionEncoder(channels, hidden, width)
        self.mixer = nn.Sequential(nn.Linear(num_regions * hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, region_pixels: torch.Tensor) -> torch.Tensor:
        if region_pixels.dim() != 5 or region_pixels.shape[1] != self.num_regions:
            raise InputError(
                f"region_pixels has shape {tuple(region_pixels.shape)}; expected "
                f"(batch, {self.num_regions}, channels, h, w)."
            )
        regions = self.region_encoder(region_pixels)
        return self.classifier(self.mixer(regions.flatten(1)))


class TinyRegionClassifierAdapter(ModelAdapter):
    """Adapter of :class:`TinyRegionClassifier` (vision only: no language input)."""

    family = "tiny_region"
    vision_keys = ("region_pixels",)
    required_keys = ("region_pixels",)
    float_keys = ("region_pixels",)
    roles = {"vision_features": "region_encoder", "fused": "mixer"}


class FrozenFeatureVQA(nn.Module):
    """A VQA answer head over frozen pretrained features: image and question vectors in,
    answer logits out (the realistic setting of :class:`~causalvl.datasets.FeatureVQA`).

    ``vision`` and ``question`` project each modality to ``hidden`` (LayerNorm, linear, ReLU,
    dropout), ``fusion`` combines them (element-wise product + MLP, as in :class:`TinyVQA`) and
    ``classifier`` (a final ``nn.Linear``) gives the answers.

    Args:
        num_answers: size of the answer vocabulary.
        image_dim: width of the image features (1280 for EfficientNet-Lite0).
        text_dim: width of the question features (384 for all-MiniLM-L6-v2).
        hidden: width of the projections and of the fused feature.
        dropout: dropout after each projection (0 disables it).

    Inputs (keywords): ``image_features`` ``(B, image_dim)``, ``question_features``
    ``(B, text_dim)``, both float. Returns logits ``(B, num_answers)``.

    Roles: ``vision_features`` (``vision``), ``language_features`` (``question``), ``fused``
    (``fusion``), all ``(B, hidden)``. Null-image counterfactuals (prior subtraction, mode
    ``"zeros"`` or ``"mean"``) replace ``image_features`` by zeros or by their mean.

    Example:
        >>> import torch
        >>> net = FrozenFeatureVQA(num_answers=4, image_dim=12, text_dim=6, hidden=8)
        >>> net(image_features=torch.rand(2, 12), question_features=torch.rand(2, 6)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        num_answers: int,
        image_dim: int = 1280,
        text_dim: int = 384,
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_dims(num_answers=num_answers, image_dim=image_dim, text_dim=text_dim, hidden=hidden)
        if (
            not isinstance(dropout, (int, float))
            or isinstance(dropout, bool)
            or not 0 <= dropout < 1
        ):
            raise ConfigError(f"dropout = {dropout!r} is invalid: must be a number in [0, 1).")
        self.image_dim = image_dim
        self.text_dim = text_dim
        self.vision = _projection(image_dim, hidden, float(dropout))
        self.question = _projection(text_dim, hidden, float(dropout))
        self.fusion = Fusion(hidden)
        self.classifier = nn.Linear(hidden, num_answers)

    def forward(
        self, image_features: torch.Tensor, question_features: torch.Tensor
    ) -> torch.Tensor:
        """Answer logits ``(B, num_answers)`` from ``image_features`` ``(B, image_dim)`` and
        ``question_features`` ``(B, text_dim)``."""
        for name, x, dim in (
            ("image_features", image_features, self.image_dim),
            ("question_features", question_features, self.text_dim),
        ):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != dim:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise InputError(
                    f"{name} has shape {shape}; expected (batch, {dim}). Build the features "
                    "with causalvl.pretrained or FeatureVQA, or set "
                    f"FrozenFeatureVQA({'image_dim' if name == 'image_features' else 'text_dim'}=...)."
                )
        if image_features.shape[0] != question_features.shape[0]:
            raise InputError(
                f"image_features has {image_features.shape[0]} rows but question_features has "
                f"{question_features.shape[0]}; give one of each per example."
            )
        v = self.vision(image_features)
        q = self.question(question_features)
        return self.classifier(self.fusion(v, q))


def _projection(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FrozenFeatureVQAAdapter(ModelAdapter):
    """Adapter of :class:`FrozenFeatureVQA`."""

    family = "frozen_feature_vqa"
    vision_keys = ("image_features",)
    language_keys = ("question_features",)
    required_keys = ("image_features", "question_features")
    float_keys = ("image_features", "question_features")
    roles = {
        "vision_features": "vision",
        "language_features": "question",
        "fused": "fusion",
    }


__all__ = ["FrozenFeatureVQA", "TinyContrastive", "TinyRegionClassifier", "TinyVQA"]
