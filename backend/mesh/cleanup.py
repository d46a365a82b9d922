"""Mesh clean-up after marching cubes: floaters, smoothing, decimation, normals.

Why these steps, in this order (spec mesh.md §4, §6): generator densities leave small floating blobs, so
components are filtered first (scipy's connected components on the vertex graph; the ``cleanup`` stage of
``benchmarks/mesh.py`` times the whole step); Taubin λ/μ smoothing removes the marching-cubes staircase
without the shrinkage of plain Laplacian smoothing, which also gives the quadric decimator better input;
quadric decimation (fast-simplification) brings 10⁵–10⁶ triangles down to a game-ready count. Everything is
vectorised numpy/scipy; arrays are float32 vertices [V, 3] and int64 faces [F, 3].
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def _as_arrays(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(verts, dtype=np.float32), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def remove_unreferenced(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses (keeps order)."""
    verts, faces = _as_arrays(verts, faces)
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    if used.all():
        return verts, faces
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces]


def _vertex_graph(n: int, faces: np.ndarray) -> sp.csr_matrix:
    i = faces.reshape(-1)
    j = np.roll(faces, -1, axis=1).reshape(-1)
    return sp.csr_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))


def component_labels(verts: np.ndarray, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, label per vertex) of the mesh's vertex graph."""
    verts, faces = _as_arrays(verts, faces)
    if len(faces) == 0:
        return 0, np.zeros(len(verts), dtype=np.int64)
    n, labels = connected_components(_vertex_graph(len(verts), faces), directed=False)
    return int(n), labels


def filter_components(
    verts: np.ndarray, faces: np.ndarray, min_ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep components with at least ``min_ratio`` × the largest component's face count.

    ``min_ratio=1`` keeps only the largest (EG3D floaters gone), ``0`` keeps everything; values like 0.02
    keep separate shells such as eyes or hair. Returns (verts, faces, number of components removed).
    """
    verts, faces = _as_arrays(verts, faces)
    n, labels = component_labels(verts, faces)
    if n <= 1:
        return verts, faces, 0
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label, minlength=n)
    keep_label = counts >= max(1, min_ratio * counts.max())
    if min_ratio >= 1.0:  # exactly one, even on ties
        keep_label = np.zeros(n, dtype=bool)
        keep_label[int(np.argmax(counts))] = True
    v, f = remove_unreferenced(verts, faces[keep_label[face_label]])
    return v, f, int(n - keep_label.sum())


def _mean_neighbour_operator(n: int, faces: np.ndarray) -> sp.csr_matrix:
    """Row-normalised adjacency (uniform Laplacian weights): ``W @ v`` = mean of each vertex's neighbours."""
    g = _vertex_graph(n, faces)
    a = ((g + g.T) > 0).astype(np.float32).tocsr()
    deg = np.asarray(a.sum(axis=1)).reshape(-1)
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return (sp.diags(inv.astype(np.float32)) @ a).tocsr()


def taubin_smooth(
    verts: np.ndarray, faces: np.ndarray, iterations: int = 10, lam: float = 0.5, mu: float = -0.53
) -> np.ndarray:
    """Taubin λ/μ smoothing (shrink with λ > 0, re-inflate with μ < −λ); returns new vertex positions.

    Isolated vertices keep their position (their Laplacian is taken as zero).
    """
    verts, faces = _as_arrays(verts, faces)
    if iterations <= 0 or len(faces) == 0:
        return verts.copy()
    w = _mean_neighbour_operator(len(verts), faces)
    lone = np.asarray(w.sum(axis=1)).reshape(-1) == 0
    v = verts.astype(np.float64)
    for _ in range(iterations):
        for k in (lam, mu):
            lap = w @ v - v
            lap[lone] = 0.0
            v += k * lap
    return v.astype(np.float32)


def decimate(
    verts: np.ndarray, faces: np.ndarray, target_faces: int, aggressiveness: float = 7.0
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target_faces`` (no-op when already there)."""
    verts, faces = _as_arrays(verts, faces)
    if target_faces <= 0 or len(faces) <= target_faces:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(
        verts, faces.astype(np.int32), target_count=int(target_faces), agg=aggressiveness
    )
    return remove_unreferenced(np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.int64))


def face_normals(verts: np.ndarray, faces: np.ndarray, normalise: bool = True) -> np.ndarray:
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    if normalise:
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    return n


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit length; zero for unreferenced vertices), float32."""
    fn = face_normals(verts, faces, normalise=False)  # length = 2 × area: area weighting for free
    f = np.asarray(faces, dtype=np.int64)
    n = len(verts)
    acc = np.zeros((n, 3), dtype=np.float64)
    for c in range(3):
        for a in range(3):
            acc[:, a] += np.bincount(f[:, c], weights=fn[:, a], minlength=n)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    return np.divide(acc, length, out=np.zeros_like(acc), where=length > 0).astype(np.float32)
