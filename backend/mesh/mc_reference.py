"""Vectorised numpy model of the CUDA marching-cubes kernel (``cuda/marching_cubes.cu``).

Why it exists: no GPU is available where most tests run, yet the GPU and CPU paths must produce the same mesh.
This module runs *exactly* the kernel's algorithm — classify, scan, generate, with the tables of
``mc_tables`` and the same vertex-on-edge interpolation — so it can be compared with the CPU library path on
any machine, and the GPU test compares the kernel's raw output with this one array for array.

The algorithm, written once here and mirrored in CUDA:

1. *classify*: a grid point is inside when ``value > level`` (compared in double precision); a grid edge is
   crossed when its two ends differ. Every crossed edge belongs to its lower end point and carries exactly one
   vertex, so vertices are shared by all (up to four) cells around the edge: the mesh is welded by
   construction, never a triangle soup. Each cell gets its Bourke case index (bit ``c`` = corner ``c`` not
   inside).
2. *scan*: vertex ids are the exclusive prefix sum of crossed-edge counts over grid points in C order
   (x slowest, z fastest; within a point, axis x, y, z); triangle ids the prefix sum of per-cell triangle
   counts. Here the scan is expressed as "rank in the sorted list of crossed edge ids", which gives the same
   numbers.
3. *generate*: vertex = ``p + t * e_axis`` with ``t = (level - v0) / (v1 - v0)`` in double precision,
   ``v0`` at the lower end; triangles look each table edge up as (owner point, axis) -> vertex id.

Output is *raw*: when grid values sit exactly at the level several edges produce a vertex on the same grid
corner (``t`` is exactly 0 or 1). Those vertices carry a weld key (``4 * corner_index + 3``) so that
``marching_cubes.weld_and_clean`` can merge them and drop the degenerate triangles — the same post-step
follows the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.mesh.mc_tables import CORNER_OFFSETS, EDGE_ORIGIN_AXIS, TRI_TABLE_PADDED

NO_KEY = -1


@dataclass
class RawMC:
    """Unwelded marching-cubes output in grid index coordinates (x = axis 0 of the volume)."""

    verts: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    weld_key: np.ndarray  # [V] int64: 4 * corner + 3 for vertices exactly on a grid corner, else -1


def level_threshold_f32(level: float) -> np.float32:
    """The float32 ``thr`` with ``v > thr`` (float32) == ``float(v) > level`` (double) for every float32 v.

    Lets the classification run on float32 arrays (half the memory of a float64 copy) while meaning exactly
    what the double-precision comparison in the kernel and in PyMCubes means.
    """
    thr = np.float32(level)
    if float(thr) > level:
        thr = np.nextafter(thr, np.float32(-np.inf))
    return np.float32(thr)


def corner_key(linear_index: np.ndarray) -> np.ndarray:
    """Weld key of a vertex lying exactly on grid point ``linear_index``."""
    return 4 * linear_index + 3


def edge_key(linear_index: np.ndarray, axis: np.ndarray | int) -> np.ndarray:
    """Weld key of a vertex strictly inside the grid edge (``linear_index``, ``axis``)."""
    return 4 * linear_index + axis


def _slab_planes(ny: int, nz: int, slab_points: int) -> int:
    return max(1, slab_points // (ny * nz))


def marching_cubes_reference(volume: np.ndarray, level: float, slab_points: int = 1 << 20) -> RawMC:
    """Marching cubes on a dense [X, Y, Z] grid, exactly as the CUDA kernel does it (see module docstring).

    ``volume`` may be float16 (converted slab by slab, exactly) or float32/float64 (float64 is rounded to
    float32, as the kernel reads float32). The grid is processed in slabs of about ``slab_points`` grid points
    along x: the results are identical to one pass, but the temporaries stay in cache and memory stays
    bounded (a 1024³ float16 grid needs no float32 copy), which also made it faster at 512³ than one pass.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3 or min(vol.shape) < 2:
        raise ValueError(f"expected a 3-D grid with at least 2 points per axis, got shape {vol.shape}")
    nx, ny, nz = vol.shape
    syz = ny * nz
    thr = level_threshold_f32(level)
    planes = _slab_planes(ny, nz, slab_points)

    eid_parts: list[np.ndarray] = []
    vert_parts: list[np.ndarray] = []
    key_parts: list[np.ndarray] = []
    face_parts: list[np.ndarray] = []
    for x0 in range(0, nx, planes):
        x1 = min(x0 + planes, nx)  # owner planes [x0, x1)
        xe = min(x1 + 1, nx)  # data planes [x0, xe)
        vals = np.ascontiguousarray(vol[x0:xe], dtype=np.float32)
        ins = vals > thr
        own = x1 - x0

        # 1. classify edges owned by points of this slab; 2. scan = rank among sorted edge ids.
        crossed = (
            ins[:-1] != ins[1:],  # x-edges (none for the last plane of the grid)
            ins[:own, :-1] != ins[:own, 1:],
            ins[:own, :, :-1] != ins[:own, :, 1:],
        )
        local_ids = []
        for axis, c in enumerate(crossed):
            ijk = np.unravel_index(np.flatnonzero(c), c.shape)
            local_ids.append(3 * (ijk[0] * syz + ijk[1] * nz + ijk[2]) + axis)
        lids = np.sort(np.concatenate(local_ids))
        lp = lids // 3
        a = lids % 3
        eid_parts.append(lids + 3 * x0 * syz)

        # 3a. vertices (double-precision interpolation from the lower end).
        flat = vals.reshape(-1)
        step = np.array([syz, nz, 1], dtype=np.int64)[a]
        v0 = flat[lp].astype(np.float64)
        v1 = flat[lp + step].astype(np.float64)
        t = (level - v0) / (v1 - v0)
        verts = np.stack(np.unravel_index(lp, vals.shape), axis=1).astype(np.float64)
        verts[:, 0] += x0
        verts[np.arange(len(lp)), a] += t
        gp = lp + x0 * syz
        key = np.full(len(lp), NO_KEY, dtype=np.int64)
        at_lo = t == 0.0
        at_hi = t == 1.0
        key[at_lo] = corner_key(gp[at_lo])
        key[at_hi] = corner_key(gp[at_hi] + step[at_hi])
        vert_parts.append(verts)
        key_parts.append(key)

        # Cells [x0, min(x1, nx - 1)): active when some corner is inside and some is not.
        ncx = min(x1, nx - 1) - x0
        if ncx <= 0:
            continue
        cin = ins[: ncx + 1]
        any1 = cin[:-1] | cin[1:]
        any2 = any1[:, :-1] | any1[:, 1:]
        all1 = cin[:-1] & cin[1:]
        all2 = all1[:, :-1] & all1[:, 1:]
        mixed = (any2[:, :, :-1] | any2[:, :, 1:]) != (all2[:, :, :-1] & all2[:, :, 1:])
        ci, cj, ck = np.unravel_index(np.flatnonzero(mixed), mixed.shape)
        case = np.zeros(len(ci), dtype=np.int64)
        for c, (dx, dy, dz) in enumerate(CORNER_OFFSETS):
            case |= (~ins[ci + dx, cj + dy, ck + dz]).astype(np.int64) << c

        # 3b. triangles in cell order, then table order; edges named by global (owner point, axis).
        cell_point = (ci + x0) * syz + cj * nz + ck
        tri = TRI_TABLE_PADDED[case]  # [A, 5, 3]
        valid = tri[:, :, 0] >= 0
        owner = np.broadcast_to(cell_point[:, None], valid.shape)[valid]
        origin = EDGE_ORIGIN_AXIS[tri[valid]]  # [T, 3, 4]
        q = owner[:, None] + origin[..., 0] * syz + origin[..., 1] * nz + origin[..., 2]
        face_parts.append(3 * q + origin[..., 3])

    eids = np.concatenate(eid_parts)
    faces = np.searchsorted(eids, np.concatenate(face_parts)) if face_parts else np.zeros((0, 3), np.int64)
    return RawMC(
        verts=np.concatenate(vert_parts),
        faces=faces.astype(np.int64, copy=False),
        weld_key=np.concatenate(key_parts),
    )
