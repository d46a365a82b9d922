"""Tri-plane projection and feature sampling.

Two conventions exist. The official EG3D code projects points onto XY, XZ and ZX (it never uses a YZ plane,
a known bug kept for reproducibility: eg3d #30, #53, #67); Mimic3D and new models use XY, YZ, ZX. Weights
only work with the convention they were trained with, so it is part of the model config.
"""

from __future__ import annotations

import functools
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


def _pixels(g: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower corner and fraction [3, 2, P] of grid_sample's pixel coordinates for normalised ``g`` [3, 2, P].

    ``x = ((g + 1)·W − 1) / 2`` op for op as grid_sample computes it (a 256² plane magnifies a coordinate's
    rounding), clamped to [−1, W] (beyond that every corner is a zero texel either way); NaN reads zeros.
    """
    size = torch.tensor([[w], [h]], device=g.device, dtype=g.dtype)  # [(x, y), 1]
    pix = (g + 1).mul_(size).sub_(1).div_(2)
    pix = torch.nan_to_num_(pix, nan=-1.0)
    pix = torch.minimum(pix.clamp_min_(-1.0), size)
    lo = pix.floor()
    return lo, pix.sub_(lo)


def _first_rows(table: PlaneRows, i: int, batch_index: int) -> list[int]:
    """Row of texel (0, 0) of each of the 3 planes of set ``i`` for one batch element."""
    (h, w), base = table.sizes[i], table.bases[i]
    hp, wp = h + PAD_LO + PAD_HI, w + PAD_LO + PAD_HI
    return [base + ((batch_index * 3 + k) * hp + PAD_LO) * wp + PAD_LO for k in range(3)]


def _corner_maps(table: PlaneRows, i: int, batch_index: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affine maps [6, 12] (+ [12] offsets) from per-plane (x, y) lower corners / fractions to the 12 corner
    rows, x weights and y weights (corner j = plane·4 + dy·2 + dx), for :func:`corner_rows`'s matmul form."""
    wp = table.sizes[i][1] + PAD_LO + PAD_HI
    return _corner_maps_cached(wp, tuple(_first_rows(table, i, batch_index)), str(device))


@functools.lru_cache(maxsize=64)
def _corner_maps_cached(wp: int, first: tuple[int, ...], device: str) -> tuple[torch.Tensor, ...]:
    idx_map, idx_off = torch.zeros(6, 12), torch.zeros(12)
    wx_map, wx_off = torch.zeros(6, 12), torch.zeros(12)
    wy_map, wy_off = torch.zeros(6, 12), torch.zeros(12)
    for k in range(3):
        for dy in range(2):
            for dx in range(2):
                j = k * 4 + dy * 2 + dx
                idx_map[2 * k, j], idx_map[2 * k + 1, j] = 1.0, float(wp)
                idx_off[j] = first[k] + dy * wp + dx
                wx_map[2 * k, j], wx_off[j] = (1.0, 0.0) if dx else (-1.0, 1.0)  # fx or 1 − fx
                wy_map[2 * k + 1, j], wy_off[j] = (1 / 3, 0.0) if dy else (-1 / 3, 1 / 3)  # (fy or 1 − fy) / 3
    return tuple(t.to(device) for t in (idx_map, idx_off, wx_map, wx_off, wy_map, wy_off))


def corner_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and weights [P, 12·sets] of the bilinear corners of world points ``coords`` [P, 3].

    Pixel coordinates as grid_sample(align_corners=False) computes them (:func:`_pixels`); weights include
    the 1/3 of the decoder's mean over the 3 planes. The arithmetic runs planar (points innermost, [6, P]:
    long vectorised loops, where [P, 3, 2, 2] would give loops of length 2). On CPUs, small affine matrix
    products then write the [P, 12] bags directly (exact: integer-valued float32 below 2²⁴, and float32
    matmul precision is checked), which costs a third of building them planar and transposing; elsewhere
    (GPUs, where TF32 could round the indices, or huge tables) planar products and one transposing copy.
    """
    dtype = table.rows.dtype
    device = coords.device
    axes = _axes_index(projection, device) if axes is None else axes
    # grid_sample's normalised coordinates, computed as the reference computes them (same rounding).
    g = (coords.t().index_select(0, axes) * (2.0 / box_warp)).view(3, 2, -1)  # [3 planes, (x, y), P]
    matmul = (device.type == "cpu" and table.rows.shape[0] < 2**24
              and torch.get_float32_matmul_precision() == "highest")
    # 32-bit row indices (half the bytes to build and copy) whenever the table allows them.
    index = torch.int32 if table.rows.shape[0] < 2**31 - 1 else torch.int64
    idx_parts, w_parts = [], []
    for i, (h, w) in enumerate(table.sizes):
        if matmul:
            lo, frac = _pixels(g.float(), h, w)
            idx_map, idx_off, wx_map, wx_off, wy_map, wy_off = _corner_maps(table, i, batch_index, device)
            lo, frac = lo.view(6, -1).t(), frac.view(6, -1).t()  # [P, 6] transposed views: no copies
            idx_parts.append(torch.addmm(idx_off, lo, idx_map).to(index))
            w_parts.append(torch.addmm(wx_off, frac, wx_map).mul_(torch.addmm(wy_off, frac, wy_map)).to(dtype))
            continue
        lo, frac = _pixels(g.to(dtype), h, w)
        wp = w + PAD_LO + PAD_HI
        li = lo.to(index)
        # Row of corner (x0, y0) on each plane, then the corners (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1).
        first = torch.tensor(_first_rows(table, i, batch_index), device=device, dtype=index)
        idx00 = torch.addcmul(li[:, 0], li[:, 1], torch.tensor(wp, device=device, dtype=index))
        idx00 = idx00.add_(first[:, None])  # [3, P]
        offs = torch.tensor([[0, 1], [wp, wp + 1]], device=device, dtype=index)
        idx = idx00[:, None, None, :] + offs[None, :, :, None]  # [3, (y), (x), P]
        wxy = torch.stack([1 - frac, frac], dim=2)  # [3, (x, y), (0, 1), P]
        wts = wxy[:, 1, :, None, :] * (1.0 / 3.0) * wxy[:, 0, None, :, :]  # [3, (y), (x), P]
        idx_parts.append(idx.view(12, -1).t())
        w_parts.append(wts.view(12, -1).t())
    idx = idx_parts[0] if len(idx_parts) == 1 else torch.cat(idx_parts, dim=1)
    wts = w_parts[0] if len(w_parts) == 1 else torch.cat(w_parts, dim=1)
    return idx.contiguous(), wts.contiguous()


def sample_rows(
    table: PlaneRows, coords: torch.Tensor, batch_index: int, projection: str, box_warp: float,
    axes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the 3 planes of the summed plane sets at world points ``coords`` [P, 3] → [P, C].

    The same values as ``sample_planes([...], coords[None]).mean(dim=1)[0]`` within float rounding.
    """
    idx, wts = corner_rows(table, coords, batch_index, projection, box_warp, axes)
    return F.embedding_bag(idx, table.rows, per_sample_weights=wts, mode="sum")
