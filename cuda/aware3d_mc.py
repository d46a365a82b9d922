"""Loader for Aware3D's marching-cubes kernel (``marching_cubes.cu``), compiled at run time by NVRTC (CuPy).

Why this shape: no build step (the .cu text is compiled on first use and cached by CuPy), and no host copies —
torch tensors are handed to the kernels through DLPack, the kernels run on torch's current stream, and the
two prefix sums between the passes are ``torch.cumsum`` on the device. The only host synchronisation is
reading the two totals needed to allocate the outputs.

This module is part of the ``cuda`` *namespace* package (no ``__init__.py``): NVIDIA's cuda-python installs
into a ``cuda`` namespace too, and a regular package here would shadow it. It deliberately imports nothing
from ``backend``; callers use ``backend.mesh.marching_cubes`` (which adds the shared weld/clean-up step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

SOURCE = Path(__file__).with_name("marching_cubes.cu")
KERNELS = ("a3d_mc_classify", "a3d_mc_vertices", "a3d_mc_faces")
NVRTC_OPTIONS = ("--std=c++14",)
_BLOCK = 256


def available() -> bool:
    """True when CuPy imports and torch sees a CUDA device (compilation happens on first use)."""
    try:
        import cupy  # noqa: F401
    except Exception:  # ImportError, or a CuPy build that fails to find its CUDA libraries
        return False
    return torch.cuda.is_available()


@functools.cache
def _kernels(device_index: int) -> dict[str, Any]:
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=SOURCE.read_text(encoding="utf-8"), options=NVRTC_OPTIONS)
        return {name: module.get_function(name) for name in KERNELS}


def _threshold_f32(level: float) -> np.float32:
    """Float32 threshold equivalent to the double comparison ``value > level`` (see mc_reference)."""
    thr = np.float32(level)
    if float(thr) > level:
        thr = np.nextafter(thr, np.float32(-np.inf))
    return np.float32(thr)


Launch = Callable[[str, int, tuple[Any, ...]], None]


def marching_cubes_raw(grid: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the three passes on a CUDA grid [X, Y, Z]: (verts [V, 3] f32, faces [F, 3] i64, weld keys [V] i64).

    Output is unwelded and in grid index units, identical (array for array) to
    ``backend.mesh.mc_reference.marching_cubes_reference`` on the same grid.
    """
    import cupy

    if not grid.is_cuda or grid.ndim != 3:
        raise ValueError("marching_cubes_raw needs a 3-D CUDA tensor")
    device = grid.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    kernels = _kernels(index)
    stream = torch.cuda.current_stream(device)

    def launch(name: str, threads: int, args: tuple[Any, ...]) -> None:
        converted = tuple(cupy.from_dlpack(a) if isinstance(a, torch.Tensor) else a for a in args)
        with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
            kernels[name](((threads + _BLOCK - 1) // _BLOCK,), (_BLOCK,), converted)

    return run_passes(grid, level, launch)


def run_passes(grid: torch.Tensor, level: float, launch: Launch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The host side of the algorithm: allocate, classify, scan (torch.cumsum), generate.

    ``launch(kernel_name, n_threads, args)`` runs one kernel over ``n_threads`` threads; tensors in ``args``
    live on ``grid``'s device. Kept apart from CuPy so that a test can drive the very same host code with
    the kernel source compiled for the CPU.
    """
    g = grid.detach().to(torch.float32).contiguous()
    nx, ny, nz = (int(s) for s in g.shape)
    n = g.numel()
    device = g.device
    empty = (
        torch.zeros((0, 3), dtype=torch.float32, device=device),
        torch.zeros((0, 3), dtype=torch.int64, device=device),
        torch.zeros((0,), dtype=torch.int64, device=device),
    )
    if n == 0:
        return empty
    dims = (np.int64(nx), np.int64(ny), np.int64(nz))
    edge_mask = torch.empty(n, dtype=torch.uint8, device=device)
    cube_case = torch.empty(n, dtype=torch.uint8, device=device)
    vert_count = torch.empty(n, dtype=torch.int32, device=device)
    tri_count = torch.empty(n, dtype=torch.int32, device=device)
    launch("a3d_mc_classify", n,
           (g, *dims, _threshold_f32(level), edge_mask, cube_case, vert_count, tri_count))
    n_verts = int(vert_count.sum(dtype=torch.int64))
    n_tris = int(tri_count.sum(dtype=torch.int64))
    if n_verts >= 2**31 or n_tris >= 2**31:
        raise MemoryError(f"{n_verts} vertices / {n_tris} triangles exceed the kernel's 32-bit scan")
    if n_tris == 0:
        return empty
    vert_base = torch.cumsum(vert_count, 0, dtype=torch.int32)
    vert_base -= vert_count
    tri_base = torch.cumsum(tri_count, 0, dtype=torch.int32)
    tri_base -= tri_count
    del vert_count, tri_count
    verts = torch.empty((n_verts, 3), dtype=torch.float32, device=device)
    keys = torch.empty((n_verts,), dtype=torch.int64, device=device)
    faces = torch.empty((n_tris, 3), dtype=torch.int64, device=device)
    launch("a3d_mc_vertices", n, (g, *dims, np.float64(level), edge_mask, vert_base, verts, keys))
    launch("a3d_mc_faces", n, (*dims, cube_case, tri_base, edge_mask, vert_base, faces))
    return verts, faces, keys
