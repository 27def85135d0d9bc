"""The shared training loop of the small image networks: the evaluation judges and the matcher.

Adam with a one-cycle schedule over random batches of row indices; the caller's ``batch_loss``
decides what a row is and what the loss asks, so one loop serves a classifier, a contrastive
image encoder and the matcher alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    steps: int
    seed: int  # draws the batches and the augmentation (initial weights are the caller's)
    batch_size: int = 64


def fit(net: nn.Module, settings: FitSettings, n_rows: int,
        batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor], what: str) -> None:
    """Train ``net`` for ``settings.steps`` batches of rows drawn from ``range(n_rows)``.

    ``batch_loss(pick, gen)`` gets the (B,) row indices of this step and the loop's generator
    (for augmentation), and returns the scalar loss; ``what`` names the net in the log; ``net``
    ends in eval mode.
    """
    steps = settings.steps
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        pick = torch.randint(0, n_rows, (settings.batch_size,), generator=gen)
        loss = batch_loss(pick, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.3f", what, step + 1, steps, float(loss.detach()))
    net.eval()
