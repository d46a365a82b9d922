# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion UNet (our own, ADM-style; IVID §5.1), built from :class:`UNetConfig`.

Why our own rather than ``diffusers.UNet2DModel``: the design card keeps the dependency list short, the
same network also serves as the monocular depth regressor (``kind='depth'``, no time input), and the
weights are stored under our own names in safetensors. The conditional model's extra input channels
start at zero weight (IVID's fine-tuning from G_u), so a G_c initialised from a G_u behaves like it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.diffusion.config import UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the second norm is modulated by the embedding (FiLM scale-shift)."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout) if emb else None
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None and emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over pixels, residual, zero-initialised output."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by attention."""

    def __init__(self, chans: list[tuple[int, int]], emb: int, cfg: UNetConfig, attn: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(a, b, emb, cfg.groups, cfg.dropout) for a, b in chans)
        self.attn = nn.ModuleList(
            Attention(b, cfg.head_channels, cfg.groups) if attn else nn.Identity() for _, b in chans
        )


class UNet(nn.Module):
    """ε-predicting UNet for RGBD diffusion (or a disparity regressor for ``kind='depth'``)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb = 4 * ch if cfg.uses_time else 0
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb)) if emb else None
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in cfg.channel_mults]
        res = cfg.resolution
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch]
        cur = ch
        for i, w in enumerate(widths):
            pairs = []
            for _ in range(cfg.blocks_per_level):
                pairs.append((cur, w))
                cur = w
                skips.append(cur)
            self.down.append(Level(pairs, emb, cfg, res in cfg.attention_resolutions))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2
        self.mid = Level([(cur, cur), (cur, cur)], emb, cfg, True)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(cfg.blocks_per_level + 1):
                pairs.append((cur + skips.pop(), w))
                cur = w
            self.up.append(Level(pairs, emb, cfg, res in cfg.attention_resolutions))
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
                res *= 2
        self.out_norm = nn.GroupNorm(cfg.groups, cur)
        self.out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this UNet needs timesteps")
            if t.ndim == 0:
                t = t.expand(x.shape[0])
            emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels))
        h = self.stem(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        for block, attn in zip(self.mid.blocks, self.mid.attn):
            h = attn(block(h, emb))
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


def widen_input(cond_model: UNet, uncond_state: dict[str, torch.Tensor]) -> None:
    """Initialise a UNet from a trained network of the same shape with no more inputs (IVID: G_c from G_u;
    here also a G_c gaining backdrop channels, or a G_u continued): the shared weights are copied and the
    stem's extra input channels start at zero, so the new model starts as the old one."""
    own = cond_model.state_dict()
    for k, v in uncond_state.items():
        if k not in own:
            raise ValueError(f"parameter {k} of the unconditional model has no counterpart")
        if k == "stem.weight":
            w = torch.zeros_like(own[k])
            w[:, : v.shape[1]] = v
            own[k] = w
        elif own[k].shape != v.shape:
            raise ValueError(f"{k}: shape {tuple(v.shape)} does not match {tuple(own[k].shape)}")
        else:
            own[k] = v
    cond_model.load_state_dict(own)
