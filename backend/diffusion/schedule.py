# SPDX-License-Identifier: GPL-3.0-or-later
"""The noise schedule: linear β (IVID §5.3), the forward process and the ε → x0 conversions."""

from __future__ import annotations

import torch

from backend.diffusion.config import UNetConfig


class NoiseSchedule:
    """ᾱ_t for t = 0 … T−1 of a linear β schedule; x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        self.timesteps = int(timesteps)
        self.betas = torch.linspace(beta_start, beta_end, self.timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    @classmethod
    def from_config(cls, cfg: UNetConfig) -> NoiseSchedule:
        return cls(cfg.timesteps, cfg.beta_start, cfg.beta_end)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t as float32 [B, 1, 1, 1] (t int64 [B])."""
        return self.alphas_cumprod.to(t.device)[t].float().view(-1, 1, 1, 1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_x0(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return (xt - (1 - a).sqrt() * eps) / a.sqrt()

    def predict_eps(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ·ε − √(1−ᾱ)·x0."""
        a = self.abar(t)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def eps_from_output(self, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """The network's output as ε (``prediction`` 'eps' or 'v': ε = √(1−ᾱ)·x_t + √ᾱ·v)."""
        if prediction == "eps":
            return out
        a = self.abar(t)
        return (1 - a).sqrt() * xt + a.sqrt() * out

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` evenly spaced timesteps from T−1 down to 0."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        return sorted({round(i * (self.timesteps - 1) / max(steps - 1, 1)) for i in range(steps)}, reverse=True)
