# SPDX-License-Identifier: GPL-3.0-or-later
"""Differentiable cameras and pixel geometry for inversion: orbit labels, unprojection, projection.

Why a torch twin of :func:`backend.cameras.orbit_camera`: the pose is optimised together with the latent
(joint refinement), so the 25-value label must keep its autograd graph back to yaw and pitch. The numpy
version stays the reference; ``tests/test_invert_geometry.py`` checks that both give the same label.

Depth follows the renderer (EG3D's ``image_depth``): ``t`` is the distance along the *unit* ray through the
pixel centre, so a point is ``origin + t · dir`` and its "depth" seen from another camera is its Euclidean
distance to that camera's centre (not its camera-space z; spec §8.2 "unproject along unit rays with t").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backend.cameras import label_tensor
from backend.config import GeneratorConfig
from backend.render.rays import camera_rays, label_cameras


def orbit_labels(
    cfg: GeneratorConfig,
    yaw_deg: torch.Tensor | float,
    pitch_deg: torch.Tensor | float,
    radius: float | None = None,
    focal: float | None = None,
) -> torch.Tensor:
    """Labels [N, 25] of cameras orbiting the origin and looking at the model's pivot (differentiable).

    Same convention as ``cameras.orbit_camera``: yaw moves the camera towards +x, pitch moves it up.
    """
    r = cfg.rendering
    yaw = torch.as_tensor(yaw_deg, dtype=torch.float32).reshape(-1)
    pitch = torch.as_tensor(pitch_deg, dtype=torch.float32).reshape(-1)
    yaw, pitch = torch.broadcast_tensors(yaw, pitch)
    y, p = torch.deg2rad(yaw), torch.deg2rad(pitch)
    rad = float(radius or r.avg_camera_radius)
    origin = rad * torch.stack([torch.cos(p) * torch.sin(y), torch.sin(p), torch.cos(p) * torch.cos(y)], -1)
    target = torch.tensor(r.avg_camera_pivot, dtype=torch.float32, device=origin.device)
    forward = F.normalize(target - origin, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], device=origin.device).expand_as(forward)
    right = F.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    down = F.normalize(torch.cross(forward, right, dim=-1), dim=-1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=origin.device).expand(origin.shape[0], 1, 4)
    c2w = torch.cat([torch.stack([right, down, forward, origin], dim=-1), bottom], dim=1)  # columns
    return label_tensor(c2w, focal if focal is not None else r.focal, device=origin.device)


def pose_from_label(label: torch.Tensor | list[float]) -> tuple[float, float, float]:
    """(yaw, pitch, radius) of a camera centre seen from the origin, in degrees (inverse of the orbit)."""
    lab = torch.as_tensor(label, dtype=torch.float64).reshape(-1)
    x, y, z = (float(lab[3]), float(lab[7]), float(lab[11]))
    r = math.sqrt(x * x + y * y + z * z)
    return math.degrees(math.atan2(x, z)), math.degrees(math.asin(max(-1.0, min(1.0, y / max(r, 1e-12))))), r


def unproject(depth: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """World points [N, H, W, 3] of a depth map [N, 1, H, W] (distance along unit rays) seen by ``label``."""
    n, _, h, w = depth.shape
    if h != w:
        raise ValueError("depth maps must be square")
    origins, dirs = camera_rays(label.float(), h)
    pts = origins + dirs * depth.reshape(n, -1, 1)
    return pts.reshape(n, h, w, 3)


def project(points: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points [N, M, 3] → normalised image coordinates uv [N, M, 2], distance to the camera centre [N, M]
    (the renderer's depth) and camera-space z [N, M] (positive in front of the camera)."""
    c2w, K = label_cameras(label.float())
    rot, origin = c2w[:, :3, :3], c2w[:, :3, 3]
    rel = points - origin[:, None]
    cam = rel @ rot  # world → camera: R^T (p − o), written row-wise
    z = cam[..., 2]
    zs = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy, sk = K[:, 0, 2, None], K[:, 1, 2, None], K[:, 0, 1, None]
    u = (fx * cam[..., 0] + sk * cam[..., 1]) / zs + cx
    v = fy * cam[..., 1] / zs + cy
    return torch.stack([u, v], -1), rel.norm(dim=-1), z


def sample_image(img: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample images [N, C, H, W] at normalised coordinates uv [N, M, 2] (pixel centres at (j+0.5)/W).

    Returns [N, C, M]; points outside the image get the border value (callers mask them)."""
    grid = (uv * 2 - 1)[:, :, None, :]
    out = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[..., 0]


def inside(uv: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """True where normalised coordinates lie inside the image (shrunk by ``margin`` image widths)."""
    return ((uv >= margin) & (uv <= 1 - margin)).all(-1)

