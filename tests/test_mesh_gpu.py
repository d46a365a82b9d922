"""The CUDA marching-cubes kernel against its numpy twin and the CPU path (needs a CUDA GPU and CuPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_mesh_mc import GRIDS, assert_same_mesh, sphere_grid

from backend.mesh.field import sphere_field, two_blob_field
from backend.mesh.marching_cubes import marching_cubes
from backend.mesh.mc_reference import marching_cubes_reference
from backend.mesh.metrics import topology
from backend.mesh.pipeline import MeshSettings, extract_mesh

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def kernel():  # type: ignore[no-untyped-def]
    pytest.importorskip("cupy")
    from cuda import aware3d_mc

    if not aware3d_mc.available():
        pytest.skip("CuPy cannot use the GPU")
    return aware3d_mc


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_kernel_raw_output_equals_reference(kernel, name: str) -> None:  # type: ignore[no-untyped-def]
    grid, level = GRIDS[name]()
    v, f, k = kernel.marching_cubes_raw(torch.from_numpy(np.ascontiguousarray(grid)).cuda(), level)
    ref = marching_cubes_reference(grid, level)
    np.testing.assert_array_equal(f.cpu().numpy(), ref.faces)
    np.testing.assert_array_equal(k.cpu().numpy(), ref.weld_key)
    np.testing.assert_allclose(v.cpu().numpy(), ref.verts.astype(np.float32), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_cuda_path_matches_cpu_library(name: str, kernel) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("mcubes")
    grid, level = GRIDS[name]()
    gpu = marching_cubes(torch.from_numpy(np.ascontiguousarray(grid)).cuda(), level, "cuda")
    assert gpu[0].is_cuda and gpu[1].is_cuda  # no host round trip
    assert_same_mesh(gpu, marching_cubes(grid, level, "pymcubes"))


def test_cuda_sphere_closed_with_exact_level_values(kernel) -> None:  # type: ignore[no-untyped-def]
    g = torch.from_numpy(sphere_grid(96, quantum=1 / 64)).cuda()
    v, f = marching_cubes(g, 0.0, "cuda")
    t = topology(v.cpu().numpy(), f.cpu().numpy())
    assert t["boundary_edges"] == 0 and t["euler"] == 2


def test_cuda_large_grid(kernel) -> None:  # type: ignore[no-untyped-def]
    x = torch.linspace(-1, 1, 512, device="cuda")
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    g = 0.6 - (X**2 + Y**2 + Z**2).sqrt() + 0.02 * torch.sin(20 * X) * torch.sin(20 * Y) * torch.sin(20 * Z)
    gpu = marching_cubes(g, 0.0, "cuda")
    cpu = marching_cubes(g.cpu(), 0.0, "reference")
    assert_same_mesh(gpu, cpu)


def test_pipeline_on_gpu(kernel) -> None:  # type: ignore[no-untyped-def]
    dev = torch.device("cuda")
    for field in (sphere_field(device=dev), two_blob_field(device=dev)):
        gpu = extract_mesh(field, MeshSettings(resolution=128, target_faces=0, smooth_iterations=0))
        assert gpu.stats["mc_method"] == "cuda"
        field.device = torch.device("cpu")
        cpu = extract_mesh(field, MeshSettings(resolution=128, target_faces=0, smooth_iterations=0))
        assert gpu.num_faces == cpu.num_faces
        np.testing.assert_allclose(np.sort(gpu.vertices, axis=0), np.sort(cpu.vertices, axis=0), atol=1e-5)
