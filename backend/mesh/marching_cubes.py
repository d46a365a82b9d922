"""Marching cubes with one result whichever path runs it: CUDA kernel, numpy twin of the kernel, or a library.

Why several paths: the GPU path (``cuda/aware3d_mc.py``) keeps the grid on the device; on a CPU the numpy
model of the same kernel (``mc_reference``) is the fastest of the CPU options measured at 256³ and 512³
(``marching_cubes_alone`` in ``benchmarks/results/mesh_cpu_analytic.json``; table in docs/mesh.md), and
since it *is* the kernel's algorithm the CPU and GPU meshes agree by construction. PyMCubes uses the same
classic table and interpolation and serves as the independent check. scikit-image is kept for comparison only: its
Lorensen table triangulates 216 of the 256 cases differently (other quad diagonals, other ambiguous-face
choices) and it nudges vertices off exact-level corners, so its mesh cannot match the kernel's.

Every path ends in ``weld_and_clean``: vertices that sit exactly on the same grid corner (values exactly at
the level, common with ReLU'd, quantised or fp16 densities) are merged, triangles that collapse are dropped,
and unused vertices removed. Output is always float32 vertices in grid index units (x = volume axis 0) and
int64 faces whose normals point towards lower values (out of a density blob).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from backend.mesh.mc_reference import RawMC, corner_key, marching_cubes_reference

MCMethod = Literal["auto", "reference", "cuda", "pymcubes", "skimage"]
MC_METHODS: tuple[str, ...] = ("auto", "reference", "cuda", "pymcubes", "skimage")


def cuda_kernel_available() -> bool:
    """True when the CUDA path can run: a CUDA device for torch and CuPy importable."""
    if not torch.cuda.is_available():
        return False
    try:
        from cuda import aware3d_mc
    except ImportError:
        return False
    return aware3d_mc.available()


def resolve_method(method: str, grid: torch.Tensor) -> str:
    """Pick the path for ``auto``: the kernel for CUDA grids when it can run, the numpy twin otherwise."""
    if method not in MC_METHODS:
        raise ValueError(f"unknown marching-cubes method {method!r}; expected one of {MC_METHODS}")
    if method != "auto":
        return method
    return "cuda" if grid.is_cuda and cuda_kernel_available() else "reference"


def marching_cubes(
    grid: torch.Tensor | np.ndarray, level: float, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iso-surface of ``grid`` [X, Y, Z] at ``level``: (vertices [V, 3] float32, faces [F, 3] int64).

    Vertices are in grid index units; the result lives on the grid's device for the CUDA path and on the CPU
    otherwise. Points with ``value > level`` are inside; normals point outwards.
    """
    if isinstance(grid, np.ndarray):
        grid = torch.from_numpy(grid)
    if grid.ndim != 3 or min(grid.shape) < 2:
        raise ValueError(f"expected a 3-D grid, at least 2 points per axis; got shape {tuple(grid.shape)}")
    method = resolve_method(method, grid)
    if method == "cuda":
        from cuda import aware3d_mc

        verts, faces, keys = aware3d_mc.marching_cubes_raw(grid, float(level))
        return weld_and_clean(verts, faces, keys)
    raw = _cpu_raw(grid.detach().cpu().numpy(), float(level), method)
    verts, faces = weld_and_clean_numpy(raw.verts.astype(np.float32), raw.faces, raw.weld_key)
    return torch.from_numpy(verts), torch.from_numpy(faces)


def marching_cubes_raw_cpu(volume: np.ndarray, level: float, method: str = "reference") -> RawMC:
    """Unwelded output of a CPU path (for tests and benchmarks that compare paths before clean-up)."""
    return _cpu_raw(volume, level, method)


def _cpu_raw(volume: np.ndarray, level: float, method: str) -> RawMC:
    if method == "reference":
        return marching_cubes_reference(volume, level)
    if method == "pymcubes":
        import mcubes

        vol = np.ascontiguousarray(volume, dtype=np.float32)
        verts, faces = mcubes.marching_cubes(vol, level)
        return RawMC(verts, faces.astype(np.int64), _keys_from_positions(verts, vol.shape))
    if method == "skimage":
        from skimage import measure

        vol = np.ascontiguousarray(volume, dtype=np.float32)
        if not (vol.min() <= level <= vol.max()) or vol.min() == vol.max():
            return RawMC(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int64))
        verts, faces, _, _ = measure.marching_cubes(vol, level, method="lorensen")
        verts = verts.astype(np.float64)
        faces = faces[:, ::-1].astype(np.int64)  # scikit-image winds the other way
        return RawMC(verts, np.ascontiguousarray(faces), _keys_from_positions(verts, vol.shape))
    raise ValueError(f"{method!r} is not a CPU marching-cubes method")


def _keys_from_positions(verts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Weld keys for a library's output: a vertex with all-integer coordinates lies on that grid corner."""
    keys = np.full(len(verts), -1, dtype=np.int64)
    on_corner = np.all(verts == np.floor(verts), axis=1)
    if on_corner.any():
        c = verts[on_corner].astype(np.int64)
        keys[on_corner] = corner_key((c[:, 0] * shape[1] + c[:, 1]) * shape[2] + c[:, 2])
    return keys


def weld_and_clean(
    verts: torch.Tensor, faces: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge vertices with equal non-negative keys; drop collapsed or zero-area triangles and unused vertices.

    Runs with torch ops on whatever device the tensors are on (no host copies besides two scalar checks), so
    the CUDA path and the CPU paths share this exact post-step. Vertex order is kept (first occurrence wins).
    """
    n = verts.shape[0]
    faces = faces.long()
    keyed = torch.nonzero(keys >= 0).squeeze(1)
    if keyed.numel():
        uniq, inv = torch.unique(keys[keyed], return_inverse=True)
        first = torch.full((uniq.numel(),), n, dtype=torch.long, device=verts.device)
        first.scatter_reduce_(0, inv, keyed, reduce="amin")
        remap = torch.arange(n, device=verts.device)
        remap[keyed] = first[inv]
        faces = remap[faces]
    if faces.numel():
        a, b, c = faces.unbind(1)
        ok = (a != b) & (b != c) & (a != c)
        e1 = verts[b] - verts[a]
        e2 = verts[c] - verts[a]
        ok &= torch.linalg.cross(e1, e2).abs().amax(dim=1) > 0
        faces = faces[ok]
    used = torch.zeros(n, dtype=torch.bool, device=verts.device)
    used[faces.reshape(-1)] = True
    new_index = torch.cumsum(used, 0) - 1
    return verts[used].contiguous(), new_index[faces].contiguous()


def weld_and_clean_numpy(
    verts: np.ndarray, faces: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``weld_and_clean`` for CPU arrays, step for step (numpy's fancy indexing beats torch's on CPU here)."""
    n = len(verts)
    faces = faces.astype(np.int64, copy=False)
    keyed = np.flatnonzero(keys >= 0)
    if keyed.size:
        uniq, inv = np.unique(keys[keyed], return_inverse=True)
        first = np.full(len(uniq), n, dtype=np.int64)
        np.minimum.at(first, inv, keyed)
        remap = np.arange(n)
        remap[keyed] = first[inv]
        faces = remap[faces]
    if len(faces):
        a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
        ok = (a != b) & (b != c) & (a != c)
        cross = np.cross(verts[b] - verts[a], verts[c] - verts[a])
        ok &= np.abs(cross).max(axis=1) > 0
        faces = faces[ok]
    used = np.zeros(n, dtype=bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return np.ascontiguousarray(verts[used]), np.ascontiguousarray(new_index[faces])
