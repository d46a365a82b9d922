# SPDX-License-Identifier: GPL-3.0-or-later
"""Running the monocular depth network and turning its relative disparity into camera-space depth.

The network (``UNetConfig(kind="depth")``) is trained with a scale-and-shift-invariant loss
(``train/depth/loss.py``), so its output ``p`` is disparity only up to an unknown affine map:
``1/z ≈ a·p + b``. IVID (spec §4.1) fixes MiDaS's scale by moving the nearest point to 0.5 units (pivot at
1); MiDaS's shift is simply assumed to be zero. Our loss instead pins the background: during training the
background (depth ``inf``) must map to disparity 0 under the same affine map that fits the head. So:

* the **shift** ``b`` comes from the background: a low percentile of ``p`` (the background covers well
  over :data:`BACKGROUND_QUANTILE` of a head image) is disparity 0;
* the **scale** ``a`` puts the nearest point (a high percentile of ``p``, robust to single pixels) at
  ``r - NEAREST_OFFSET`` world units, ``r`` being the camera's distance to its pivot - IVID's "nearest
  point a fixed distance in front of the pivot" (0.5 in front of a pivot at 1). FFHQ cameras orbit the
  world origin at 2.7 and look at the pivot (0, 0, 0.2), so ``r`` = 2.5 for the frontal view (up to 2.71
  from the side); an offset of 0.3 puts the frontal nearest point at 2.2 world units. The synthetic heads'
  true nearest point lies at z ≈ 2.3–2.4 (``aware3d-train depth-eval`` reports it), so metric depths come
  out a few per cent too near (15 % with an offset of 0.5); relative depth within the head is what the
  network provides. ``depth_for_view(..., nearest=z)`` overrides the choice.

Pixels whose disparity falls below ``1/far`` (the background, anything beyond the backdrop) get ``far``,
the backdrop of :mod:`backend.views.rgbd`; everything is clipped to the camera's ``[near, far]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from backend.diffusion.config import UNetConfig
from backend.diffusion.unet import UNet
from backend.views.rgbd import Camera

NEAREST_OFFSET = 0.3
BACKGROUND_QUANTILE = 0.05
NEAREST_QUANTILE = 0.999

PRESETS: dict[str, UNetConfig] = {
    # the bundled 64 px model: 0.36 M parameters, small next to the view models it feeds
    "small": UNetConfig(kind="depth", resolution=64, base_channels=16, channel_mults=(1, 2, 2, 2),
                        attention_resolutions=(8,), head_channels=16, groups=4),
    # tests: a few thousand parameters
    "tiny": UNetConfig(kind="depth", resolution=16, base_channels=8, channel_mults=(1, 2),
                       attention_resolutions=(8,), head_channels=8, groups=4),
}


def depth_config(preset: str, resolution: int) -> UNetConfig:
    """The preset's network for images of ``resolution`` pixels (attention stays at the same sizes)."""
    if preset not in PRESETS:
        raise KeyError(preset)
    return PRESETS[preset].replace(resolution=resolution)


@torch.no_grad()
def estimate_disparity(net: UNet, images: torch.Tensor) -> torch.Tensor:
    """Relative disparity [B, 1, H, W] of RGB images [B, 3, H, W] in [0, 1] (scale and shift unknown).

    Images of another size are resized (antialiased bilinear) to the network's resolution and the result
    resized back, so any size works; the network saw only square images, so keep the aspect near 1.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    param = next(net.parameters())
    x = images.to(param.device, param.dtype) * 2.0 - 1.0
    h, w = x.shape[-2:]
    res = net.cfg.resolution
    resize = (h, w) != (res, res)
    if resize:
        x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
    was_training = net.training
    net.eval()
    out = net(x)
    net.train(was_training)
    if resize:
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return out.float()


def metric_disparity(p: np.ndarray, nearest: float) -> np.ndarray:
    """Relative disparity -> metric disparity 1/z (module docstring): background quantile -> 0, nearest
    quantile -> ``1/nearest``. A flat prediction (no structure) gives 0 everywhere (all backdrop)."""
    p = np.asarray(p, dtype=np.float64)
    lo, hi = np.quantile(p, [BACKGROUND_QUANTILE, NEAREST_QUANTILE])
    if not hi - lo > 1e-8 * max(abs(hi), abs(lo), 1.0):
        return np.zeros_like(p)
    return np.clip((p - lo) / (hi - lo), 0.0, 1.0) / nearest


def nearest_distance(camera: Camera) -> float:
    """Where :func:`depth_for_view` puts the nearest point: ``r - NEAREST_OFFSET`` inside [near, far]."""
    near, far = camera.depth_range()
    r = float(np.linalg.norm(camera.position - camera.pivot))
    return min(max(r - NEAREST_OFFSET, near), far)


def depth_for_view(net: UNet, rgb: np.ndarray, camera: Camera, nearest: float | None = None) -> np.ndarray:
    """Camera-space depth z [H, W] (float32, in the camera's ``[near, far]``) of one RGB view [H, W, 3] in
    [0, 1], as IVID makes it from MiDaS: nearest point at :func:`nearest_distance` (2.2 for the frontal
    FFHQ camera) unless ``nearest`` is given, background at ``far``."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be [H, W, 3], got {rgb.shape}")
    near, far = camera.depth_range()
    nearest = nearest_distance(camera) if nearest is None else float(nearest)
    p = estimate_disparity(net, torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].cpu().numpy()
    disp = metric_disparity(p, nearest)
    with np.errstate(divide="ignore"):
        z = np.where(disp > 1.0 / far, 1.0 / np.maximum(disp, 1e-12), far)
    return np.clip(z, near, far).astype(np.float32)


def align_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
                      ) -> tuple[float, float]:
    """Least-squares (s, t) minimising Σ (s·pred + t − target)² over ``mask``; a constant prediction gets
    s = 0, t = mean(target) (the best constant), so it can serve as a baseline."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    if mask is not None:
        p, g = p[mask], g[mask]
    p, g = p.reshape(-1), g.reshape(-1)
    if p.size == 0:
        return 1.0, 0.0
    pm, gm = p.mean(), g.mean()
    var = float(np.square(p - pm).mean())
    if var <= 1e-12 * max(pm * pm, 1.0):
        return 0.0, float(gm)
    s = float(((p - pm) * (g - gm)).mean() / var)
    return s, float(gm - s * pm)
