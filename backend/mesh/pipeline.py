"""``extract_mesh(field, MeshSettings) -> Mesh``: the whole meshing pipeline, for the CLI and the server.

Stages (each timed into ``Mesh.stats['seconds']`` and reported through ``progress(stage, fraction)``):

1. ``grid``: density grid on the field's device — full (border not queried) or coarse-to-fine;
2. ``marching_cubes``: CUDA kernel for CUDA grids, else its numpy twin (same mesh either way), at the
   level (EG3D: sigma 10), welded, degenerate triangles removed; then index -> world units;
3. ``cleanup``: component filter, Taubin smoothing, quadric decimation, normals (numpy, CPU);
4. ``colours``: colour field at the final vertices, one voxel inside;
5. ``texture`` (optional): xatlas unwrap + texture bake.

Export is separate (``export.save_mesh``) so that callers choose the file and the axes.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch

from backend.errors import Aware3DError
from backend.mesh import cleanup
from backend.mesh.coarse_to_fine import sample_grid_coarse_to_fine
from backend.mesh.colour import vertex_colours
from backend.mesh.data import Mesh
from backend.mesh.field import Field, surface_level
from backend.mesh.grid import (
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    GridSpec,
    grid_dtype,
    official_border_pad,
    sample_grid,
)
from backend.mesh.marching_cubes import MC_METHODS, marching_cubes, resolve_method
from backend.mesh.texture import bake_texture, unwrap

StageProgress = Callable[[str, float], None]
T = TypeVar("T")

STAGES: tuple[str, ...] = ("grid", "marching_cubes", "cleanup", "colours", "texture")


@dataclass
class MeshSettings:
    """Everything ``extract_mesh`` can be told. Defaults: a 256³ EG3D-style mesh, 50 k faces, coloured."""

    resolution: int = 256
    level: float | None = None  # None: the field's own surface level (field.surface_level; EG3D's 10)
    border_pad: int | None = None  # None: the official int(30·N/256); 0: no trim
    # On by default: the same surface as the full grid (tested vertex for vertex) for ~10x fewer queries.
    coarse_to_fine: bool = True
    coarse_factor: int = 4
    band_dilation: int = 1
    grid_dtype: str = "auto"  # auto (float32 ≤ 512³, float16 above), float32, float16
    memory_budget: int | None = None  # bytes per query chunk; None: 256 MiB on CPU, 1 GiB on CUDA
    mc_method: str = "auto"
    component_min_ratio: float = 1.0  # 1: largest component only; 0: keep all
    smooth_iterations: int = 10
    smooth_lambda: float = 0.5
    smooth_mu: float = -0.53
    target_faces: int | None = 50_000  # None or 0: no decimation
    colours: bool = True
    colour_inset_voxels: float = 1.0
    texture: bool = False
    texture_size: int = 1024

    def validate(self) -> MeshSettings:
        if not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            raise Aware3DError(f"mesh resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, "
                               f"got {self.resolution}", "e.g. --res 256 (512 for detail)")
        if self.border_pad is not None and not 0 <= 2 * self.border_pad < self.resolution - 1:
            raise Aware3DError(f"border trim {self.border_pad} leaves no grid", "use a smaller trim")
        if self.target_faces is not None and self.target_faces < 0:
            raise Aware3DError(f"target face count must be positive, got {self.target_faces}",
                               "e.g. --faces 50000 (0 keeps every face)")
        if self.mc_method not in MC_METHODS:
            raise Aware3DError(f"unknown marching-cubes method {self.mc_method!r}",
                               f"use one of {', '.join(MC_METHODS)}")
        if self.grid_dtype not in ("auto", "float32", "float16"):
            raise Aware3DError(f"unknown grid dtype {self.grid_dtype!r}", "use auto, float32 or float16")
        if self.coarse_to_fine and (self.coarse_factor < 2 or self.band_dilation < 1):
            raise Aware3DError("coarse-to-fine needs a factor >= 2 and a band dilation >= 1",
                               "e.g. factor 4, dilation 1")
        if not 0.0 <= self.component_min_ratio <= 1.0:
            raise Aware3DError(f"component ratio must be in [0, 1], got {self.component_min_ratio}",
                               "1 keeps the largest component, 0 keeps all")
        if self.texture and not 64 <= self.texture_size <= 8192:
            raise Aware3DError(f"texture size must be between 64 and 8192, got {self.texture_size}",
                               "e.g. --texture-size 1024")
        return self

    @property
    def pad(self) -> int:
        return official_border_pad(self.resolution) if self.border_pad is None else self.border_pad


def _report(progress: StageProgress | None, stage: str, frac: float) -> None:
    if progress is not None:
        progress(stage, frac)


def _sub(progress: StageProgress | None, stage: str, lo: float, hi: float) -> Callable[[int, int], None] | None:
    """An ``on_progress(done, total)`` for a library call inside ``stage``, mapped onto [lo, hi] of it: the
    long calls (xatlas, colour queries) report through it, so a raising ``progress`` (a cancel) stops them
    between chunks."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, lo + (hi - lo) * done / max(total, 1))


def interruptible(fn: Callable[[], T], check: Callable[[], None] | None, poll_s: float = 0.05) -> T:
    """``fn()``, with ``check()`` called every ``poll_s`` while it runs; an exception from ``check`` (a
    cancel) propagates at once and ``fn``'s result, when it comes, is dropped.

    Why: marching cubes and quadric decimation are single library calls with no callback of their own, a
    second or more each at 512³ on a loaded CPU. They run in a worker thread (both release the GIL for most
    of their work, so the checks keep their pace) rather than a process (their inputs are hundreds of MB). The
    thread is not a daemon: a process that exits right after a cancel waits for the call instead of being
    aborted under it."""
    if check is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="aware3d-mesh-call").start()
    while not done.wait(poll_s):
        check()
    if "error" in box:
        raise box["error"]
    return box["value"]


