"""Mesh checks and distances used by tests, benchmarks and the pipeline's stats.

Why here and not in tests: the benchmark and ``extract_mesh``'s report use the same numbers (components,
closedness, Euler characteristic), and the comparisons (Chamfer, Hausdorff, silhouette IoU) are what the
lead re-runs on trained models.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from backend.mesh.cleanup import component_labels


def edge_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges [E, 2] and how many faces use each."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def topology(verts: np.ndarray, faces: np.ndarray) -> dict[str, int]:
    """Vertex/edge/face counts, boundary and non-manifold edges, Euler characteristic, components."""
    edges, counts = edge_counts(faces)
    v = len(np.unique(np.asarray(faces).reshape(-1)))
    n_comp, _ = component_labels(verts, faces)
    return {
        "vertices": v,
        "edges": len(edges),
        "faces": len(faces),
        "boundary_edges": int((counts == 1).sum()),
        "nonmanifold_edges": int((counts > 2).sum()),
        "euler": v - len(edges) + len(faces),
        "components": n_comp,
    }


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed by area over the mesh surface."""
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(f), size=n, p=area / area.sum())
    r1 = np.sqrt(rng.random(n))[:, None]
    r2 = rng.random(n)[:, None]
    return (1 - r1) * a[idx] + r1 * (1 - r2) * b[idx] + r1 * r2 * c[idx]


def point_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances a→b and b→a."""
    return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance (mean of both directions' mean nearest distances), in input units."""
    ab, ba = point_distances(a, b)
    return float(0.5 * (ab.mean() + ba.mean()))


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    ab, ba = point_distances(a, b)
    return float(max(ab.max(), ba.max()))


def vertex_hausdorff(verts_a: np.ndarray, verts_b: np.ndarray) -> float:
    """Largest distance from a vertex of either mesh to the nearest vertex of the other (0: same vertices)."""
    return hausdorff(np.asarray(verts_a, np.float64), np.asarray(verts_b, np.float64))


def same_mesh(verts_a: np.ndarray, faces_a: np.ndarray, verts_b: np.ndarray, faces_b: np.ndarray
              ) -> dict[str, object]:
    """Whether two meshes are one mesh up to vertex and face order, and how far their vertices are apart.

    The CUDA marching-cubes kernel appends vertices and faces in whatever order its threads finish, so its
    output cannot be compared with the CPU path's array for array: each vertex of ``a`` is paired with its
    nearest vertex of ``b`` (the pairing must be one to one), and the faces, renumbered through the pairing and
    rotated to start at their smallest index (winding kept), must be equal as sets. Vertices must agree to a
    few float32 rounding steps of the largest coordinate.
    """
    va, vb = np.asarray(verts_a, np.float64), np.asarray(verts_b, np.float64)
    fa, fb = np.asarray(faces_a, np.int64), np.asarray(faces_b, np.int64)
    out: dict[str, object] = {"vertices": [len(va), len(vb)], "faces": [len(fa), len(fb)]}
    if len(va) != len(vb) or len(fa) != len(fb):
        return {**out, "same": False, "why": "different vertex or face counts"}
    if not len(va):
        return {**out, "same": True, "max_vertex_distance": 0.0}
    dist, partner = cKDTree(vb).query(va)
    tolerance = 4 * float(np.finfo(np.float32).eps) * max(1.0, float(np.abs(va).max()))
    out["max_vertex_distance"] = float(dist.max())
    if np.unique(partner).size != len(va):
        return {**out, "same": False, "why": "vertices do not pair one to one"}

    def canonical(faces: np.ndarray) -> set[tuple[int, ...]]:
        start = np.argmin(faces, axis=1)
        rows = np.arange(len(faces))
        return {tuple(x) for x in np.stack([faces[rows, (start + k) % 3] for k in range(3)], 1).tolist()}

    if canonical(partner[fa]) != canonical(fb):
        return {**out, "same": False, "why": "faces differ"}
    if dist.max() > tolerance:
        return {**out, "same": False, "why": f"vertices differ by more than {tolerance:.2e}"}
    return {**out, "same": True}


def mesh_distances(
    verts_a: np.ndarray, faces_a: np.ndarray, verts_b: np.ndarray, faces_b: np.ndarray,
    n: int = 50000, seed: int = 0,
) -> dict[str, float]:
    """Chamfer and Hausdorff distances between two meshes, from ``n`` area-uniform samples of each."""
    a = sample_surface(verts_a, faces_a, n, seed)
    b = sample_surface(verts_b, faces_b, n, seed + 1)
    ab, ba = point_distances(a, b)
    return {"chamfer": float(0.5 * (ab.mean() + ba.mean())), "hausdorff": float(max(ab.max(), ba.max()))}


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", u, v)


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point to ``p`` on triangle (a, b, c), all [..., 3] (Voronoi-region method, vectorised)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    bp = p - b
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    cp = p - c
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        out = a + ab * (vb / denom)[..., None] + ac * (vc / denom)[..., None]  # inside the face
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        t_ac = d2 / (d2 - d6)
        t_ab = d1 / (d1 - d3)
    # later assignments win: the order makes vertex regions override edge regions override the face
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), lambda: b + (c - b) * t_bc[..., None]),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), lambda: a + ac * t_ac[..., None]),
        ((d6 >= 0) & (d5 <= d6), lambda: c),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), lambda: a + ab * t_ab[..., None]),
        ((d3 >= 0) & (d4 <= d3), lambda: b),
        ((d1 <= 0) & (d2 <= 0), lambda: a),
    ]
    for mask, value in regions:
        if mask.any():
            out = np.where(mask[..., None], value(), out)
    return out


def point_mesh_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, k: int = 16) -> np.ndarray:
    """Distance from each point to the mesh surface (exact among the ``k`` triangles nearest by centroid)."""
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(points, dtype=np.float64)
    k = min(k, len(f))
    _, cand = cKDTree(v[f].mean(axis=1)).query(p, k=k)
    cand = cand.reshape(len(p), k)
    tri = v[f[cand]]  # [P, k, 3, 3]
    q = closest_points_on_triangles(p[:, None, :], tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
    return np.linalg.norm(q - p[:, None, :], axis=2).min(axis=1)


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)
