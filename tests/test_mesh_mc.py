"""Marching cubes: the kernel's numpy twin against PyMCubes, tables, welding, closedness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from backend.mesh import mc_tables
from backend.mesh.marching_cubes import (
    marching_cubes,
    marching_cubes_raw_cpu,
    weld_and_clean,
    weld_and_clean_numpy,
)
from backend.mesh.mc_reference import level_threshold_f32, marching_cubes_reference
from backend.mesh.metrics import topology

ROOT = Path(__file__).resolve().parents[1]


def sphere_grid(n: int = 40, radius: float = 0.6, quantum: float | None = None) -> np.ndarray:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    g = (radius - np.sqrt(X**2 + Y**2 + Z**2)).astype(np.float32)
    if quantum:
        g = (np.round(g / quantum) * quantum).astype(np.float32)
    return g


def smooth_noise(shape: tuple[int, int, int], seed: int, sigma: float = 1.5) -> np.ndarray:
    g = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(g, sigma).astype(np.float32)


def canonical(verts: np.ndarray, faces: np.ndarray, decimals: int = 5) -> set[tuple]:
    """Faces as triples of rounded positions, rotated to start at the smallest (winding kept)."""
    key = np.round(np.asarray(verts, dtype=np.float64), decimals)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    ff = inv.reshape(-1)[np.asarray(faces)]
    r = np.argmin(ff, axis=1)
    rows = np.arange(len(ff))
    ff = np.stack([ff[rows, (r + s) % 3] for s in range(3)], axis=1)
    return {tuple(x) for x in ff.tolist()}


def assert_same_mesh(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> None:
    va, fa = (t.cpu().numpy() for t in a)
    vb, fb = (t.cpu().numpy() for t in b)
    assert va.shape == vb.shape and fa.shape == fb.shape
    # every vertex of one has a partner within 1e-5 grid units in the other, and faces agree as sets
    if len(va):
        dist, partner = cKDTree(vb).query(va)
        assert dist.max() < 1e-5
        assert np.unique(partner).size == len(va)
        fb = np.argsort(partner)[fb]  # b's faces in a's vertex numbering
        assert canonical(va, fa) == canonical(va, fb)


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def test_tables_are_the_classic_ones() -> None:
    assert len(mc_tables.TRI_TABLE) == 256
    assert mc_tables.TRI_TABLE[1] == (0, 8, 3)
    assert mc_tables.TRI_TABLE[3] == (1, 8, 3, 9, 8, 1)
    assert mc_tables.NUM_TRIANGLES.max() == 5
    # complementary cases share their crossed edges
    for case in range(256):
        assert mc_tables.EDGE_TABLE[case] == mc_tables.EDGE_TABLE[255 - case]


def test_cuda_source_carries_current_tables() -> None:
    source = (ROOT / "cuda" / "marching_cubes.cu").read_text(encoding="utf-8")
    assert mc_tables.extract_cuda_tables(source) == mc_tables.render_cuda_tables(), (
        "run: python -m backend.mesh.mc_tables --write-cuda"
    )


def test_every_case_matches_pymcubes() -> None:
    """All 256 single-cell cases: the same triangles (as edge triples, winding included) as PyMCubes."""
    mcubes = pytest.importorskip("mcubes")
    for case in range(256):
        g = np.full((2, 2, 2), 1.0, dtype=np.float32)  # Bourke bit set = corner not inside
        for c, off in enumerate(mc_tables.CORNER_OFFSETS):
            if case >> c & 1:
                g[off] = -1.0
        ours = marching_cubes_reference(g, 0.0)
        v, f = mcubes.marching_cubes(g, 0.0)
        assert canonical(ours.verts, ours.faces) == canonical(v, f.astype(np.int64)), case
        assert len(ours.faces) == mc_tables.NUM_TRIANGLES[case]


# ----------------------------------------------------------------------------------------------------------
# Reference (kernel twin) vs the CPU library path
# ----------------------------------------------------------------------------------------------------------

GRIDS = {
    "sphere": lambda: (sphere_grid(40), 0.0),
    "sphere-off-centre": lambda: (sphere_grid(33, 0.45) + 0.013, 0.0),
    "noise-0": lambda: (smooth_noise((24, 24, 24), 0), 0.0),
    "noise-1": lambda: (smooth_noise((17, 31, 9), 1, sigma=1.0), 0.02),
    "noise-2": lambda: (smooth_noise((20, 20, 20), 2, sigma=0.7), -0.05),
    "noise-3": lambda: (smooth_noise((30, 12, 25), 3), 0.0),
    "exact-level-1/16": lambda: (sphere_grid(40, quantum=1 / 16), 0.0),
    "exact-level-1/64": lambda: (sphere_grid(48, quantum=1 / 64), 0.0),
    "quantised-noise": lambda: (np.round(smooth_noise((24, 24, 24), 4) * 32) / 32, 0.0),
    "relu-density": lambda: (np.maximum(smooth_noise((24, 24, 24), 5), 0.0), 0.0),
    "fp16-rounded": lambda: (sphere_grid(40).astype(np.float16).astype(np.float32) * 10 + 10, 10.0),
    "level-not-f32": lambda: (sphere_grid(30) + np.float32(0.1), 0.1),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_reference_matches_pymcubes(name: str) -> None:
    pytest.importorskip("mcubes")
    grid, level = GRIDS[name]()
    ref = marching_cubes(grid, level, "reference")
    lib = marching_cubes(grid, level, "pymcubes")
    assert ref[1].shape[0] > 0
    assert_same_mesh(ref, lib)


def test_raw_output_is_welded_by_construction() -> None:
    """One vertex per crossed grid edge: V equals the number of crossed edges, faces share them."""
    g = smooth_noise((20, 20, 20), 7)
    raw = marching_cubes_reference(g, 0.0)
    inside = g > 0
    crossed = sum(int((np.diff(inside.astype(np.int8), axis=a) != 0).sum()) for a in range(3))
    assert len(raw.verts) == crossed
    assert np.unique(raw.faces).size == crossed  # every vertex used
    assert (raw.weld_key == -1).all()  # a generic field has no vertex on a grid corner


def test_slabs_do_not_change_the_result() -> None:
    g = smooth_noise((23, 19, 21), 8)
    a = marching_cubes_reference(g, 0.0)
    b = marching_cubes_reference(g, 0.0, slab_points=1)  # one x-plane per slab
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_array_equal(a.verts, b.verts)
    np.testing.assert_array_equal(a.weld_key, b.weld_key)


def test_float16_grid_gives_the_float32_mesh() -> None:
    g16 = (sphere_grid(32) * 10 + 10).astype(np.float16)
    a = marching_cubes(torch.from_numpy(g16), 10.0, "reference")
    b = marching_cubes(g16.astype(np.float32), 10.0, "reference")
    assert_same_mesh(a, b)


def test_level_threshold_is_exact() -> None:
    for level in (0.0, 0.1, 10.0, -3.3, 1e-8):
        thr = level_threshold_f32(level)
        vals = np.nextafter(np.float32(level), np.float32([-np.inf, np.inf]))
        vals = np.concatenate([vals, [np.float32(level), thr, np.nextafter(thr, np.float32(np.inf))]])
        assert np.array_equal(vals > thr, vals.astype(np.float64) > level)


def test_torch_and_numpy_weld_agree() -> None:
    raw = marching_cubes_raw_cpu(sphere_grid(40, quantum=1 / 16), 0.0, "reference")
    assert (raw.weld_key >= 0).any()
    v32 = raw.verts.astype(np.float32)
    vn, fn = weld_and_clean_numpy(v32, raw.faces, raw.weld_key)
    t = (torch.from_numpy(x) for x in (v32, raw.faces, raw.weld_key))
    vt, ft = weld_and_clean(*t)
    np.testing.assert_array_equal(vn, vt.numpy())
    np.testing.assert_array_equal(fn, ft.numpy())
    assert len(fn) < len(raw.faces)  # degenerate triangles were removed


# ----------------------------------------------------------------------------------------------------------
# Mesh properties
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantum", [None, 1 / 16, 1 / 64])
def test_sphere_is_closed(quantum: float | None) -> None:
    v, f = marching_cubes(sphere_grid(48, quantum=quantum), 0.0)
    t = topology(v.numpy(), f.numpy())
    assert t["boundary_edges"] == 0
    assert t["nonmanifold_edges"] == 0
    assert t["euler"] == 2
    assert t["components"] == 1
    vv = v.numpy().astype(np.float64)
    ff = f.numpy()
    area2 = np.linalg.norm(np.cross(vv[ff[:, 1]] - vv[ff[:, 0]], vv[ff[:, 2]] - vv[ff[:, 0]]), axis=1)
    assert area2.min() > 0  # no degenerate triangles left


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_fields_give_watertight_meshes(seed: int) -> None:
    """The classic table resolves ambiguous faces consistently: no cracks even in noise."""
    g = smooth_noise((36, 36, 36), seed, sigma=1.2)
    g[:2] = g[-2:] = g[:, :2] = g[:, -2:] = g[:, :, :2] = g[:, :, -2:] = -1.0
    v, f = marching_cubes(g, 0.0)
    t = topology(v.numpy(), f.numpy())
    assert t["boundary_edges"] == 0 and t["nonmanifold_edges"] == 0 and t["components"] > 1


def test_normals_point_to_lower_values() -> None:
    n = 40
    v, f = marching_cubes(sphere_grid(n), 0.0)
    vv = v.numpy().astype(np.float64)
    ff = f.numpy()
    normal = np.cross(vv[ff[:, 1]] - vv[ff[:, 0]], vv[ff[:, 2]] - vv[ff[:, 0]])
    outward = vv[ff].mean(axis=1) - (n - 1) / 2
    assert ((normal * outward).sum(axis=1) > 0).all()


def test_sphere_vertices_lie_on_the_sphere() -> None:
    n, r = 64, 0.6
    v, _ = marching_cubes(sphere_grid(n, r), 0.0)
    world = v.numpy() * (2 / (n - 1)) - 1
    err = np.abs(np.linalg.norm(world, axis=1) - r)
    assert err.max() < 0.2 * (2 / (n - 1))  # within a fifth of a voxel


def test_no_surface_gives_an_empty_mesh() -> None:
    for method in ("reference", "pymcubes", "skimage"):
        v, f = marching_cubes(np.zeros((8, 8, 8), np.float32), 1.0, method)
        assert v.shape == (0, 3) and f.shape == (0, 3)


def test_skimage_path_is_closed_but_triangulates_differently() -> None:
    """scikit-image (Lorensen) gives a valid closed mesh, but not the classic table's triangles."""
    g = smooth_noise((24, 24, 24), 9)
    sk = marching_cubes(g, 0.0, "skimage")
    ref = marching_cubes(g, 0.0, "reference")
    assert sk[0].shape == ref[0].shape  # same crossed edges, same vertices
    assert canonical(*(t.numpy() for t in sk)) != canonical(*(t.numpy() for t in ref))


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((4, 4), np.float32), 0.0)
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((4, 4, 4), np.float32), 0.0, "nonsense")
