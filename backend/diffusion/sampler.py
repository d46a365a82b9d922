# SPDX-License-Identifier: GPL-3.0-or-later
"""DDPM (ancestral) and DDIM samplers with a hook on the predicted x0 at every step.

Why the hook: IVID's conditional sampling nudges the predicted clean image towards the warped condition
at every step (``x0_rgb ← 0.9·x0 + 0.1·cond`` inside the colour mask, depth likewise with 0.2, and a
lower bound on new depth; spec §3.4) before the update; the samplers themselves know nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from backend.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t [B]) -> ε
X0Hook = Callable[[torch.Tensor, int, bool], torch.Tensor]  # (x0, t, is_last) -> x0
Progress = Callable[[int, int], None]


def _clip(x0: torch.Tensor) -> torch.Tensor:
    return x0.clamp(-1.0, 1.0)


@torch.no_grad()
def ddim_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int = 25,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    x0_hook: X0Hook | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """DDIM (Song et al.) from pure noise; ``eta = 0`` is deterministic given the starting noise."""
    ts = schedule.ddim_timesteps(steps)
    x = torch.randn(shape, generator=generator, device=device)
    abar = schedule.alphas_cumprod
    for i, t in enumerate(ts):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        eps = denoise(x, tt)
        x0 = _clip(schedule.predict_x0(x, eps, tt))
        last = i == len(ts) - 1
        if x0_hook is not None:
            x0 = x0_hook(x0, t, last)
        if last:
            x = x0
        else:
            eps = schedule.predict_eps(x, x0, tt)
            a, a_prev = float(abar[t]), float(abar[ts[i + 1]])
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
            noise = torch.randn(shape, generator=generator, device=device) if sigma > 0 else 0.0
            x = a_prev ** 0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps + sigma * noise
        if progress is not None:
            progress(i + 1, len(ts))
    return x


@torch.no_grad()
def ddpm_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    x0_hook: X0Hook | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Ancestral DDPM over all T steps with the fixed posterior variance β̃_t (IVID's G_u sampler)."""
    betas, abar = schedule.betas, schedule.alphas_cumprod
    x = torch.randn(shape, generator=generator, device=device)
    T = schedule.timesteps
    for i, t in enumerate(range(T - 1, -1, -1)):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0 = _clip(schedule.predict_x0(x, denoise(x, tt), tt))
        if x0_hook is not None:
            x0 = x0_hook(x0, t, t == 0)
        if t == 0:
            x = x0
        else:
            a, a_prev, b = float(abar[t]), float(abar[t - 1]), float(betas[t])
            mean = (a_prev ** 0.5 * b / (1 - a)) * x0 + ((1 - b) ** 0.5 * (1 - a_prev) / (1 - a)) * x
            var = b * (1 - a_prev) / (1 - a)
            x = mean + var ** 0.5 * torch.randn(shape, generator=generator, device=device)
        if progress is not None:
            progress(i + 1, T)
    return x
