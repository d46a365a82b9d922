"""Clean-up: components, Taubin smoothing, decimation, normals."""

from __future__ import annotations

import numpy as np
import pytest

from backend.mesh import cleanup
from backend.mesh.field import sphere_field, two_blob_field
from backend.mesh.grid import GridSpec, sample_grid
from backend.mesh.marching_cubes import marching_cubes
from backend.mesh.metrics import topology


def world_mesh(field, n: int = 96) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    spec = GridSpec(n, field.box_size)
    grid, _ = sample_grid(field, spec, 10.0, border_pad=4)
    v, f = marching_cubes(grid, 10.0)
    return spec.to_world(v).numpy(), f.numpy()


@pytest.fixture(scope="module")
def sphere_mesh() -> tuple[np.ndarray, np.ndarray]:
    return world_mesh(sphere_field(0.3))


def test_floater_is_removed() -> None:
    v, f = world_mesh(two_blob_field())
    assert topology(v, f)["components"] == 2
    v1, f1, removed = cleanup.filter_components(v, f, 1.0)
    assert removed == 1 and topology(v1, f1)["components"] == 1
    assert v1[:, 0].max() < 0.23  # the floater sat at x = 0.27
    _, f2, removed = cleanup.filter_components(v, f, 0.0)
    assert removed == 0 and len(f2) == len(f)
    v3, f3, _ = cleanup.filter_components(v, f, 0.001)  # the floater is ~2 % of the faces: kept
    assert topology(v3, f3)["components"] == 2


def test_taubin_smooths_without_shrinking(sphere_mesh: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere_mesh
    rng = np.random.default_rng(0)
    noisy = v + rng.normal(scale=0.002, size=v.shape).astype(np.float32)
    smooth = cleanup.taubin_smooth(noisy, f, iterations=10)
    r_noisy = np.linalg.norm(noisy, axis=1)
    r_smooth = np.linalg.norm(smooth, axis=1)
    assert r_smooth.std() < 0.5 * r_noisy.std()
    assert abs(r_smooth.mean() - 0.3) < 0.002  # Taubin keeps the volume (plain Laplacian would shrink)
    # contrast: 100 plain Laplacian steps shrink the sphere, 50 Taubin λ/μ pairs do not
    lap = cleanup.taubin_smooth(noisy, f, iterations=50, lam=0.5, mu=0.5)
    taubin = cleanup.taubin_smooth(noisy, f, iterations=50)
    assert np.linalg.norm(lap, axis=1).mean() < 0.3 - 0.003
    assert abs(np.linalg.norm(taubin, axis=1).mean() - 0.3) < 0.001


def test_decimation_hits_the_target(sphere_mesh: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere_mesh
    v2, f2 = cleanup.decimate(v, f, 2000)
    assert abs(len(f2) - 2000) <= 20
    assert f2.max() < len(v2) and v2.dtype == np.float32
    assert np.abs(np.linalg.norm(v2, axis=1) - 0.3).max() < 0.01
    t = topology(v2, f2)
    assert t["boundary_edges"] == 0 and t["euler"] == 2
    _, same_f = cleanup.decimate(v, f, 10 * len(f))
    assert len(same_f) == len(f)


def test_vertex_normals_point_outwards(sphere_mesh: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere_mesh
    n = cleanup.vertex_normals(v, f)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert (n * radial).sum(axis=1).min() > 0.98


def test_remove_unreferenced() -> None:
    v = np.arange(15, dtype=np.float32).reshape(5, 3)
    f = np.array([[0, 2, 4]])
    v2, f2 = cleanup.remove_unreferenced(v, f)
    assert len(v2) == 3 and f2.tolist() == [[0, 1, 2]]
