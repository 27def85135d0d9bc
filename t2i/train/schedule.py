"""Learning-rate schedule: constant, then linear to zero over the last part of the run.

CycleGAN/pix2pix train GANs this way (constant for the first half, linear to 0 over the second).
The rate is a function of (step, steps) alone, not optimiser state, so a resumed run continues
the same schedule; raising `train.steps` to continue a finished run stretches it (the rate jumps
back up from the old end).
"""

from __future__ import annotations

import torch


def lr_factor(step: int, steps: int, decay_from: float) -> float:
    """Multiplier of the base rates for the step about to run (0-based).

    decay_from: fraction of `steps` after which the rate falls linearly, reaching 0 after the
    last step; 1.0 keeps it constant (the factor is then exactly 1.0).
    """
    start = decay_from * steps
    if step < start or decay_from >= 1.0:
        return 1.0
    return max(0.0, (steps - step) / max(steps - start, 1e-9))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
