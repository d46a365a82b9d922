# SPDX-License-Identifier: GPL-3.0-or-later
"""Weight-free image losses and metrics for inversion.

HFGI3D/PTI use a VGG16 feature distance for the latent and LPIPS-AlexNet for tuning; neither can be
downloaded here, and an untrained network is no perceptual metric. The replacements (spec §8.2, each a
documented deviation in docs/invert.md):

* **pixel L2** (kept from PTI's tuning loss) and **L1**;
* **SSIM** (Gaussian window σ = 1.5, 7 px at 64²), ``1 − SSIM`` as a structural term standing in for LPIPS;
* **multi-scale L1** on a Gaussian pyramid (coarse levels give the broad, low-frequency guidance that deep
  features give the latent search early on, fine levels the edges);
* **gradient L1** (finite differences) for edges.

All images are in the generator's range [−1, 1]. A per-pixel weight map (e.g. a soft foreground or a pseudo
view's confidence) multiplies every term. PSNR and SSIM metrics are computed on [0, 1] images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _gauss_kernel(sigma: float, radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflect padding (identity for sigma <= 0)."""
    if sigma <= 0:
        return img
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    k = _gauss_kernel(sigma, radius, img.device, img.dtype)
    c = img.shape[1]
    x = F.pad(img, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of images in [0, 1] ([N, C, H, W] → [N, 1, H, W], channel mean)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
    saa = gaussian_blur(a * a, sigma) - mu_a**2
    sbb = gaussian_blur(b * b, sigma) - mu_b**2
    sab = gaussian_blur(a * b, sigma) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean(1, keepdim=True)


def _wmean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of x [N, C, H, W] weighted per pixel by weight [N, 1, H, W] (resized when needed)."""
    if weight is None:
        return x.mean()
    if weight.shape[-1] != x.shape[-1]:
        weight = F.interpolate(weight, size=x.shape[-2:], mode="area")
    w = weight.expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1e-8)


def downsample(img: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average resize (the anti-aliased way to compare a high-resolution target with a raw render)."""
    if img.shape[-1] == size:
        return img
    return F.interpolate(img, size=(size, size), mode="area") if img.shape[-1] > size else \
        F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the reconstruction terms (0 disables a term)."""

    l2: float = 1.0
    l1: float = 0.0
    ssim: float = 0.0
    multiscale: float = 0.0
    gradient: float = 0.0
    pyramid_levels: int = 3


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, w: LossWeights,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the terms in ``w`` between images in [−1, 1] ([N, 3, H, W])."""
    loss = pred.new_zeros(())
    diff = pred - target
    if w.l2:
        loss = loss + w.l2 * _wmean(diff**2, weight)
    if w.l1:
        loss = loss + w.l1 * _wmean(diff.abs(), weight)
    if w.ssim:
        s = ssim_map((pred + 1) / 2, (target + 1) / 2)
        loss = loss + w.ssim * _wmean(1 - s, weight)
    if w.gradient:
        gx = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
        gy = (diff[..., 1:, :] - diff[..., :-1, :]).abs()
        wx = None if weight is None else weight[..., :, 1:]
        wy = None if weight is None else weight[..., 1:, :]
        loss = loss + w.gradient * 0.5 * (_wmean(gx, wx) + _wmean(gy, wy))
    if w.multiscale:
        p, t, ww = pred, target, weight
        terms = []
        for _ in range(max(1, w.pyramid_levels)):
            if p.shape[-1] < 8:
                break
            p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
            ww = None if ww is None else F.avg_pool2d(ww, 2)
            terms.append(_wmean((p - t).abs(), ww))
        if terms:
            loss = loss + w.multiscale * torch.stack(terms).mean()
    return loss


# Metrics -------------------------------------------------------------------------------------------------


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [−1, 1] measured on [0, 1] (optionally inside a mask [N, 1, H, W])."""
    a, b = (pred.clamp(-1, 1) + 1) / 2, (target.clamp(-1, 1) + 1) / 2
    mse = float(_wmean((a - b) ** 2, mask.float() if mask is not None else None))
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM of images in [−1, 1] (Gaussian window σ 1.5, on [0, 1])."""
    return float(ssim_map((pred.clamp(-1, 1) + 1) / 2, (target.clamp(-1, 1) + 1) / 2).mean())
