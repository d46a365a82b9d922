"""Dense density grids: sampled in chunks whose coordinates are made on the field's device.

Why: the official scripts build the whole N³×3 coordinate tensor on the host (1.6 GB at 512³) and copy it
to the GPU; here each chunk's coordinates come from an ``arange`` of flat indices on the device, the chunk
size follows a memory budget, and points the border trim would overwrite are never queried.

Grid convention (the official one, spec eg3d_compat.md §4.1, but with an integer grid): N points per axis
spanning ``[-box/2, box/2]``, voxel ``box / (N - 1)``; grid index ``[i, j, k]`` is the point
``origin + (i, j, k) * voxel`` in generator world axes (x, y, z). The official scripts also flip axis 0 and
transpose before meshing only because of how their sample order and PLY writer work; with world
coordinates made directly from the index no flip is needed, and meshes come out in world units.

Border trim: as ``gen_samples.py`` does, ``pad = int(30 * N / 256)`` voxels on all six faces are set far
outside the level (``level - 1000``), removing the tri-planes' box/edge artefacts and capping the surface
where it meets the trim box (so a cut neck still gives a closed mesh). ``gen_videos.py`` and Mimic3D
instead write 0 and trim 38/256 at the top of y; 0 is only "outside" because the level (10) is positive,
and the extra top trim cuts hair on tall heads, so we use the uniform, explicitly-far variant and make the
pad a setting (0 disables it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from backend.mesh.field import Field, bytes_per_point

Progress = Callable[[int, int], None]

FAR_BELOW_LEVEL = 1000.0
MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024
DEFAULT_BUDGET_CPU = 256 << 20
DEFAULT_BUDGET_CUDA = 1 << 30
FP16_LIMIT = 60000.0


@dataclass(frozen=True)
class GridSpec:
    """N³ points over the centred cube of side ``box_size`` (index -> world: origin + index * voxel)."""

    resolution: int
    box_size: float

    @property
    def origin(self) -> float:
        return -self.box_size / 2

    @property
    def voxel(self) -> float:
        return self.box_size / (self.resolution - 1)

    def to_world(self, index_coords: torch.Tensor) -> torch.Tensor:
        return index_coords * self.voxel + self.origin


def official_border_pad(resolution: int) -> int:
    """The official trim width: ``int(30 * N / 256)`` voxels (60 at 512³)."""
    return int(30 * resolution / 256)


def far_value(level: float) -> float:
    return level - FAR_BELOW_LEVEL


def default_budget(device: torch.device) -> int:
    return DEFAULT_BUDGET_CUDA if device.type == "cuda" else DEFAULT_BUDGET_CPU


def chunk_points(budget_bytes: int, per_point: int) -> int:
    """Points per query chunk for a memory budget (at least 4096 so tiny budgets still make progress)."""
    return max(4096, int(budget_bytes) // max(1, int(per_point)))


def grid_dtype(resolution: int, requested: str | torch.dtype = "auto") -> torch.dtype:
    """float32 up to 512³ (0.5 GB); float16 above (a 1024³ grid is 2 GB instead of 4 GB)."""
    if isinstance(requested, torch.dtype):
        return requested
    if requested == "auto":
        return torch.float32 if resolution <= 512 else torch.float16
    return {"float32": torch.float32, "float16": torch.float16}[requested]


def store(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast densities for storage (float16 saturates instead of overflowing to inf)."""
    if dtype == torch.float16:
        values = values.clamp(-FP16_LIMIT, FP16_LIMIT)
    return values.to(dtype)


Writer = Callable[[slice, slice, torch.Tensor], None]


def sample_lattice(
    field: Field,
    spec: GridSpec,
    ix: torch.Tensor,
    iy: torch.Tensor,
    iz: torch.Tensor,
    write: Writer,
    budget_bytes: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Query the density on the lattice ``ix × iy × iz`` (grid index vectors) in chunks of whole z-rows.

    Each chunk's coordinates are a broadcast of three 1-D world-coordinate vectors made on the device (no
    per-point index arithmetic), and ``write(sx, sy, values [len(sx), len(sy), len(iz)])`` stores it.
    Returns the number of points queried.
    """
    device = field.device
    wx, wy, wz = (spec.to_world(a.to(device=device, dtype=torch.float32)) for a in (ix, iy, iz))
    nx, ny, nz = len(wx), len(wy), len(wz)
    total = nx * ny * nz
    if total == 0:
        return 0
    rows = max(1, chunk_points(budget_bytes or default_budget(device), bytes_per_point(field)) // nz)
    if rows >= ny:
        planes = rows // ny
        blocks = [(slice(x0, min(x0 + planes, nx)), slice(0, ny)) for x0 in range(0, nx, planes)]
    else:
        blocks = [(slice(x, x + 1), slice(y0, min(y0 + rows, ny)))
                  for x in range(nx) for y0 in range(0, ny, rows)]
    done = 0
    with torch.no_grad():
        for sx, sy in blocks:
            a, b = wx[sx], wy[sy]
            xyz = torch.stack(torch.broadcast_tensors(a[:, None, None], b[None, :, None], wz[None, None, :]),
                              dim=-1)
            values = field.density(xyz.reshape(-1, 3)).reshape(len(a), len(b), nz)
            write(sx, sy, values)
            done += values.numel()
            if progress:
                progress(done, total)
    return total


def sample_grid(
    field: Field,
    spec: GridSpec,
    level: float,
    border_pad: int,
    dtype: torch.dtype = torch.float32,
    budget_bytes: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int]:
    """Density on the full grid, trimmed border not queried: (grid [N, N, N] on the device, query count)."""
    n = spec.resolution
    grid = torch.full((n, n, n), far_value(level), dtype=dtype, device=field.device)
    lo, hi = border_pad, n - border_pad
    if hi <= lo:
        return grid, 0
    inner = torch.arange(lo, hi)

    def write(sx: slice, sy: slice, values: torch.Tensor) -> None:
        grid[lo + sx.start : lo + sx.stop, lo + sy.start : lo + sy.stop, lo:hi] = store(values, dtype)

    queries = sample_lattice(field, spec, inner, inner, inner, write, budget_bytes, progress)
    return grid, queries


def apply_border(grid: torch.Tensor, pad: int, level: float) -> torch.Tensor:
    """Set ``pad`` voxels on every face far outside the level (in place)."""
    if pad > 0:
        v = far_value(level)
        grid[:pad] = v
        grid[-pad:] = v
        grid[:, :pad] = v
        grid[:, -pad:] = v
        grid[:, :, :pad] = v
        grid[:, :, -pad:] = v
    return grid
