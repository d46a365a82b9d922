"""UV unwrap (xatlas) and a colour texture baked from the colour field.

Why: vertex colours are limited by vertex density (≈25 k vertices at 50 k faces); a texture keeps colour
detail after aggressive decimation. xatlas is slow and superlinear (spec: 2.3 s at 21 k, 19 s at 85 k
triangles), so it always runs on the decimated mesh. Baking: rasterise the triangles in UV space, turn
each covered texel into a surface point (barycentric interpolation of positions and normals), query the
colour field slightly inside the surface, then fill every empty texel with its nearest covered texel so
that seams and mip-maps do not bleed black.

UV convention: glTF's — origin at the image's top-left, v pointing down, so texel (row, column) covers
uv ``((column + 0.5) / size, (row + 0.5) / size)``. OBJ writers flip v (OBJ's origin is bottom-left).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from backend.mesh.colour import query_colours
from backend.mesh.field import Field
from backend.mesh.raster import rasterize

Progress = Callable[[int, int], None]

# xatlas in a child process: only numpy and xatlas are imported there (no torch), so it starts in a fraction of
# a second, and its result is the same library call on the same arrays as in-process.
_XATLAS_CHILD = (
    "import sys, numpy as np, xatlas\n"
    "d = np.load(sys.argv[1])\n"
    "vmap, idx, uvs = xatlas.parametrize(d['v'], d['f'])\n"
    "np.savez(sys.argv[2], vmap=vmap, idx=idx, uvs=uvs)\n"
)
POLL_S = 0.05


def unwrap(verts: np.ndarray, faces: np.ndarray,
           on_progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas parametrisation: (vertex map [V'] into the input vertices, faces [F, 3], uvs [V', 2]).

    Why ``on_progress``: xatlas is one C call of up to tens of seconds that cannot be interrupted. With a
    callback it runs in a child process; ``on_progress(0, 1)`` is called every ~50 ms while it works (and
    ``(1, 1)`` at the end), and if the callback raises (a cancel), the child is killed and the exception
    propagates at once. Without one it runs in-process, as before."""
    v = np.ascontiguousarray(verts, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.uint32)
    if on_progress is None:
        import xatlas

        vmap, idx, uvs = xatlas.parametrize(v, f)
    else:
        vmap, idx, uvs = _unwrap_child(v, f, on_progress)
    return vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32)


def _unwrap_child(v: np.ndarray, f: np.ndarray, on_progress: Progress) -> tuple[np.ndarray, ...]:
    with tempfile.TemporaryDirectory(prefix="aware3d-xatlas-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, v=v, f=f)
        log = Path(tmp) / "stderr.txt"
        with open(log, "wb") as errf:  # a file, not a pipe: a chatty child cannot fill a pipe and block
            proc = subprocess.Popen([sys.executable, "-c", _XATLAS_CHILD, str(src), str(dst)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
        try:
            while proc.poll() is None:
                on_progress(0, 1)
                time.sleep(POLL_S)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = log.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"xatlas failed in its child process (exit {proc.returncode}): {err[-2000:]}")
        with np.load(dst) as d:
            out = d["vmap"], d["idx"], d["uvs"]
    on_progress(1, 1)
    return out


@dataclass
class TexelGeometry:
    """Covered texels of a size×size atlas, in row-major order of ``covered``: their face, barycentrics,
    surface position and unit normal; ``fill_rows``/``fill_cols`` [T, T] give every texel its nearest
    covered texel (gutter filling without a distance transform per update)."""

    size: int
    covered: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    position: np.ndarray
    normal: np.ndarray
    fill_rows: np.ndarray
    fill_cols: np.ndarray

    @property
    def count(self) -> int:
        return len(self.face)


# Candidate fragments per rasteriser chunk of a UV atlas when progress is reported: about 0.1 s of work on one
# loaded CPU core (a 2048² atlas of 50 k faces is ~5 s in total), small enough for a cancel check every ~0.2 s.
ATLAS_FRAGMENTS_PER_CHECK = 1 << 18


def _part(on_progress: Progress | None, lo: float, hi: float) -> Progress | None:
    """``on_progress`` of a sub-step mapped onto [lo, hi] of a 0..1000 scale, so that the sub-steps of one
    call report one rising fraction."""
    if on_progress is None:
        return None
    return lambda done, total: on_progress(round(1000 * (lo + (hi - lo) * done / max(total, 1))), 1000)


def texel_geometry(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray, uvs: np.ndarray,
                   size: int, on_progress: Progress | None = None) -> TexelGeometry:
    """Rasterise the UV layout (glTF UVs) at ``size``² and interpolate positions and normals per texel.

    Why ``on_progress``: at 2048² this is seconds of work; it is called per rasteriser chunk (bounded by
    ``ATLAS_FRAGMENTS_PER_CHECK``), after the interpolation and after the gap fill, and may raise (a cancel).
    The result is the same with or without it."""
    report = _part(on_progress, 0.0, 0.8)
    f = np.asarray(faces, dtype=np.int64)
    xy = torch.from_numpy(np.asarray(uvs, dtype=np.float64) * size)
    frags = rasterize(xy, torch.ones(len(uvs), dtype=torch.float64), torch.from_numpy(f), size, size,
                      **({} if report is None else {"fragment_budget": ATLAS_FRAGMENTS_PER_CHECK,
                                                    "on_progress": report}))
    covered = frags.mask.numpy()
    face = frags.face.numpy()[covered]
    bary = frags.bary.numpy()[covered].astype(np.float64)
    v64, n64 = np.asarray(verts, dtype=np.float64), np.asarray(normals, dtype=np.float64)
    pos, nrm = np.empty((len(face), 3)), np.empty((len(face), 3))
    step = ATLAS_FRAGMENTS_PER_CHECK
    for lo in range(0, len(face), step):  # per texel, so chunking changes nothing; bounded for on_progress
        sl = slice(lo, lo + step)
        tri = f[face[sl]]
        pos[sl] = np.einsum("kc,kcd->kd", bary[sl], v64[tri])
        nrm[sl] = np.einsum("kc,kcd->kd", bary[sl], n64[tri])
        if on_progress is not None:
            on_progress(800 + round(100 * min(lo + step, len(face)) / len(face)), 1000)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    if on_progress is not None:
        on_progress(900, 1000)
    if covered.all() or not covered.any():
        rows, cols = np.indices(covered.shape)
    else:
        _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    if on_progress is not None:
        on_progress(1000, 1000)
    return TexelGeometry(size, covered, face, bary, pos, nrm, rows, cols)


def bake_texture(
    field: Field,
    verts: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    uvs: np.ndarray,
    size: int = 1024,
    inset: float = 0.0,
    budget_bytes: int | None = None,
    on_progress: Progress | None = None,
) -> np.ndarray:
    """Bake the colour field into a size×size×3 uint8 texture for a UV-mapped mesh (see module docstring).

    ``on_progress(done, total)`` is called per rasteriser chunk of the atlas (first 30 %) and per chunk of
    colour queries (the rest); it may raise to stop."""
    geom = texel_geometry(verts, faces, normals, uvs, size, _part(on_progress, 0.0, 0.3))
    texture = np.zeros((size, size, 3), dtype=np.float32)
    texture[geom.covered] = query_colours(field, geom.position - inset * geom.normal, budget_bytes,
                                          _part(on_progress, 0.3, 1.0))
    texture = texture[geom.fill_rows, geom.fill_cols]
    return np.clip(np.round(texture * 255.0), 0, 255).astype(np.uint8)
