"""Training: the Trainer, checkpoints, torchrun support, curricula and hard negatives."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import BAN_MILESTONES, TrainConfig
from .curriculum import (
    ComparativeObjective,
    CurriculumConfig,
    CurriculumContrastiveObjective,
    DifficultySchedule,
    winoground_evaluate,
)
from .hard_negatives import HardNegativeGenerator, perturb_caption, swap_image_halves
from .samplers import balanced_weights
from .schedules import ban_factor, lr_factor
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
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "balanced_weights",
    "ban_factor",
    "load_checkpoint",
    "lr_factor",
    "perturb_caption",
    "save_checkpoint",
    "swap_image_halves",
    "winoground_evaluate",
]
