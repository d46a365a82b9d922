"""Small closed test meshes with known colours for the texturing tests."""

from __future__ import annotations

import numpy as np

from backend.mesh.cleanup import vertex_normals
from backend.mesh.data import Mesh

PIVOT = np.array([0.0, 0.0, 0.2])

_ICO_FACES = np.array([
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
    (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
    (8, 6, 7), (9, 8, 1)], dtype=np.int64)


def icosphere(subdivisions: int, radius: float = 0.25, centre: np.ndarray = PIVOT) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] and outward-wound faces of a subdivided icosahedron (20·4^n faces)."""
    t = (1.0 + 5.0 ** 0.5) / 2.0
    v = np.array([(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
                  (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)], dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = _ICO_FACES
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = inv.reshape(3, -1).T + len(v)  # midpoints of edges (01, 12, 20) per face
        v = np.concatenate([v, mid])
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        ab, bc, ca = m[:, 0], m[:, 1], m[:, 2]
        f = np.concatenate([np.stack(x, axis=1) for x in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return v * radius + centre, f


def pattern_colours(verts: np.ndarray) -> np.ndarray:
    """Smooth, clearly varying sRGB colours (a few cycles over a head-sized sphere)."""
    p = (np.asarray(verts, dtype=np.float64) - PIVOT) / 0.25
    return (0.5 + 0.4 * np.sin(np.stack([3.0 * p[:, 0], 2.5 * p[:, 1] + 1.0, 2.0 * p[:, 2] - 0.5], 1))).astype(
        np.float32)


def sphere_mesh(subdivisions: int = 3, radius: float = 0.25) -> Mesh:
    v, f = icosphere(subdivisions, radius)
    return Mesh(v.astype(np.float32), f, vertex_normals(v, f), pattern_colours(v))
