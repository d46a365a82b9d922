# SPDX-License-Identifier: GPL-3.0-or-later
"""Pseudo multi-view targets by visibility analysis (HFGI3D's key idea, spec §2.4).

For each of K novel cameras around the input's own pose:

1. **geometry**: the stage-1 generator's depth at the novel camera gives one surface point per novel pixel
   (``origin + t · dir``); the stage-1 depth at the input camera is the input's own surface; pixels where
   the volume is mostly transparent (a learned backdrop shows through) have no surface (:func:`masked_depth`);
2. **visibility**: a novel pixel's point is *visible in the input* when it is the front-most point along
   its input ray, within a tolerance: its distance to the input camera agrees with the input depth sampled
   where it projects (and it projects inside the photo);
3. **coverage**: the input's pixels, unprojected through the input depth and splatted into the novel view
   (a scatter-min z-buffer, closed by one pixel), mark where the input surface lands at all; this plays the
   role of HFGI3D's coverage channel (it removes the band the novel view sees past the input frustum and
   gaps at depth discontinuities);
4. **soft mask** = erode(visible × covered) then a Gaussian blur;
5. **pseudo view** = mask · (input texture warped there) + (1 − mask) · (stage-1 render at the novel camera).

Deviations (docs/invert.md): backward warping (SPI's scheme, spec §8.2a) replaces pytorch3d's point
splatting of a million mesh samples, so every novel pixel gets exactly one bilinear input sample, batched
on the device with no Python loops; depth is the renderer's distance along unit rays (not camera z); the
tolerance is SPI's order of magnitude (0.04 world units, HFGI3D: 0.002), because the two depths come from
two renders of a soft density field rather than from one mesh, and a 1–2 pixel tolerance rejected most of
the face with the bundled model (measured: mean mask 0.15 at 1.5 px vs 0.33 at 0.037 units); the
cameras sit on an ellipse centred on the *input's* pose (HFGI3D uses one fixed world orbit, ±20° yaw, for
every input), and ``layout='world'`` reproduces HFGI3D's orbit for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.generator import TriPlaneGenerator
from backend.invert.geometry import inside, orbit_labels, project, sample_image, unproject
from backend.invert.losses import gaussian_blur
from backend.invert.render import render_views

LAYOUTS = ("input", "world")


@dataclass(frozen=True)
class PseudoSettings:
    views: int = 12
    yaw_range: float = 30.0  # half-width of the yaw ellipse around the input pose (degrees)
    pitch_range: float = 10.0
    layout: str = "input"
    tolerance: float = 0.04  # visibility tolerance in world units (SPI: 0.05; ≈ 4 pixel footprints at 64²)
    erode_px: int = 1
    blur_px: float = 1.0  # Gaussian sigma of the mask's soft edge, in pixels
    margin: float = 0.01  # points within this fraction of the photo's edge count as outside
    fill_weight: float = 1.0  # loss weight of the filled (generator) regions relative to warped ones


@dataclass
class PseudoView:
    yaw: float
    pitch: float
    label: torch.Tensor  # [1, 25]
    image: torch.Tensor  # [1, 3, R, R] blended target
    mask: torch.Tensor  # [1, 1, R, R] soft weight of the warped input texture
    warped: torch.Tensor  # [1, 3, R, R] input texture at this view (meaningful where mask > 0)
    fill: torch.Tensor  # [1, 3, R, R] stage-1 render at this view
    depth: torch.Tensor  # [1, 1, R, R] stage-1 depth at this view

    def weight(self, fill_weight: float) -> torch.Tensor | None:
        """Per-pixel loss weight: 1 on warped texture, ``fill_weight`` on generator fill (None if uniform)."""
        if fill_weight == 1.0:
            return None
        return self.mask + fill_weight * (1 - self.mask)


def pseudo_poses(yaw: float, pitch: float, s: PseudoSettings) -> list[tuple[float, float]]:
    """K cameras on a closed ellipse: around the input pose ('input') or HFGI3D's fixed orbit ('world').

    HFGI3D's orbit (decoded from triplane_pose_30.npy): yaw = 0.35·sin(2πk/K) rad (±20°), polar angle
    π/2 − 0.05 + 0.25·cos(2πk/K) in the official sampler's v parameterisation.
    """
    if s.layout not in LAYOUTS:
        raise ValueError(f"pseudo-view layout must be one of {LAYOUTS}, got {s.layout!r}")
    out = []
    for k in range(s.views):
        a = 2 * math.pi * k / s.views
        if s.layout == "world":
            from backend.cameras import official_yaw_pitch_from_hv

            y, p = official_yaw_pitch_from_hv(math.pi / 2 + 0.35 * math.sin(a), math.pi / 2 - 0.05 + 0.25 * math.cos(a))
            out.append((y, p))
        else:
            out.append((yaw + s.yaw_range * math.sin(a), pitch + s.pitch_range * math.cos(a)))
    return out


def masked_depth(depth: torch.Tensor, alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Depth with +inf where the volume is mostly transparent (alpha < threshold).

    Models with a learned backdrop (``cfg.background = 'gradient'``) render the image background behind the
    volume, so their depth there is meaningless; such pixels are neither warped from nor into (they get the
    stage-1 fill, whose backdrop is the photo's). For models that paint the background as geometry (official
    EG3D) alpha is near 1 everywhere and nothing changes.
    """
    return torch.where(alpha >= threshold, depth, torch.full_like(depth, float("inf")))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def visibility(novel_depth: torch.Tensor, novel_label: torch.Tensor, input_depth: torch.Tensor,
               input_label: torch.Tensor, tolerance: float, margin: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which novel pixels see a point that is front-most along its input ray (within ``tolerance``).

    Depths are [N, 1, R, R] (distance along unit rays); returns (visible bool [N, 1, R, R], input
    coordinates uv [N, R·R, 2] of each novel pixel's point).
    """
    n, _, r, _ = novel_depth.shape
    pts = unproject(novel_depth, novel_label).reshape(n, -1, 3)
    uv, dist, z = project(pts, input_label.expand(n, -1))
    uv = torch.nan_to_num(uv, nan=-1.0, posinf=-1.0, neginf=-1.0)  # background (inf depth) → outside
    d_in = sample_image(input_depth.expand(n, -1, -1, -1), uv)[:, 0]
    vis = inside(uv, margin) & (z > 0) & ((dist - d_in).abs() <= tolerance) & torch.isfinite(d_in)
    vis = vis & torch.isfinite(novel_depth.reshape(n, -1))
    return vis.reshape(n, 1, r, r), uv


def coverage(input_depth: torch.Tensor, input_label: torch.Tensor, novel_label: torch.Tensor,
             resolution: int) -> torch.Tensor:
    """Novel pixels hit by the input's unprojected pixels (scatter-min z-buffer, closed by one pixel)."""
    n = novel_label.shape[0]
    pts = unproject(input_depth, input_label).reshape(1, -1, 3).expand(n, -1, -1)
    uv, dist, z = project(pts, novel_label)
    ok = inside(uv) & (z > 0) & torch.isfinite(dist)
    uv = torch.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0)
    ij = torch.floor(uv * resolution).long()
    flat = (ij[..., 1].clamp(0, resolution - 1) * resolution + ij[..., 0].clamp(0, resolution - 1))
    zbuf = torch.full((n, resolution * resolution), float("inf"), device=input_depth.device)
    zbuf.scatter_reduce_(1, flat.masked_fill(~ok, 0), torch.where(ok, dist, torch.full_like(dist, float("inf"))),
                         reduce="amin", include_self=True)
    hit = torch.isfinite(zbuf).float().reshape(n, 1, resolution, resolution)
    closed = -F.max_pool2d(-F.max_pool2d(hit, 3, 1, 1), 3, 1, 1)  # dilate then erode: fill pinholes
    return closed > 0.5


def soft_mask(hard: torch.Tensor, erode_px: int, blur_px: float) -> torch.Tensor:
    """Erode by ``erode_px`` (min-pool) and blur with sigma ``blur_px``: float [N, 1, R, R] in [0, 1]."""
    m = hard.float()
    if erode_px > 0:
        k = 2 * erode_px + 1
        m = -F.max_pool2d(-F.pad(m, (erode_px,) * 4, value=1.0), k, 1)
    return gaussian_blur(m, blur_px).clamp(0, 1) * (m.amax((2, 3), keepdim=True) > 0)


def build_pseudo_views(
    G1: TriPlaneGenerator,
    ws: torch.Tensor,
    input_image: torch.Tensor,
    input_label: torch.Tensor,
    yaw: float,
    pitch: float,
    settings: PseudoSettings,
    input_depth: torch.Tensor | None = None,
    progress: object = None,
) -> tuple[list[PseudoView], torch.Tensor]:
    """Pseudo views for the input image [1, 3, R, R] at ``input_label``; returns (views, input depth R²).

    ``G1`` is the stage-1 (preliminarily tuned) generator: its depth gives the geometry and its renders the
    fill. ``input_depth`` (R² or the neural resolution) may be given, e.g. for texture edits.
    """
    device = input_image.device
    res = input_image.shape[-1]
    poses = pseudo_poses(yaw, pitch, settings)
    labels = orbit_labels(G1.cfg, torch.tensor([p[0] for p in poses]), torch.tensor([p[1] for p in poses]))
    labels = labels.to(device)
    if input_depth is None:
        out_in = render_views(G1, ws, input_label, seed=0, grad=False, exact=True)
        input_depth = masked_depth(out_in["image_depth"], out_in["image_alpha"])
    d_in = _resize(input_depth, res)
    tol = settings.tolerance
    views: list[PseudoView] = []
    for k in range(len(poses)):
        lab = labels[k : k + 1]
        out = render_views(G1, ws, lab, seed=0, grad=False, exact=True)
        fill = _resize(out["image"], res)
        depth = _resize(masked_depth(out["image_depth"], out["image_alpha"]), res)
        views.append(make_view(poses[k], lab, depth, fill, input_image, input_label, d_in, tol, settings))
        if callable(progress):
            progress("pseudo", k + 1, len(poses), f"pseudo view {k + 1}/{len(poses)}")
    return views, d_in


def make_view(pose: tuple[float, float], label: torch.Tensor, depth: torch.Tensor, fill: torch.Tensor,
              input_image: torch.Tensor, input_label: torch.Tensor, input_depth: torch.Tensor, tolerance: float,
              settings: PseudoSettings) -> PseudoView:
    """Blend one pseudo view from its geometry (depth), its fill and the input (see the module docstring)."""
    res = input_image.shape[-1]
    vis, uv = visibility(depth, label, input_depth, input_label, tolerance, settings.margin)
    cov = coverage(input_depth, input_label, label, res)
    mask = soft_mask(vis & cov, settings.erode_px, settings.blur_px)
    warped = sample_image(input_image, uv).reshape(1, 3, res, res)
    image = mask * warped + (1 - mask) * fill
    return PseudoView(pose[0], pose[1], label, image, mask, warped, fill, depth)
