"""Training: losses, negatives, one step, the loop, checkpoints, distributed setup."""

from t2i.train.data import Batch, ShardedSampler, TrainData, load_train_data
from t2i.train.distributed import DistContext, init_distributed
from t2i.train.loop import NonFiniteLossError, Outputs, TrainingInterrupted, TrainResult, train
from t2i.train.losses import discriminator_loss, generator_loss
from t2i.train.negatives import CaptionRelations, Negatives, swap_partners

__all__ = [
    "Batch", "CaptionRelations", "DistContext", "Negatives", "NonFiniteLossError", "Outputs", "ShardedSampler",
    "TrainData", "TrainResult", "TrainingInterrupted", "discriminator_loss", "generator_loss", "init_distributed",
    "load_train_data", "swap_partners", "train",
]
