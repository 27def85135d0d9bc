"""Training: losses, one step, the loop, checkpoints, distributed setup."""

from t2i.train.data import ShardedSampler, TrainData, load_train_data, swap_partners
from t2i.train.distributed import DistContext, init_distributed
from t2i.train.loop import NonFiniteLossError, Outputs, TrainingInterrupted, TrainResult, train
from t2i.train.losses import LossConfig, discriminator_loss, generator_loss

__all__ = [
    "DistContext", "LossConfig", "NonFiniteLossError", "Outputs", "ShardedSampler", "TrainData",
    "TrainResult", "TrainingInterrupted", "discriminator_loss", "generator_loss", "init_distributed",
    "load_train_data", "swap_partners", "train",
]
