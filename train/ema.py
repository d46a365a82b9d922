# SPDX-License-Identifier: GPL-3.0-or-later
"""The generator's exponential moving average, shared by the GAN and distillation loops.

Why an EMA: the exported generator averages the last ``ema_kimg`` thousand images of training (its weights'
half-life), which removes most of the step-to-step noise of the optimiser; the ramp-up keeps the half-life at
``rampup`` times the images seen so far early in training, so the average does not hold on to the random
initialisation.
"""

from __future__ import annotations

import torch


def ema_beta(batch: int, nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """The decay per step of ``batch`` images after ``nimg`` images of training."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """Move ``ema``'s parameters towards ``model``'s by ``1 - beta``; copy its buffers (e.g. the w average)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
