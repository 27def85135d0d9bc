"""A saved 512-d generator whose word attention is open: the generation pipeline's and the eval
stage's tests draw with it to check that a caption's token states reach the images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from t2i.models import GANConfig, Generator, save_generator


def save_word_model(directory: Path, encoder_info: dict[str, Any]) -> Path:
    """Word attention at 8x8 and 16x16 with its gates at 1, so the tokens change the images."""
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=(), word_attention=(8, 16))
    g = Generator(config)
    with torch.no_grad():
        for module in g.word_attn.values():
            module.gate.fill_(1.0)
    save_generator(directory, g, {"model": config.to_dict(), "encoder": encoder_info, "step": 1})
    return directory
