"""A small z-buffer triangle rasteriser in torch (CPU or GPU), for depth maps, visibility and UV baking.

Why our own: meshing needs three things a renderer would give — a mesh's depth from a generator camera
(to check the mesh against the generator's own depth render), per-vertex visibility when projecting an
image onto the mesh, and the texel → (triangle, barycentrics) map for baking a texture in UV space —
and the usual libraries are heavy or non-commercially licensed (nvdiffrast). Vectorised: each triangle's
bounding-box pixels are expanded into candidate fragments in chunks bounded by a fragment budget, tested
with edge functions, and resolved with ``scatter_reduce('amin')``.

Pixel convention (matches EG3D's ray sampler and ``backend.cameras.project_points``): x right, y down, the
centre of pixel (row i, column j) is at ``(j + 0.5, i + 0.5)``. A pixel is covered when its centre lies in
the triangle (edges included). Barycentrics are perspective-correct when per-vertex depths are given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from backend import cameras

DEFAULT_FRAGMENT_BUDGET = 1 << 22


@dataclass
class Fragments:
    face: torch.Tensor  # [H, W] int64, −1 where empty
    bary: torch.Tensor  # [H, W, 3] float32 (zeros where empty)
    depth: torch.Tensor  # [H, W] float32, +inf where empty

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0


def _edge(ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor,
          px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _barycentrics(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics [K, 3] of pixel centres in triangles ``tri`` [K, 3, 2]; inside mask."""
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    area = _edge(x0, y0, x1, y1, x2, y2)
    w0 = _edge(x1, y1, x2, y2, px, py)
    w1 = _edge(x2, y2, x0, y0, px, py)
    w2 = _edge(x0, y0, x1, y1, px, py)
    safe = torch.where(area == 0, torch.ones_like(area), area)
    b = torch.stack([w0, w1, w2], dim=1) / safe[:, None]
    inside = (area != 0) & (b >= -1e-6).all(dim=1)
    return b, inside


