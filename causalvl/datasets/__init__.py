"""Datasets: real image sources, bias constructions, a word tokenizer, public-benchmark loaders.

* Sources (real labelled images): :func:`digits`, :func:`cifar10`, :class:`ArraySource`.
* Bias constructions (``torch.utils.data.Dataset`` of flat dicts; batch with :func:`collate`):
  :class:`PriorShiftVQA` (VQA-CP-style answer-prior shift), :class:`ContextShift` (object
  co-occurrence), :class:`CompositionalPairs` (Winoground-style swaps, plus
  :func:`perturb_caption`), :class:`ComparativePairs` (NLVR2-style statements).
* :class:`FeatureVQA`: a construction's examples as frozen pretrained image / question features
  (:mod:`causalvl.pretrained`, the optional ``[pretrained]`` extra).
* :class:`WordTokenizer`: word-level tokenizer from a dataset's text, exportable to Hugging Face.
* Loaders for local copies of Winoground, VQA-CP v2, VALSE, SugarCrepe, NLVR and NLVR2.

Example::

    >>> from torch.utils.data import DataLoader
    >>> from causalvl.datasets import PriorShiftVQA, collate
    >>> train = PriorShiftVQA(split="train", num_examples=32)
    >>> batch = next(iter(DataLoader(train, batch_size=4, collate_fn=collate)))
    >>> sorted(k for k in batch if k in ("labels", "question_type", "bias_aligned", "group"))
    ['bias_aligned', 'group', 'labels', 'question_type']
"""

from ._common import COLOURS, collate
from .comparative import STATEMENT_TYPES, ComparativeConfig, ComparativePairs
from .compositional import (
    CompositionalConfig,
    CompositionalPairs,
    perturb_caption,
    relation_caption,
)
from .context_shift import ContextShift, ContextShiftConfig
from .features import FeatureVQA
from .loaders import (
    load_aro,
    load_image,
    load_nlvr,
    load_nlvr2,
    load_sugarcrepe,
    load_valse,
    load_vqacp,
    load_winoground,
    vqa_soft_scores,
    vqa_targets,
)
from .prior_shift import QUESTION_TYPES, PriorShiftConfig, PriorShiftVQA
from .sources import (
    CIFAR10_CLASSES,
    ArraySource,
    ImageSource,
    cifar10,
    default_data_dir,
    digits,
    safe_unpickle_cifar,
)
from .tokenizer import WordTokenizer

__all__ = [
    "CIFAR10_CLASSES",
    "COLOURS",
    "QUESTION_TYPES",
    "STATEMENT_TYPES",
    "ArraySource",
    "ComparativeConfig",
    "ComparativePairs",
    "CompositionalConfig",
    "CompositionalPairs",
    "ContextShift",
    "ContextShiftConfig",
    "FeatureVQA",
    "ImageSource",
    "PriorShiftConfig",
    "PriorShiftVQA",
    "WordTokenizer",
    "cifar10",
    "collate",
    "default_data_dir",
    "digits",
    "load_aro",
    "load_image",
    "load_nlvr",
    "load_nlvr2",
    "load_sugarcrepe",
    "load_valse",
    "load_vqacp",
    "load_winoground",
    "perturb_caption",
    "relation_caption",
    "safe_unpickle_cifar",
    "vqa_soft_scores",
    "vqa_targets",
]
