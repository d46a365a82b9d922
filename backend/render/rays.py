"""Camera rays from the 25-value labels (OpenCV camera, normalised intrinsics)."""

from __future__ import annotations

import torch


def pixel_uv(resolution: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised pixel-centre coordinates [R·R, 2] (u = (j+0.5)/R, v = (i+0.5)/R), row-major."""
    idx = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def rays_from_uv(
    cam2world: torch.Tensor, intrinsics: torch.Tensor, uv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions [N, M, 3] for normalised image points ``uv`` ([M, 2] or [N, M, 2])."""
    n = cam2world.shape[0]
    if uv.ndim == 2:
        uv = uv.unsqueeze(0).expand(n, -1, -1)
    fx = intrinsics[:, 0, 0].unsqueeze(-1)
    fy = intrinsics[:, 1, 1].unsqueeze(-1)
    cx = intrinsics[:, 0, 2].unsqueeze(-1)
    cy = intrinsics[:, 1, 2].unsqueeze(-1)
    sk = intrinsics[:, 0, 1].unsqueeze(-1)
    u, v = uv[..., 0], uv[..., 1]
    x_cam = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y_cam = (v - cy) / fy
    z_cam = torch.ones_like(x_cam)
    dirs_cam = torch.stack([x_cam, y_cam, z_cam], dim=-1)
    dirs = dirs_cam @ cam2world[:, :3, :3].transpose(1, 2)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cam2world[:, :3, 3].unsqueeze(1).expand_as(dirs)
    return origins, dirs


def patch_uv(full_resolution: int, size: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Pixel centres [N, size², 2] of a size×size window at (top, left) of the full-resolution pixel grid.

    Mimic3D renders such patches at the final image's ray density and compares them with the same window
    of the super-resolved image.
    """
    idx = torch.arange(size, device=top.device, dtype=torch.float32)
    rows = (top.float().reshape(-1, 1) + idx + 0.5) / full_resolution   # [N, size]
    cols = (left.float().reshape(-1, 1) + idx + 0.5) / full_resolution
    v = rows[:, :, None].expand(-1, size, size)
    u = cols[:, None, :].expand(-1, size, size)
    return torch.stack([u.reshape(len(top), -1), v.reshape(len(top), -1)], dim=-1)


def label_cameras(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return label[:, :16].reshape(-1, 4, 4), label[:, 16:25].reshape(-1, 3, 3)


def camera_rays(label: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of a ``resolution``² image for labels [N, 25]."""
    cam2world, intrinsics = label_cameras(label)
    uv = pixel_uv(resolution, label.device, label.dtype)
    return rays_from_uv(cam2world, intrinsics, uv)