def rasterize(
    xy: torch.Tensor,
    depth: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    fragment_budget: int = DEFAULT_FRAGMENT_BUDGET,
    near: float = 1e-6,
    on_progress: Callable[[int, int], None] | None = None,
) -> Fragments:
    """Rasterise triangles given per-vertex pixel coordinates ``xy`` [V, 2] and depths ``depth`` [V] (> 0).

    Triangles with a vertex at depth <= ``near`` are skipped (no clipping). For flat 2-D rasterisation
    (UV baking) pass ``depth = ones``: then barycentrics are plain screen-space ones.

    ``on_progress(done, total)`` is called after each chunk of at most ``fragment_budget`` candidate
    fragments, then of covered pixels whose barycentrics are computed; it may raise (a cancel). Why: a 2048²
    UV atlas is seconds of work, the budget bounds the time between two calls. The result does not depend on
    the budget.
    """
    device = xy.device
    xy = xy.to(torch.float64)
    depth = depth.to(torch.float64)
    faces = faces.to(device=device, dtype=torch.long)
    zbuf = torch.full((height * width,), float("inf"), dtype=torch.float64, device=device)
    fbuf = torch.full((height * width,), -1, dtype=torch.long, device=device)
    empty = Fragments(fbuf.view(height, width), torch.zeros((height, width, 3), device=device),
                      zbuf.float().view(height, width))
    if faces.numel() == 0:
        return empty

    tri = xy[faces]  # [F, 3, 2]
    tz = depth[faces]  # [F, 3]
    x0 = torch.ceil(tri[..., 0].amin(dim=1) - 0.5).clamp(0, width).long()
    x1 = torch.floor(tri[..., 0].amax(dim=1) - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(tri[..., 1].amin(dim=1) - 0.5).clamp(0, height).long()
    y1 = torch.floor(tri[..., 1].amax(dim=1) - 0.5).clamp(-1, height - 1).long()
    wx = (x1 - x0 + 1).clamp_min(0)
    wy = (y1 - y0 + 1).clamp_min(0)
    count = wx * wy
    count[(tz <= near).any(dim=1) | ~torch.isfinite(tri).all(dim=2).all(dim=1)] = 0
    live = torch.nonzero(count).squeeze(1)
    if live.numel() == 0:
        return empty
    counts = count[live]
    ends = torch.cumsum(counts, 0)

    start = 0
    n_live = live.numel()
    while start < n_live:
        base = int(ends[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(ends, base + fragment_budget, right=True))
        stop = max(stop, start + 1)
        fid = live[start:stop]
        c = counts[start:stop]
        owner = torch.repeat_interleave(torch.arange(fid.numel(), device=device), c)
        first = torch.cumsum(c, 0) - c
        local = torch.arange(int(c.sum()), device=device) - first[owner]
        f = fid[owner]
        px = x0[f] + local % wx[f]
        py = y0[f] + local // wx[f]
        b, inside = _barycentrics(tri[f], px.double() + 0.5, py.double() + 0.5)
        f, px, py, b = f[inside], px[inside], py[inside], b[inside]
        z = 1.0 / (b / tz[f]).sum(dim=1)  # perspective-correct depth: 1/z is linear in screen space
        pix = py * width + px
        # Merge into the buffers in place, touching only this chunk's pixels: the nearest fragment wins, a tie
        # goes to the larger face index whichever chunk it came from, so the result does not depend on the
        # fragment budget (chunks come in ascending face order, a tie across chunks goes to the later one).
        old_z = zbuf[pix]
        zbuf.scatter_reduce_(0, pix, z, reduce="amin")
        new_z = zbuf[pix]
        fbuf[pix[new_z < old_z]] = -1  # a nearer fragment arrived: the old winner is out
        win = z == new_z
        fbuf.scatter_reduce_(0, pix[win], f[win], reduce="amax")
        start = stop
        if on_progress is not None:
            on_progress(start, 2 * n_live)

    covered = torch.nonzero(fbuf >= 0).squeeze(1)
    bary = torch.zeros((height * width, 3), dtype=torch.float64, device=device)
    n_cov = covered.numel()
    step = max(1, fragment_budget)
    for lo in range(0, n_cov, step):  # per pixel, so chunking changes nothing; bounded for on_progress
        cov = covered[lo:lo + step]
        f = fbuf[cov]
        px = (cov % width).double() + 0.5
        py = (cov // width).double() + 0.5
        b, _ = _barycentrics(tri[f], px, py)
        b = b / tz[f]
        bary[cov] = b / b.sum(dim=1, keepdim=True)
        if on_progress is not None:
            on_progress(n_live + round(n_live * min(lo + step, n_cov) / n_cov), 2 * n_live)
    return Fragments(fbuf.view(height, width), bary.float().view(height, width, 3),
                     zbuf.float().view(height, width))


def project(
    verts: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """World points -> (pixel coordinates [V, 2], camera-space depth z [V]) for an EG3D camera."""
    return cameras.project_points(verts, cam2world, intrinsics, width, height)


def render_depth(
    verts: np.ndarray,
    faces: np.ndarray,
    cam2world: np.ndarray,
    intrinsics: np.ndarray,
    width: int,
    height: int,
    kind: str = "z",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Depth map [H, W] float32 of a mesh from an EG3D camera (+inf where the mesh is not seen).

    ``kind='z'``: camera-space z; ``kind='ray'``: distance along each pixel's unit ray from the camera
    centre — what the generator's ``image_depth`` holds.
    """
    xy, z = project(verts, cam2world, intrinsics, width, height)
    frags = rasterize(torch.from_numpy(xy).to(device), torch.from_numpy(z).to(device),
                      torch.from_numpy(np.asarray(faces, dtype=np.int64)).to(device), height, width)
    d = frags.depth.cpu().numpy().astype(np.float64)
    if kind == "ray":
        _, dirs = cameras.pixel_rays(cam2world, intrinsics, width, height)
        forward = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)[:3, 2]
        cos = (dirs @ forward).reshape(height, width)
        d = d / cos
    elif kind != "z":
        raise ValueError(f"kind must be 'z' or 'ray', got {kind!r}")
    return d.astype(np.float32)
