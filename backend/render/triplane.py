"""Tri-plane projection and feature sampling.

Two conventions exist. The official EG3D code projects points onto XY, XZ and ZX (it never uses a YZ plane,
a known bug kept for reproducibility: eg3d #30, #53, #67); Mimic3D and new models use XY, YZ, ZX. Weights
only work with the convention they were trained with, so it is part of the model config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# For each plane, which world axes give the grid's (column, row) coordinates.
PLANE_AXES: dict[str, tuple[tuple[int, int], ...]] = {
    "eg3d": ((0, 1), (0, 2), (2, 0)),        # (x, y), (x, z), (z, x)
    "corrected": ((0, 1), (1, 2), (2, 0)),   # (x, y), (y, z), (z, x)
}


def project_onto_planes(coords: torch.Tensor, projection: str) -> torch.Tensor:
    """[N, M, 3] world points → [N·3, M, 2] plane coordinates (plane index fastest within a sample)."""
    axes = PLANE_AXES[projection]
    projected = torch.stack([coords[..., list(pair)] for pair in axes], dim=1)  # [N, 3, M, 2]
    return projected.reshape(-1, *projected.shape[2:])


def sample_planes(
    planes: list[torch.Tensor], coords: torch.Tensor, projection: str, box_warp: float
) -> torch.Tensor:
    """Bilinearly sample every plane at the projected points; features of several plane sets are summed.

    ``planes``: list of [N, 3, C, S, S] (Mimic3D's coarse and detail planes are summed). ``coords``: [N, M, 3]
    in world units; the box [−box_warp/2, box_warp/2]³ maps to the planes' extent; outside it, zeros.
    Returns [N, 3, M, C].
    """
    n, m, _ = coords.shape
    grid = (project_onto_planes(coords, projection) * (2.0 / box_warp)).unsqueeze(1)  # [N·3, 1, M, 2]
    total = None
    for p in planes:
        _, _, c, h, w = p.shape
        feats = F.grid_sample(p.reshape(n * 3, c, h, w), grid.to(p.dtype), mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        feats = feats.permute(0, 3, 2, 1).reshape(n, 3, m, c)
        total = feats if total is None else total + feats
    assert total is not None
    return total
