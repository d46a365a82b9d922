"""Discriminators for 3D-aware GAN training (EG3D's dual discriminator and Mimic3D's patch discriminator).

A StyleGAN2 residual discriminator: FIR down-sampling, equalised learning rate, minibatch standard deviation
and projection conditioning on the camera label. The dual discriminator sees the super-resolved image
concatenated with the up-sampled raw render (6 channels), which ties the SR output to the 3D render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backend.nets import ops
from backend.nets.layers import FullyConnectedLayer, MappingNetwork


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR down-sampling, bias and activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", ops.setup_filter())
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        x = ops.conv2d_resample(x, w, f=self.resample_filter, down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        act_gain = ops.ACTIVATION_GAIN[self.activation] * gain
        return ops.bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """fromrgb (first block only) → conv0 → conv1 (↓2), with a 1×1 ↓2 residual skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=math.sqrt(0.5))
        h = self.conv0(x)
        x = self.conv1(h, gain=math.sqrt(0.5))
        return y + x, [h]


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of samples as an extra channel.

    Groups are formed from *consecutive* samples, so a data-parallel run whose ranks hold consecutive slices
    of the global batch forms exactly the same groups as a single process.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(n // g, g, f, c // f, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/g, F]
        y = y.reshape(n // g, 1, f, 1, 1).expand(n // g, g, f, h, w).reshape(n, f, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, mbstd_group_size: int = 4) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size)
        self.conv = Conv2dLayer(in_channels + 1, in_channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv(self.mbstd(x))
        feats = [x]
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            assert cmap is not None
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x, feats


@dataclass(frozen=True)
class DiscriminatorConfig:
    resolution: int
    img_channels: int = 6
    c_dim: int = 25
    channel_base: int = 32768
    channel_max: int = 512
    cmap_dim: int | None = None
    mapping_layers: int = 8
    mbstd_group_size: int = 4


class Discriminator(nn.Module):
    """A residual discriminator from ``resolution`` down to 4×4, conditioned on a label through a
    projection (``c_dim`` 0: unconditional)."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        log2 = int(math.log2(cfg.resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        ch = {r: min(cfg.channel_base // r, cfg.channel_max) for r in [*self.block_resolutions, 4]}
        cmap_dim = ch[4] if cfg.cmap_dim is None else cfg.cmap_dim
        if cfg.c_dim == 0:
            cmap_dim = 0
        for res in self.block_resolutions:
            in_ch = ch[res] if res < cfg.resolution else 0
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, ch[res], ch[res // 2], cfg.img_channels))
        if cfg.c_dim > 0:
            self.mapping = MappingNetwork(0, cfg.c_dim, cmap_dim, num_ws=None, num_layers=cfg.mapping_layers,
                                          lr_multiplier=0.01, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim, 4, cfg.mbstd_group_size)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None,
                return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = None
        feats: list[torch.Tensor] = []
        for res in self.block_resolutions:
            x, f = getattr(self, f"b{res}")(x, img)
            feats += f
        cmap = self.mapping(None, c) if self.cfg.c_dim > 0 else None
        assert x is not None
        out, f = self.b4(x, cmap)
        feats += f
        return (out, feats) if return_features else out


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a separable Gaussian (EG3D blurs D's inputs early in training to fade in detail)."""
    if sigma <= 0:
        return img
    radius = math.ceil(sigma * 3)
    t = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    img = F.conv2d(F.pad(img, [radius, radius, 0, 0], mode="replicate"), k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1),
                   groups=c)
    return F.conv2d(F.pad(img, [0, 0, radius, radius], mode="replicate"), k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def dual_input(image: torch.Tensor, image_raw: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
    """The 6-channel input of the dual discriminator: the image and the raw render resized to match."""
    raw = F.interpolate(image_raw, size=image.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    x = torch.cat([image, raw], dim=1)
    return gaussian_blur(x, blur_sigma)
