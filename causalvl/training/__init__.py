"""Training: the Trainer, checkpoints, torchrun support, curricula, hard negatives and the
robust-training recipes JTT (upsampling a model's errors) and DFR (last-layer refit)."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import BAN_MILESTONES, TrainConfig
from .curriculum import (
    ComparativeObjective,
    CurriculumConfig,
    CurriculumContrastiveObjective,
    DifficultySchedule,
    winoground_evaluate,
)
from .dfr import RefitResult, refit_last_layer
from .hard_negatives import HardNegativeGenerator, swap_image_halves
from .jtt import JTTResult, UpsampledDataset, jtt_error_set, train_jtt, upsample
from .samplers import balanced_weights
from .schedules import ban_factor, lr_factor
from .state import TrainState
from .trainer import Callback, Trainer, TrainResult

__all__ = [
    "BAN_MILESTONES",
    "Callback",
    "Checkpoint",
    "ComparativeObjective",
    "CurriculumConfig",
    "CurriculumContrastiveObjective",
    "DifficultySchedule",
    "HardNegativeGenerator",
    "JTTResult",
    "RefitResult",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "UpsampledDataset",
    "balanced_weights",
    "ban_factor",
    "jtt_error_set",
    "load_checkpoint",
    "lr_factor",
    "refit_last_layer",
    "save_checkpoint",
    "swap_image_halves",
    "train_jtt",
    "upsample",
    "winoground_evaluate",
]


def __getattr__(name: str) -> object:
    if name == "perturb_caption":  # one implementation now, in causalvl.datasets
        from ..datasets import perturb_caption
        from ..errors import warn_at_caller

        warn_at_caller(
            "causalvl.training.perturb_caption moved to causalvl.datasets.perturb_caption "
            "(one function for dataset and training negatives); the old path is removed in "
            "the next release."
        )
        return perturb_caption
    raise AttributeError(f"module 'causalvl.training' has no attribute {name!r}")
