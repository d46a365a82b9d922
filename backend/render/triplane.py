"""Tri-plane projection and feature sampling.

Two conventions exist. The official EG3D code projects points onto XY, XZ and ZX (it never uses a YZ plane,
a known bug kept for reproducibility: eg3d #30, #53, #67); Mimic3D and new models use XY, YZ, ZX. Weights
only work with the convention they were trained with, so it is part of the model config.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# Fast tri-plane sampling ------------------------------------------------------------------------------------
#
# ``grid_sample`` on [N·3, C, S, S] planes is the slowest part of a CPU render: it reads the planes channels-
# first (C strided loads per corner), returns [N·3, C, 1, M] that must be permuted, and the decoder then
# averages the 3 planes in another pass. Here the planes are laid out once as channels-last texel rows
# [T, C]; each point names its 4 bilinear corners on each of the 3 planes of every plane set (12 or 24 rows)
# with their weights, the decoder's 1/3 plane mean folded in, and ``embedding_bag(mode='sum')`` gathers and
# sums them in one pass, straight into the decoder's input [P, C]. Same function as grid_sample(bilinear,
# zeros padding, align_corners=False) → mean over planes, equal within float rounding.


@dataclass(frozen=True)
class PlaneRows:
    """Plane sets as one channels-last table of texel rows, built once per render (see :func:`plane_rows`).

    ``rows`` [T, C]: set ``i``'s texel (batch b, plane k, row y, column x) is row
    ``bases[i] + ((b·3 + k)·H + y)·W + x`` with ``(H, W) = sizes[i]``.
    """

    rows: torch.Tensor
    bases: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    batch: int


def plane_rows(planes: list[torch.Tensor]) -> PlaneRows:
    """Lay out plane sets [N, 3, C, H, W] as texel rows (one copy of the planes; summed sets share one table)."""
    if not planes:
        raise ValueError("no plane sets")
    n, _, c = planes[0].shape[:3]
    parts, bases, sizes, base = [], [], [], 0
    for p in planes:
        if p.shape[0] != n or p.shape[1] != 3 or p.shape[2] != c:
            raise ValueError(f"plane sets must share batch and channels: {tuple(p.shape)} vs {tuple(planes[0].shape)}")
        h, w = int(p.shape[3]), int(p.shape[4])
        parts.append(p.permute(0, 1, 3, 4, 2).reshape(-1, c))
        bases.append(base)
        sizes.append((h, w))
        base += n * 3 * h * w
    rows = parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)
    return PlaneRows(rows, tuple(bases), tuple(sizes), n)


def _axes_index(projection: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([a for pair in PLANE_AXES[projection] for a in pair], device=device)


def corner_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and weights [P, 12·sets] of the bilinear corners of world points ``coords`` [P, 3].

    Pixel coordinates follow grid_sample(align_corners=False) op for op (``((g + 1)·size − 1) / 2`` of the
    normalised ``g``); corners outside a plane get weight 0 (zeros padding) and a clamped, harmless index.
    Weights include the 1/3 of the decoder's mean over the 3 planes.
    """
    dtype = table.rows.dtype
    axes = _axes_index(projection, coords.device) if axes is None else axes
    g = (coords.index_select(1, axes) * (2.0 / box_warp)).to(dtype).view(-1, 3, 2)  # [P, 3, (x, y)]
    idx_parts, w_parts = [], []
    corner = torch.arange(2, device=coords.device)
    for base, (h, w) in zip(table.bases, table.sizes, strict=True):
        size = torch.tensor([w, h], device=coords.device, dtype=dtype)
        pix = ((g + 1) * size - 1) / 2
        lo = pix.floor()
        frac = pix - lo
        i = lo.long().unsqueeze(-1) + corner  # [P, 3, 2, 2]: (plane, axis, corner)
        limit = size.long().view(1, 1, 2, 1)
        valid = (i >= 0) & (i < limit)
        wt = torch.stack([1 - frac, frac], dim=-1) * valid
        i = torch.minimum(i.clamp_min_(0), limit - 1)
        plane = base + (batch_index * 3 + torch.arange(3, device=coords.device)) * (h * w)  # [3]
        # corner (y, x): row = plane + y·W + x; weight = wy · wx / 3.
        idx = plane.view(1, 3, 1, 1) + i[:, :, 1, :, None] * w + i[:, :, 0, None, :]
        wts = (wt[:, :, 1, :, None] * (1.0 / 3.0)) * wt[:, :, 0, None, :]
        idx_parts.append(idx.reshape(idx.shape[0], -1))
        w_parts.append(wts.reshape(wts.shape[0], -1))
    if len(idx_parts) == 1:
        return idx_parts[0], w_parts[0]
    return torch.cat(idx_parts, dim=1), torch.cat(w_parts, dim=1)


def sample_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the 3 planes of the summed plane sets at world points ``coords`` [P, 3] → [P, C].

    The same values as ``sample_planes([...], coords[None]).mean(dim=1)[0]`` within float rounding.
    """
    idx, wts = corner_rows(table, coords, batch_index, projection, box_warp, axes)
    return F.embedding_bag(idx, table.rows, per_sample_weights=wts, mode="sum")
