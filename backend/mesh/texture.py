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

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from backend.mesh.colour import query_colours
from backend.mesh.field import Field
from backend.mesh.raster import rasterize


def unwrap(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas parametrisation: (vertex map [V'] into the input vertices, faces [F, 3], uvs [V', 2])."""
    import xatlas

    vmap, idx, uvs = xatlas.parametrize(
        np.ascontiguousarray(verts, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32)
    )
    return vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32)


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


def texel_geometry(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray, uvs: np.ndarray,
                   size: int) -> TexelGeometry:
    """Rasterise the UV layout (glTF UVs) at ``size``² and interpolate positions and normals per texel."""
    f = np.asarray(faces, dtype=np.int64)
    xy = torch.from_numpy(np.asarray(uvs, dtype=np.float64) * size)
    frags = rasterize(xy, torch.ones(len(uvs), dtype=torch.float64), torch.from_numpy(f), size, size)
    covered = frags.mask.numpy()
    face = frags.face.numpy()[covered]
    bary = frags.bary.numpy()[covered].astype(np.float64)
    tri = f[face]
    pos = np.einsum("kc,kcd->kd", bary, np.asarray(verts, dtype=np.float64)[tri])
    nrm = np.einsum("kc,kcd->kd", bary, np.asarray(normals, dtype=np.float64)[tri])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    if covered.all() or not covered.any():
        rows, cols = np.indices(covered.shape)
    else:
        _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
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
) -> np.ndarray:
    """Bake the colour field into a size×size×3 uint8 texture for a UV-mapped mesh (see module docstring)."""
    geom = texel_geometry(verts, faces, normals, uvs, size)
    texture = np.zeros((size, size, 3), dtype=np.float32)
    texture[geom.covered] = query_colours(field, geom.position - inset * geom.normal, budget_bytes)
    texture = texture[geom.fill_rows, geom.fill_cols]
    return np.clip(np.round(texture * 255.0), 0, 255).astype(np.uint8)
