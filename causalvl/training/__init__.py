"""Training: the Trainer, checkpoints, torchrun support, curricula and hard negatives."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import BAN_MILESTONES, TrainConfig
from .schedules import ban_factor, lr_factor
from .trainer import Callback, Trainer, TrainResult

__all__ = [
    "BAN_MILESTONES",
    "Callback",
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "ban_factor",
    "load_checkpoint",
    "lr_factor",
    "save_checkpoint",
]
