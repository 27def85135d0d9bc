"""Residual-attention text-to-image GAN: config, networks and generator I/O."""

from t2i.models.attention import ResidualAttention
from t2i.models.config import GANConfig
from t2i.models.discriminator import Discriminator
from t2i.models.generator import Generator
from t2i.models.io import load_generator, save_generator

__all__ = [
    "GANConfig",
    "Generator",
    "Discriminator",
    "ResidualAttention",
    "save_generator",
    "load_generator",
]