def extract_mesh(field: Field, settings: MeshSettings | None = None,
                 progress: StageProgress | None = None) -> Mesh:
    """Mesh the level set of ``field`` (see module docstring). Raises ``Aware3DError`` if nothing is found."""
    s = (settings or MeshSettings()).validate()
    if s.level is None:
        s = replace(s, level=surface_level(field))
    seconds: dict[str, float] = {}
    stats: dict = {"settings": asdict(s), "seconds": seconds, "device": str(field.device)}
    spec = GridSpec(s.resolution, float(field.box_size))
    dtype = grid_dtype(s.resolution, s.grid_dtype)

    t = time.perf_counter()
    _report(progress, "grid", 0.0)

    def grid_progress(done: int, total: int) -> None:
        _report(progress, "grid", done / max(total, 1))

    if s.coarse_to_fine:
        grid, c2f = sample_grid_coarse_to_fine(
            field, spec, s.level, s.pad, dtype, s.coarse_factor, s.band_dilation, s.memory_budget,
            grid_progress)
        stats["queries"] = c2f.queries
        stats["coarse_to_fine"] = asdict(c2f)
    else:
        grid, stats["queries"] = sample_grid(field, spec, s.level, s.pad, dtype, s.memory_budget,
                                             grid_progress)
    if grid.is_cuda:
        torch.cuda.synchronize(grid.device)
    seconds["grid"] = time.perf_counter() - t
    _report(progress, "grid", 1.0)

    t = time.perf_counter()
    _report(progress, "marching_cubes", 0.0)
    method = resolve_method(s.mc_method, grid)
    stats["mc_method"] = method
    # (a CUDA grid's kernel takes milliseconds, and stays on the thread that owns its device)
    check = None if progress is None or grid.is_cuda else lambda: progress("marching_cubes", 0.0)
    verts_idx, faces_t = interruptible(functools.partial(marching_cubes, grid, s.level, method), check)
    del grid
    verts = spec.to_world(verts_idx.float()).cpu().numpy()
    faces = faces_t.cpu().numpy()
    seconds["marching_cubes"] = time.perf_counter() - t
    _report(progress, "marching_cubes", 1.0)
    stats["mc_vertices"], stats["mc_faces"] = len(verts), len(faces)
    if len(faces) == 0:
        raise Aware3DError(f"no surface at density level {s.level} in this volume",
                           "try another --level (EG3D heads: 10; the README suggests 2-20)")

    t = time.perf_counter()
    _report(progress, "cleanup", 0.0)
    verts, faces, removed = cleanup.filter_components(verts, faces, s.component_min_ratio)
    stats["components_removed"] = removed
    _report(progress, "cleanup", 0.25)
    verts = cleanup.taubin_smooth(verts, faces, s.smooth_iterations, s.smooth_lambda, s.smooth_mu)
    _report(progress, "cleanup", 0.5)
    if s.target_faces:
        verts, faces = interruptible(functools.partial(cleanup.decimate, verts, faces, s.target_faces),
                                     None if progress is None else lambda: progress("cleanup", 0.5))
    normals = cleanup.vertex_normals(verts, faces)
    seconds["cleanup"] = time.perf_counter() - t
    _report(progress, "cleanup", 1.0)

    mesh = Mesh(vertices=verts, faces=faces, normals=normals, stats=stats)
    inset = s.colour_inset_voxels * spec.voxel
    if s.colours:
        t = time.perf_counter()
        _report(progress, "colours", 0.0)
        mesh.colours = vertex_colours(field, verts, normals, inset, s.memory_budget,
                                      _sub(progress, "colours", 0.0, 1.0))
        seconds["colours"] = time.perf_counter() - t
        _report(progress, "colours", 1.0)
    if s.texture:
        t = time.perf_counter()
        _report(progress, "texture", 0.0)
        vmap, tfaces, uvs = unwrap(mesh.vertices, mesh.faces, _sub(progress, "texture", 0.0, 0.5))
        _report(progress, "texture", 0.5)
        mesh = Mesh(
            vertices=mesh.vertices[vmap], faces=tfaces, normals=mesh.normals[vmap],  # type: ignore[index]
            colours=None if mesh.colours is None else mesh.colours[vmap], uvs=uvs, stats=stats)
        mesh.texture = bake_texture(field, mesh.vertices, mesh.faces, mesh.normals,  # type: ignore[arg-type]
                                    uvs, s.texture_size, inset, s.memory_budget,
                                    _sub(progress, "texture", 0.5, 1.0))
        seconds["texture"] = time.perf_counter() - t
        _report(progress, "texture", 1.0)
    stats["vertices"], stats["faces"] = mesh.num_vertices, mesh.num_faces
    return mesh


def mesh_from_grid(grid: torch.Tensor | np.ndarray, level: float, box_size: float,
                   method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a ready grid, in world units (for callers with their own volumes)."""
    g = torch.as_tensor(grid)
    spec = GridSpec(int(g.shape[0]), box_size)
    v, f = marching_cubes(g, level, method)
    return spec.to_world(v.float()).cpu().numpy(), f.cpu().numpy()
