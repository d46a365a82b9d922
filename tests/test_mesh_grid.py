"""Density grids: coordinates, border trim, chunking by memory budget, coarse-to-fine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.mesh.coarse_to_fine import coarse_nodes, fill_from_coarse, sample_grid_coarse_to_fine
from backend.mesh.field import CountingField, SDFField, bumpy_ellipsoid_field, sphere_sdf, two_blob_field
from backend.mesh.grid import (
    GridSpec,
    chunk_points,
    far_value,
    grid_dtype,
    official_border_pad,
    sample_grid,
)
from backend.mesh.marching_cubes import marching_cubes
from backend.mesh.metrics import topology, vertex_hausdorff


class XField:
    """Density = x coordinate (to check where every grid point is)."""

    box_size = 1.0
    device = torch.device("cpu")
    bytes_per_point = 16

    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz[:, 0] * 100 + xyz[:, 1] * 10 + xyz[:, 2]

    def colour(self, xyz: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(xyz)


def test_official_pad_and_grid_layout() -> None:
    assert official_border_pad(512) == 60
    assert official_border_pad(256) == 30
    spec = GridSpec(9, 1.0)
    grid, queries = sample_grid(XField(), spec, level=0.0, border_pad=0)
    x = np.linspace(-0.5, 0.5, 9)
    expect = x[:, None, None] * 100 + x[None, :, None] * 10 + x[None, None, :]
    np.testing.assert_allclose(grid.numpy(), expect, atol=1e-5)  # index [i, j, k] is (x, y, z)
    assert queries == 9**3


def test_border_is_far_and_not_queried() -> None:
    spec = GridSpec(32, 1.0)
    f = CountingField(XField())
    grid, queries = sample_grid(f, spec, level=10.0, border_pad=3)
    assert queries == f.density_points == 26**3
    far = far_value(10.0)
    for sl in (np.s_[:3], np.s_[-3:], np.s_[:, :3], np.s_[:, -3:], np.s_[:, :, :3], np.s_[:, :, -3:]):
        assert (grid[sl] == far).all()
    assert (grid[3:-3, 3:-3, 3:-3] != far).all()


def test_chunks_follow_the_budget() -> None:
    spec = GridSpec(24, 1.0)
    f = CountingField(XField())
    small, _ = sample_grid(f, spec, 0.0, 0, budget_bytes=4096 * 16)
    assert f.density_calls >= 24**3 // 4096
    big, _ = sample_grid(XField(), spec, 0.0, 0, budget_bytes=1 << 30)
    assert torch.equal(small, big)
    assert chunk_points(1 << 30, 1600) == (1 << 30) // 1600
    assert chunk_points(1, 1) == 4096


def test_grid_dtype_choice() -> None:
    assert grid_dtype(512) == torch.float32
    assert grid_dtype(1024) == torch.float16
    spec = GridSpec(16, 1.0)
    g16, _ = sample_grid(bumpy_ellipsoid_field(slope=1e6), spec, 10.0, 0, dtype=torch.float16)
    assert g16.dtype == torch.float16 and torch.isfinite(g16).all()  # saturates instead of inf


def test_coarse_nodes_cover_the_grid() -> None:
    assert coarse_nodes(256, 4).tolist()[-3:] == [248, 252, 255]
    assert coarse_nodes(257, 4).tolist()[-2:] == [252, 256]


def test_fill_copies_a_corner_of_the_own_cell() -> None:
    n = 23
    nodes = coarse_nodes(n, 4)
    c = nodes.to(torch.float32)
    coarse = c[:, None, None] * 1e4 + c[None, :, None] * 1e2 + c[None, None, :]
    out = torch.empty((n, n, n))
    fill_from_coarse(coarse, nodes, n, out, slab=5)
    i = torch.arange(n)
    cell = (torch.searchsorted(nodes, i, right=True) - 1).clamp(0, len(nodes) - 2)
    lo, hi = nodes[cell], nodes[cell + 1]
    for axis_value, scale in ((out[:, 0, 0], 1e4), (out[0, :, 0], 1e2), (out[0, 0, :], 1.0)):
        picked = axis_value / scale
        assert ((picked == lo) | (picked == hi)).all()
        assert (torch.abs(picked - i) <= 2).all()


@pytest.mark.parametrize("make", [bumpy_ellipsoid_field, two_blob_field])
def test_coarse_to_fine_gives_the_same_mesh(make) -> None:  # type: ignore[no-untyped-def]
    spec = GridSpec(160, 1.0)
    pad = official_border_pad(160)
    full_f = CountingField(make())
    c2f_f = CountingField(make())
    full, _ = sample_grid(full_f, spec, 10.0, pad)
    fine, stats = sample_grid_coarse_to_fine(c2f_f, spec, 10.0, pad, factor=4, dilation=1)
    assert c2f_f.density_points == stats.queries
    assert c2f_f.density_points * 4 < full_f.density_points
    va, fa = marching_cubes(full, 10.0)
    vb, fb = marching_cubes(fine, 10.0)
    assert torch.equal(fa, fb) and torch.equal(va, vb)  # the band holds exactly the full grid's values
    ta, tb = topology(va.numpy(), fa.numpy()), topology(vb.numpy(), fb.numpy())
    assert ta["components"] == tb["components"] >= 1


def test_coarse_to_fine_query_reduction_at_512() -> None:
    """At 512³ the band needs >10x fewer queries than the (already border-trimmed) full grid."""
    spec = GridSpec(512, 1.0)
    pad = official_border_pad(512)
    f = CountingField(two_blob_field())
    grid, stats = sample_grid_coarse_to_fine(f, spec, 10.0, pad, factor=4, dilation=1,
                                             budget_bytes=64 << 20)
    full_queries = (512 - 2 * pad) ** 3
    assert f.density_points == stats.queries
    assert full_queries / f.density_points > 10
    assert 512**3 / f.density_points > 25  # vs the official untrimmed 512³ sampling
    v, faces = marching_cubes(grid, 10.0)
    assert topology(v.numpy(), faces.numpy())["components"] == 2  # head + floater both found


@pytest.mark.slow
def test_coarse_to_fine_matches_full_grid_at_512() -> None:
    spec = GridSpec(512, 1.0)
    pad = official_border_pad(512)
    full, _ = sample_grid(two_blob_field(), spec, 10.0, pad)
    va, fa = marching_cubes(full, 10.0)
    del full
    fine, _ = sample_grid_coarse_to_fine(two_blob_field(), spec, 10.0, pad)
    vb, fb = marching_cubes(fine, 10.0)
    del fine
    assert vertex_hausdorff(va.numpy(), vb.numpy()) < 1e-6
    assert fa.shape == fb.shape
    assert topology(va.numpy(), fa.numpy())["components"] == topology(vb.numpy(), fb.numpy())["components"]


def fin_field(length: float) -> SDFField:
    """A sphere with a thin fin (2 fine voxels thick at 256³) that falls between coarse grid points."""
    sphere = sphere_sdf(0.25)
    centre = -0.5 + 126 / 255  # between the coarse points at fine indices 124 and 128

    def sdf(p: torch.Tensor) -> torch.Tensor:
        fin = torch.maximum(torch.maximum((p[:, 0] - centre).abs() - 0.004,
                                          (p[:, 1] - 0.25 - length / 2).abs() - length / 2),
                            p[:, 2].abs() - 0.02)
        return torch.minimum(sphere(p), fin)

    return SDFField(sdf)


@pytest.mark.parametrize(("length", "dilation", "margin"), [(0.012, 1, 0.0), (0.06, 1, 5.0)])
def test_thin_parts_are_kept_by_the_band(length: float, dilation: int, margin: float) -> None:
    """A fin no coarse point sees is refined when it stays within the dilated band, or by the margin."""
    spec = GridSpec(256, 1.0)
    field = fin_field(length)
    full, _ = sample_grid(field, spec, 10.0, 30)
    fine, _ = sample_grid_coarse_to_fine(field, spec, 10.0, 30, factor=4, dilation=dilation, margin=margin)
    va, fa = marching_cubes(full, 10.0)
    vb, fb = marching_cubes(fine, 10.0)
    assert fa.shape == fb.shape
    assert vertex_hausdorff(va.numpy(), vb.numpy()) < 1e-6


def test_long_thin_part_needs_more_than_one_cell_of_band() -> None:
    """The documented limit: without margin, dilation 1 cuts a long invisible fin short."""
    spec = GridSpec(256, 1.0)
    field = fin_field(0.06)
    full, _ = sample_grid(field, spec, 10.0, 30)
    fine, _ = sample_grid_coarse_to_fine(field, spec, 10.0, 30, factor=4, dilation=1)
    va, _ = marching_cubes(full, 10.0)
    vb, _ = marching_cubes(fine, 10.0)
    assert spec.to_world(vb)[:, 1].max() < spec.to_world(va)[:, 1].max() - 0.02
