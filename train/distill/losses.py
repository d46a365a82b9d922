# SPDX-License-Identifier: GPL-3.0-or-later
"""The distillation losses that need more than an L1: truth at the neural resolution, density against the
true signed distance, and a perceptual distance without downloaded weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.gan.perceptual import feature_distance
from train.synthetic.heads import head_sdf
from train.synthetic.params import HeadParams


def truth_at(image: torch.Tensor, depth: torch.Tensor, res: int) -> dict[str, torch.Tensor]:
    """The truth at the neural render's resolution ``res`` (an integer divisor of the truth's size).

    ``image`` is area-averaged; ``coverage`` is the share of each low-resolution pixel that is head (the
    opacity the render should reach); ``depth`` is the mean true depth where the whole pixel is head, with
    ``depth_valid`` marking those pixels (at the silhouette a pixel's depth is a mix of head and background).
    """
    f = image.shape[-1] // res
    if f * res != image.shape[-1]:
        raise ValueError(f"truth of size {image.shape[-1]} cannot be averaged to {res}")
    fg = torch.isfinite(depth).float().unsqueeze(1)
    d = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)).unsqueeze(1)
    coverage = F.avg_pool2d(fg, f)
    return {"image": F.avg_pool2d(image, f), "coverage": coverage,
            "depth": F.avg_pool2d(d, f) / coverage.clamp_min(1e-6), "depth_valid": coverage >= 1 - 1e-6}


def visible_surface(labels: torch.Tensor, depth: torch.Tensor, image: torch.Tensor, n: int,
                    rngs: Sequence[np.random.Generator]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` points per image on the true surface seen at random head pixels, with those pixels' colours.

    Returns points [N, n, 3], colours [N, n, 3] (as the image, in [-1, 1]) and whether the image has any head
    pixel [N] (images without one get zeros). One generator per image, so an image's points do not depend on
    which process or batch position it has.
    """
    from backend.render.rays import label_cameras, pixel_uv, rays_from_uv

    b, res = depth.shape[0], depth.shape[-1]
    cam2world, intrinsics = label_cameras(labels.float())
    origins, dirs = rays_from_uv(cam2world, intrinsics, pixel_uv(res, labels.device))
    flat, colours = depth.reshape(b, -1), image.reshape(b, 3, -1)
    points, picked = torch.zeros(b, n, 3), torch.zeros(b, n, 3)
    seen = torch.zeros(b, dtype=torch.bool)
    for i, rng in enumerate(rngs):
        hits = torch.nonzero(torch.isfinite(flat[i])).squeeze(1)
        if hits.numel() == 0:
            continue
        pick = hits[torch.from_numpy(rng.integers(hits.numel(), size=n))]
        points[i] = origins[i, pick] + dirs[i, pick] * flat[i, pick, None]
        picked[i] = colours[i, :, pick].T
        seen[i] = True
    return points, picked, seen


def surface_samples(labels: torch.Tensor, depth: torch.Tensor, n: int, rngs: Sequence[np.random.Generator],
                    spread: float = 0.03) -> torch.Tensor:
    """[N, n, 3] world points: half jittered (normal, ``spread`` world units) around the true surface seen in
    the image, half anywhere in the tri-plane box; images without head pixels get box points only."""
    half = n // 2
    box = torch.stack([torch.from_numpy(rng.uniform(-0.5, 0.5, size=(n, 3)).astype(np.float32)) for rng in rngs])
    near, _, seen = visible_surface(labels, depth, torch.zeros(depth.shape[0], 3, *depth.shape[1:]), half, rngs)
    jitter = torch.stack([torch.from_numpy(rng.normal(0.0, spread, size=(half, 3)).astype(np.float32))
                          for rng in rngs])
    box[seen, :half] = (near + jitter)[seen]
    return box


def true_occupancy(heads: Sequence[HeadParams], points: torch.Tensor, softness: float) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(soft occupancy in [0, 1], signed distance) of each head at its points [N, M, 3]."""
    sdf = torch.stack([head_sdf(h, p) for h, p in zip(heads, points)])
    return torch.sigmoid(-sdf / softness), sdf


def density_loss(sigma: torch.Tensor, occupancy: torch.Tensor, level: float, scale: float) -> torch.Tensor:
    """Binary cross-entropy of the raw density, read as the logit ``(sigma - level) / scale``, against the true
    occupancy: the density's ``level`` set is pulled onto the true surface (so the mesh at that level is
    right by construction), empty space towards zero density and the inside towards opaque."""
    return F.binary_cross_entropy_with_logits((sigma.squeeze(-1) - level) / scale, occupancy)


class FeaturePerceptual(nn.Module):
    """LPIPS-style distance in the activations of the feature network's residual stages.

    The only image network we have without downloads is our own feature network (trained to read every head
    parameter from a 64² image), so its stages measure what makes two heads differ. The same network scores
    FID, so its FID is no longer an independent judge of a model trained with this loss: the model card
    says so next to the figure.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        layers = list(net.trunk)  # type: ignore[attr-defined]
        self.stages = nn.ModuleList(nn.Sequential(*layers[i:i + 6]) for i in range(0, len(layers), 6))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.net.prepare(x)  # type: ignore[attr-defined]
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = self.features(target)
        return feature_distance(self.features(x), ft).mean()
