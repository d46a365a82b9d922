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
# [T, C] with a border of zero texels; each point names its 4 bilinear corners on each of the 3 planes of
# every plane set (12 or 24 rows) with their weights, the decoder's 1/3 plane mean folded in, and
# ``embedding_bag(mode='sum')`` gathers and sums them in one pass, straight into the decoder's input [P, C].
# Same function as grid_sample(bilinear, zeros padding, align_corners=False) → mean over planes, equal
# within float rounding. The zero border is grid_sample's zeros padding: pixel coordinates are clamped to
# [−1, S], where every corner a point can name lies in the padded table (those outside the plane are zero
# rows), so no per-corner validity masks are computed.

PAD_LO, PAD_HI = 1, 2  # zero texels before / after each plane axis (corner x0 + 1 ≤ S + 1 after the clamp)


@dataclass(frozen=True)
class PlaneRows:
    """Plane sets as one channels-last table of zero-bordered texel rows (see :func:`plane_rows`).

    ``rows`` [T, C]: set ``i``'s texel (batch b, plane k, row y, column x), −1 ≤ x, y ≤ S + 1, is row
    ``bases[i] + ((b·3 + k)·Hp + y + 1)·Wp + x + 1`` with ``(H, W) = sizes[i]``, ``Hp = H + 3``,
    ``Wp = W + 3``; texels outside the plane are zero.
    """

    rows: torch.Tensor
    bases: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    batch: int


def plane_rows(planes: list[torch.Tensor]) -> PlaneRows:
    """Lay out plane sets [N, 3, C, H, W] as zero-bordered texel rows, all sets in one table (one copy of
    the planes: a render or a mesh builds it once and queries it many times)."""
    if not planes:
        raise ValueError("no plane sets")
    n, _, c = planes[0].shape[:3]
    total = 0
    for p in planes:
        if p.shape[0] != n or p.shape[1] != 3 or p.shape[2] != c:
            raise ValueError(f"plane sets must share batch and channels: {tuple(p.shape)} vs {tuple(planes[0].shape)}")
        total += n * 3 * (p.shape[3] + PAD_LO + PAD_HI) * (p.shape[4] + PAD_LO + PAD_HI)
    rows = planes[0].new_zeros(total, c)
    bases, sizes, base = [], [], 0
    for p in planes:
        h, w = int(p.shape[3]), int(p.shape[4])
        hp, wp = h + PAD_LO + PAD_HI, w + PAD_LO + PAD_HI
        block = rows[base : base + n * 3 * hp * wp].view(n, 3, hp, wp, c)
        block[:, :, PAD_LO : PAD_LO + h, PAD_LO : PAD_LO + w] = p.permute(0, 1, 3, 4, 2)
        bases.append(base)
        sizes.append((h, w))
        base += n * 3 * hp * wp
    return PlaneRows(rows, tuple(bases), tuple(sizes), n)


def _axes_index(projection: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([a for pair in PLANE_AXES[projection] for a in pair], device=device)


def corner_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and weights [P, 12·sets] of the bilinear corners of world points ``coords`` [P, 3].

    Pixel coordinates are grid_sample's (align_corners=False), ``x = ((g + 1)·W − 1) / 2`` of the normalised
    ``g = 2u / box_warp``, computed in its order (a 256² plane magnifies a coordinate's rounding), clamped
    to [−1, W] (beyond that every corner is a zero texel either way); a NaN point reads zeros. Weights
    include the 1/3 of the decoder's mean over the 3 planes. The arithmetic runs planar (points innermost,
    [6, P] and [3, 2, 2, P]: long vectorised loops, where [P, 3, 2, 2] would give loops of length 2); one
    transposing copy at the end gives embedding_bag its [P, 12] bags.
    """
    dtype = table.rows.dtype
    device = coords.device
    # 32-bit row indices (half the bytes to build and transpose) whenever the table allows them.
    index = torch.int32 if table.rows.shape[0] < 2**31 - 1 else torch.int64
    axes = _axes_index(projection, device) if axes is None else axes
    # grid_sample's normalised coordinates, computed as the reference computes them (same rounding).
    g = (coords.t().index_select(0, axes) * (2.0 / box_warp)).to(dtype).view(3, 2, -1)  # [3 planes, (x, y), P]
    idx_parts, w_parts = [], []
    for base, (h, w) in zip(table.bases, table.sizes, strict=True):
        hp, wp = h + PAD_LO + PAD_HI, w + PAD_LO + PAD_HI
        size = torch.tensor([[w], [h]], device=device, dtype=dtype)  # [(x, y), 1]
        pix = (g + 1).mul_(size).sub_(1).div_(2)  # grid_sample's unnormalisation, op for op
        pix = torch.nan_to_num_(pix, nan=-1.0)
        pix = torch.minimum(pix.clamp_min_(-1.0), size)
        lo = pix.floor()
        frac = pix.sub_(lo)
        li = lo.to(index)
        # Row of corner (x0, y0) on each plane, then the corners (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1).
        first = base + ((batch_index * 3 + torch.arange(3, device=device, dtype=index)) * hp + PAD_LO) * wp + PAD_LO
        idx00 = torch.addcmul(li[:, 0], li[:, 1], torch.tensor(wp, device=device, dtype=index))
        idx00 = idx00.add_(first[:, None])  # [3, P]
        offs = torch.tensor([[0, 1], [wp, wp + 1]], device=device, dtype=index)
        idx = idx00[:, None, None, :] + offs[None, :, :, None]  # [3, (y), (x), P]
        wxy = torch.stack([1 - frac, frac], dim=2)  # [3, (x, y), (0, 1), P]
        wts = wxy[:, 1, :, None, :] * (1.0 / 3.0) * wxy[:, 0, None, :, :]  # [3, (y), (x), P]
        idx_parts.append(idx.view(12, -1))
        w_parts.append(wts.view(12, -1))
    idx = idx_parts[0] if len(idx_parts) == 1 else torch.cat(idx_parts)
    wts = w_parts[0] if len(w_parts) == 1 else torch.cat(w_parts)
    return idx.t().contiguous(), wts.t().contiguous()


def sample_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the 3 planes of the summed plane sets at world points ``coords`` [P, 3] → [P, C].

    The same values as ``sample_planes([...], coords[None]).mean(dim=1)[0]`` within float rounding.
    """
    idx, wts = corner_rows(table, coords, batch_index, projection, box_warp, axes)
    return F.embedding_bag(idx, table.rows, per_sample_weights=wts, mode="sum")
