"""Rays, tri-plane projection, the ray marcher, importance sampling and render determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend import cameras
from backend.config import RenderingConfig
from backend.render.rays import camera_rays
from backend.render.renderer import (
    ImportanceRenderer,
    SamplingSettings,
    ray_distortion,
    ray_limits_box,
    ray_march,
    sample_pdf,
)
from backend.render.triplane import project_onto_planes, sample_planes


def label(yaw: float = 0.0, pitch: float = 0.0) -> torch.Tensor:
    return torch.from_numpy(cameras.make_label(cameras.orbit_camera(yaw, pitch)))[None]


def test_rays_match_the_camera_module_reference() -> None:
    c = label(20, -10)
    origins, dirs = camera_rays(c, 16)
    c2w, K = cameras.split_label(c[0].numpy())
    ref_o, ref_d = cameras.pixel_rays(c2w, K, 16, 16)
    assert np.allclose(origins[0].numpy(), ref_o.reshape(-1, 3), atol=1e-5)
    assert np.allclose(dirs[0].numpy(), ref_d.reshape(-1, 3), atol=1e-5)


def test_projection_conventions() -> None:
    p = torch.tensor([[[0.1, 0.2, 0.3]]])
    official = project_onto_planes(p, "eg3d").reshape(3, 2)
    corrected = project_onto_planes(p, "corrected").reshape(3, 2)
    assert torch.allclose(official, torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.1]]))
    assert torch.allclose(corrected, torch.tensor([[0.1, 0.2], [0.2, 0.3], [0.3, 0.1]]))


@pytest.mark.parametrize("projection", ["eg3d", "corrected"])
def test_plane_sampling_reads_the_feature_at_the_projected_texel(projection: str) -> None:
    """A single hot texel in plane 1 is found exactly where the convention projects a point."""
    s = 16
    planes = torch.zeros(1, 3, 1, s, s)
    row, col = 3, 11
    planes[0, 1, 0, row, col] = 1.0
    # Texel centre in [-0.5, 0.5] world units (box_warp 1): column -> first grid coordinate.
    first = (col + 0.5) / s - 0.5
    second = (row + 0.5) / s - 0.5
    pt = [0.0, 0.0, 0.0]
    a, b = {"eg3d": (0, 2), "corrected": (1, 2)}[projection]
    pt[a], pt[b] = first, second
    feats = sample_planes([planes], torch.tensor([[pt]]), projection, box_warp=1.0)
    assert feats.shape == (1, 3, 1, 1)
    assert float(feats[0, 1, 0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_ray_box_limits() -> None:
    o = torch.tensor([[[0.0, 0.0, 2.0]]])
    d = torch.tensor([[[0.0, 0.0, -1.0]]])
    near, far = ray_limits_box(o, d, 1.0)
    assert float(near) == pytest.approx(1.5)
    assert float(far) == pytest.approx(2.5)


def test_ray_march_constant_density_matches_beer_lambert() -> None:
    opts = RenderingConfig()
    depths = torch.linspace(2.0, 3.0, 201).reshape(1, 1, -1, 1)
    raw = 1.0 + math.log(math.e - 1)  # softplus(raw - 1) = 1
    densities = torch.full_like(depths, raw)
    colors = torch.full([1, 1, 201, 3], 0.5)
    rgb, depth, weights = ray_march(colors, densities, depths, opts)
    assert float(weights.sum()) == pytest.approx(1 - math.exp(-1.0), rel=1e-4)
    assert rgb[0, 0].tolist() == pytest.approx([2 * 0.5 * (1 - math.exp(-1)) - 1] * 3, rel=1e-4)
    # Expected depth under exponential attenuation truncated to [2, 3].
    expected = 2 + (1 - 2 * math.exp(-1)) / (1 - math.exp(-1))
    assert float(depth) == pytest.approx(expected, rel=1e-4)


def test_sample_pdf_deterministic_and_inside_bins() -> None:
    bins = torch.linspace(0, 1, 11).expand(4, 11)
    weights = torch.rand(4, 9)
    u = torch.linspace(0, 1, 7).expand(4, 7)
    s = sample_pdf(bins, weights, u)
    assert s.shape == (4, 7)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 0.9 + 1e-6  # the last bin is never used
    assert torch.all(s[:, 1:] >= s[:, :-1])
    # All mass in one bin -> the samples concentrate there.
    w = torch.zeros(1, 9)
    w[0, 4] = 1.0
    s = sample_pdf(bins[:1], w, torch.rand(1, 100))
    assert float(((s > 0.4) & (s < 0.6)).float().mean()) > 0.95


def sphere_field(radius: float = 0.3, center=(0.0, 0.0, 0.0)):
    c = torch.tensor(center)

    def field(points: torch.Tensor) -> dict[str, torch.Tensor]:
        inside = (points - c).norm(dim=-1, keepdim=True) < radius
        sigma = torch.where(inside, torch.tensor(200.0), torch.tensor(-20.0))
        rgb = torch.cat([inside.float(), torch.zeros_like(points[..., :2])], dim=-1)
        return {"sigma": sigma, "rgb": rgb}

    return field


def test_sphere_renders_with_the_analytic_depth_and_silhouette() -> None:
    opts = RenderingConfig(depth_resolution=64, depth_resolution_importance=64)
    renderer = ImportanceRenderer(opts)
    c = label()
    origins, dirs = camera_rays(c, 32)
    res = renderer.render(sphere_field(), origins, dirs, SamplingSettings(exact=True), feature_channels=3)
    alpha = res.weight_sum[0, 0].reshape(32, 32)
    depth = res.depth[0, 0].reshape(32, 32)
    # Analytic: ray-sphere intersection distance along the unit ray.
    o, d = origins[0], dirs[0]
    b = (o * d).sum(-1)
    disc = b**2 - ((o * o).sum(-1) - 0.3**2)
    hit = (disc > 0).reshape(32, 32)
    t = (-b - disc.clamp_min(0).sqrt()).reshape(32, 32)
    inner = hit & (disc.reshape(32, 32) > 0.01)
    assert float(alpha[inner].min()) > 0.99
    assert float(alpha[~hit].max()) < 0.01
    assert float((depth[inner] - t[inner]).abs().max()) < 0.01


def test_ray_distortion_is_the_pairwise_weight_spread() -> None:
    """The O(S) running-sum form equals the double sum, and a shell in front of a core costs more than one
    surface holding the same opacity (what the training loss relies on to merge them)."""
    torch.manual_seed(0)
    w = torch.rand(3, 7, 11, 1)
    d = torch.sort(torch.rand(3, 7, 12, 1) * 2 + 2, dim=2).values
    mid, length, ww = 0.5 * (d[..., 1:, 0] + d[..., :-1, 0]), d[..., 1:, 0] - d[..., :-1, 0], w[..., 0]
    pairs = (ww[..., :, None] * ww[..., None, :] * (mid[..., :, None] - mid[..., None, :]).abs()).sum((-1, -2))
    assert torch.allclose(ray_distortion(w, d)[..., 0], pairs + (ww * ww * length).sum(-1) / 3, atol=1e-5)

    depths = torch.linspace(2.0, 3.0, 101).reshape(1, 1, -1, 1)
    one = torch.zeros(1, 1, 100, 1)
    one[..., 40:43, :] = 0.9 / 3
    split = torch.zeros(1, 1, 100, 1)
    split[..., 40:43, :] = 0.45 / 3
    split[..., 70:73, :] = 0.45 / 3
    assert float(ray_distortion(split, depths)) > 10 * float(ray_distortion(one, depths))
    opts = RenderingConfig(depth_resolution=32, depth_resolution_importance=32)
    origins, dirs = camera_rays(label(), 8)
    res = ImportanceRenderer(opts).render(sphere_field(), origins, dirs, SamplingSettings(exact=True, distortion=True),
                                          feature_channels=3)
    assert res.distortion is not None and res.distortion.shape == res.depth.shape
    assert ImportanceRenderer(opts).render(sphere_field(), origins, dirs, SamplingSettings(exact=True),
                                           feature_channels=3).distortion is None


def tiny_field():
    torch.manual_seed(0)
    planes = [torch.randn(1, 3, 4, 8, 8)]
    proj = torch.nn.Linear(4, 5)

    def field(points: torch.Tensor) -> dict[str, torch.Tensor]:
        f = sample_planes(planes, points, "corrected", 1.0).mean(1)
        out = proj(f)
        return {"sigma": out[..., :1] * 5, "rgb": torch.sigmoid(out[..., 1:])}

    return field


def render(settings: SamplingSettings, field=None) -> torch.Tensor:
    renderer = ImportanceRenderer(RenderingConfig(depth_resolution=16, depth_resolution_importance=16))
    origins, dirs = camera_rays(label(10, 5), 16)
    with torch.no_grad():
        res = renderer.render(field or tiny_field(), origins, dirs, settings, feature_channels=4)
    extra = [] if res.distortion is None else [res.distortion]
    return torch.cat([res.features, res.depth, *extra], dim=1)


def test_seeded_render_is_bit_identical_and_seed_dependent() -> None:
    a = render(SamplingSettings(seed=3))
    b = render(SamplingSettings(seed=3))
    c = render(SamplingSettings(seed=4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_exact_mode_has_no_randomness() -> None:
    torch.manual_seed(0)
    a = render(SamplingSettings(exact=True))
    torch.manual_seed(1)
    b = render(SamplingSettings(exact=True, seed=9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("settings", [SamplingSettings(exact=True), SamplingSettings(seed=5)])
def test_chunking_does_not_change_the_image(settings: SamplingSettings) -> None:
    from dataclasses import replace

    whole = render(replace(settings, distortion=True))
    chunked = render(replace(settings, ray_chunk=37, distortion=True))
    assert whole.shape[1] == 6  # features, depth and distortion
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_memory_budget_sets_the_chunk_size() -> None:
    calls: list[tuple[int, int]] = []
    renderer = ImportanceRenderer(RenderingConfig(depth_resolution=16, depth_resolution_importance=16))
    origins, dirs = camera_rays(label(), 32)
    renderer.render(tiny_field(), origins, dirs, SamplingSettings(exact=True, memory_budget=4 << 20),
                    feature_channels=4, on_chunk=lambda i, n: calls.append((i, n)))
    assert len(calls) > 1 and calls[-1][0] == calls[-1][1]
