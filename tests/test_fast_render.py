"""The fast volume-rendering kernels against the reference (issue 17): same function within float rounding.

Tolerances: |fast − reference| ≤ 1e-4 + 1e-5·|reference| for a query's density and features and for a
render's features, depth, opacity and distortion (float32 rounding of reordered sums: the fast path folds
the 1/3 plane mean into the bilinear weights, sums 12 rows in one pass and forms colours from per-sample
weights; the relative part covers raw densities in the hundreds), and ≥ 60 dB PSNR on the [−1, 1] features.
A render's depth gets 1e-4·|depth| as its relative part: the fine samples are drawn by the inverse CDF of
the coarse weights, so the weights' rounding moves them, and a half-transparent ray's expected depth moves
with them (1.7e-4 at depth 3.13 on an AVX2-only CPU, where the reordered sums round differently; the
AVX-512 machines of earlier sessions stayed within the old 1e-4 + 1e-5·|depth|).
Gradients: the fast kernels are inference-only, so with autograd recording they must run the reference
(same values and gradients, bit for bit). Planes and the
decoder's density row are scaled up from the random initialisation so that rays really terminate (a
random-weight model is otherwise nearly transparent and would hide errors in the ray marcher).
"""

from __future__ import annotations

import math

import pytest
import torch

from backend.config import RenderingConfig
from backend.configs import CONFIGS, TINY, TINY_MIMIC3D
from backend.generator import TriPlaneGenerator
from backend.nets.decoder import query_rows
from backend.render.renderer import (
    ImportanceRenderer,
    SamplingSettings,
    march_weights,
    ray_march,
    sample_weights,
)
from backend.render.triplane import plane_rows, sample_planes, sample_rows
from backend.sampling import camera_label, conditioning_label

ATOL = 1e-4
RTOL = 1e-5  # raw densities reach the hundreds here: float32 spacing there is ~1e-5
DEPTH_RTOL = 1e-4  # a render's depth: the importance samples move with the coarse weights' rounding
DEPTHS = ("image_depth", "depth")
MIN_PSNR = 60.0


def assert_close(fast: torch.Tensor, ref: torch.Tensor, what: object = "") -> None:
    """``|fast − ref| ≤ ATOL + RTOL·|ref|`` everywhere (inf == inf allowed, as in far-clamped depths);
    ``DEPTH_RTOL`` for a render's depth (``what`` names it)."""
    assert fast.shape == ref.shape, what
    err = (fast - ref).abs().nan_to_num(0.0)
    bound = ATOL + (DEPTH_RTOL if what in DEPTHS else RTOL) * ref.abs()
    assert bool((err <= bound).all()), (what, float((err - bound).max()))


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def strong_planes(G: TriPlaneGenerator, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Plane sets with structure: the model's own planes for random latents, plus smooth random blobs."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.cfg.z_dim, generator=gen)
    c = torch.from_numpy(conditioning_label(G.cfg))[None].expand(batch, -1)
    with torch.no_grad():
        planes = G.synthesize_planes(G.mapping(z, c), noise_mode="const")
    out = []
    for p in planes:
        n, _, ch, s, _ = p.shape
        blobs = torch.randn(n, 3, ch, 4, 4, generator=gen).reshape(n * 3, ch, 4, 4)
        blobs = torch.nn.functional.interpolate(blobs, size=(s, s), mode="bicubic", align_corners=False)
        out.append(p * 2 + 2 * blobs.reshape(n, 3, ch, s, s))
    return out


def contrasted(G: TriPlaneGenerator) -> TriPlaneGenerator:
    """Amplify the decoder's density row: random weights otherwise give a nearly transparent fog."""
    with torch.no_grad():
        G.decoder.net[2].weight[0] *= 12
    return G


@pytest.fixture(scope="module")
def tiny() -> TriPlaneGenerator:
    return contrasted(TriPlaneGenerator(TINY).eval())


@pytest.fixture(scope="module")
def tiny_mimic() -> TriPlaneGenerator:
    return contrasted(TriPlaneGenerator(TINY_MIMIC3D).eval())


@pytest.fixture(scope="module")
def small_eg3d() -> TriPlaneGenerator:
    """An EG3D-layout model (official projection, 32-channel planes, 32→64→33 decoder) at a test size."""
    cfg = CONFIGS["eg3d-ffhq512-128"].replace(
        name="eg3d-small-test", z_dim=32, w_dim=32, img_resolution=64, triplane_resolution=32, superresolution="none",
        channel_base=1024, channel_max=32, neural_rendering_resolution=16,
        rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12))
    return contrasted(TriPlaneGenerator(cfg).eval())


@pytest.mark.parametrize("projection", ["eg3d", "corrected"])
@pytest.mark.parametrize("sizes", [[16], [16, 24]])
def test_row_sampling_matches_grid_sample_inside_and_outside_the_box(projection: str, sizes: list[int]) -> None:
    """Bilinear weights, zeros padding (points beyond the planes, corners half outside), plane sets summed."""
    gen = torch.Generator().manual_seed(1)
    planes = [torch.randn(2, 3, 5, s, s, generator=gen) for s in sizes]
    coords = (torch.rand(2, 500, 3, generator=gen) - 0.5) * 1.6  # ~half the points outside [-0.5, 0.5]³
    coords[:, :4] = torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5], [0.49, -0.499, 0.0], [0.0, 0.0, 0.0]])
    ref = sample_planes(planes, coords, projection, box_warp=1.0).mean(dim=1)
    table = plane_rows(planes)
    for b in range(2):
        fast = sample_rows(table, coords[b], b, projection, 1.0)
        assert (fast - ref[b]).abs().max() <= 1e-5


def test_row_sampling_with_box_warp() -> None:
    planes = [torch.randn(1, 3, 4, 8, 8)]
    coords = (torch.rand(1, 300, 3) - 0.5) * 2.0
    ref = sample_planes(planes, coords, "corrected", box_warp=1.6).mean(dim=1)[0]
    fast = sample_rows(plane_rows(planes), coords[0], 0, "corrected", 1.6)
    assert (fast - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["tiny", "tiny_mimic", "small_eg3d"])
def test_query_fast_matches_reference(name: str, request: pytest.FixtureRequest) -> None:
    G: TriPlaneGenerator = request.getfixturevalue(name)
    planes = strong_planes(G, batch=2)
    coords = (torch.rand(2, 3000, 3, generator=torch.Generator().manual_seed(2)) - 0.5) * 1.3
    with torch.no_grad():
        for plane_set in ("all", "coarse", "detail"):
            ref = G.query(planes, coords, plane_set, kernels="reference")
            fast = G.query(planes, coords, plane_set, kernels="fast")
            for key in ("sigma", "rgb"):
                assert_close(fast[key], ref[key], (plane_set, key))
        # Small blocks (block borders inside a batch element) give the same values (within the matrix
        # products' rounding, which depends on the number of rows).
        table = plane_rows(planes)
        blocked = query_rows(G.decoder, table, coords, G.cfg.projection, G.cfg.rendering.box_warp, block=257)
        whole = G.query(planes, coords, kernels="fast")
        for key in ("sigma", "rgb"):
            assert (blocked[key] - whole[key]).abs().max() <= 1e-5


def test_per_sample_weights_reproduce_midpoint_colours() -> None:
    gen = torch.Generator().manual_seed(3)
    depths = torch.sort(torch.rand(2, 7, 20, 1, generator=gen) * 2 + 1, dim=-2).values
    dens = torch.randn(2, 7, 20, 1, generator=gen) * 20
    cols = torch.rand(2, 7, 20, 5, generator=gen)
    opts = RenderingConfig()
    rgb, _, weights = ray_march(cols, dens, depths, opts)
    assert torch.equal(march_weights(dens, depths, opts), weights)
    fast = (sample_weights(weights) * cols).sum(dim=-2) * 2 - 1
    assert (fast - rgb).abs().max() <= 1e-6


def _render(G: TriPlaneGenerator, planes: list[torch.Tensor], kernels: str, batch: int, res: int,
            **sampling: object) -> dict[str, torch.Tensor]:
    yaws = [0.0, 25.0][:batch]
    c = torch.cat([torch.from_numpy(camera_label(G.cfg, y, 5.0))[None] for y in yaws])
    ws = torch.zeros(batch, G.num_ws, G.cfg.w_dim)
    settings = SamplingSettings(seed=7, kernels=kernels, **sampling)  # type: ignore[arg-type]
    with torch.no_grad():
        return G.render(planes, ws, c, resolution=res, sampling=settings, run_sr=False)


@pytest.mark.parametrize("name", ["tiny", "tiny_mimic", "small_eg3d"])
def test_render_fast_matches_reference(name: str, request: pytest.FixtureRequest) -> None:
    G: TriPlaneGenerator = request.getfixturevalue(name)
    planes = strong_planes(G, batch=2, seed=4)
    res = 24
    # A small ray chunk: several chunks per render, as in a real one.
    ref = _render(G, planes, "reference", 2, res, ray_chunk=200, distortion=True)
    fast = _render(G, planes, "fast", 2, res, ray_chunk=200, distortion=True)
    alpha = ref["image_alpha"]
    assert float(alpha.max()) > 0.5 and float(alpha.min()) < 0.5, "the test field should be partly opaque"
    for key in ("feature_image", "image_depth", "image_alpha", "image_distortion"):
        assert_close(fast[key], ref[key], key)
    assert psnr(fast["feature_image"], ref["feature_image"]) >= MIN_PSNR


def test_render_without_importance_samples(tiny: TriPlaneGenerator) -> None:
    planes = strong_planes(tiny, batch=1, seed=5)
    ref = _render(tiny, planes, "reference", 1, 16, depth_resolution_importance=0)
    fast = _render(tiny, planes, "fast", 1, 16, depth_resolution_importance=0)
    for key in ("feature_image", "image_depth", "image_alpha"):
        assert_close(fast[key], ref[key], key)


def test_renderer_dispatch_on_an_analytic_field() -> None:
    """The renderer alone: a field with points outside its box and a hard surface."""
    opts = RenderingConfig(depth_resolution=16, depth_resolution_importance=16)
    r = ImportanceRenderer(opts)

    def field(pts: torch.Tensor) -> dict[str, torch.Tensor]:
        d = pts.norm(dim=-1, keepdim=True)
        return {"sigma": 60 * (0.3 - d), "rgb": torch.cat([pts.abs(), torch.sigmoid(pts * 5)], dim=-1)}

    origins = torch.tensor([[0.0, 0.0, 2.7]]).expand(1, 64, 3).contiguous()
    dirs = torch.nn.functional.normalize(
        torch.cat([(torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(6)) - 0.5) * 0.5,
                   -torch.ones(1, 64, 1)], dim=-1), dim=-1)
    out = {k: r.render(field, origins, dirs, SamplingSettings(seed=1, kernels=k), feature_channels=6)  # type: ignore[arg-type]
           for k in ("reference", "fast")}
    for attr in ("features", "depth", "weight_sum"):
        a, b = getattr(out["reference"], attr), getattr(out["fast"], attr)
        assert_close(b, a, attr)


def test_exact_is_the_reference_path_bit_for_bit(tiny: TriPlaneGenerator) -> None:
    """``exact`` implies the reference kernels whatever ``kernels`` says."""
    planes = strong_planes(tiny, batch=1, seed=8)
    a = _render(tiny, planes, "fast", 1, 16, exact=True)
    b = _render(tiny, planes, "reference", 1, 16, exact=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ["tiny", "tiny_mimic"])
def test_gradients_fall_back_to_the_reference(name: str, request: pytest.FixtureRequest) -> None:
    """With autograd recording, ``kernels='fast'`` runs the reference: same outputs and same gradients."""
    G: TriPlaneGenerator = request.getfixturevalue(name)
    base = strong_planes(G, batch=2, seed=9)
    c = torch.cat([torch.from_numpy(camera_label(G.cfg, y, 0.0))[None] for y in (0.0, 20.0)])
    ws = torch.zeros(2, G.num_ws, G.cfg.w_dim)
    grads = {}
    for kernels in ("reference", "fast"):
        planes = [p.clone().requires_grad_(True) for p in base]
        coords = (torch.rand(2, 100, 3, generator=torch.Generator().manual_seed(10)) - 0.5).requires_grad_(True)
        q = G.query(planes, coords, kernels=kernels)  # type: ignore[arg-type]
        out = G.render(planes, ws, c, resolution=12, run_sr=False,
                       sampling=SamplingSettings(seed=3, kernels=kernels))  # type: ignore[arg-type]
        loss = out["image_raw"].square().mean() + out["image_depth"].mean() + q["sigma"].mean() + q["rgb"].mean()
        loss.backward()
        grads[kernels] = [coords.grad, *(p.grad for p in planes), loss.detach()]
    for a, b in zip(grads["reference"], grads["fast"], strict=True):
        assert a is not None and b is not None and torch.equal(a, b)


def test_inference_under_enabled_grad_with_frozen_weights_uses_the_fast_path(tiny: TriPlaneGenerator) -> None:
    """No parameter or input requires grad: nothing to record, so the fast kernels run (and agree)."""
    planes = strong_planes(tiny, batch=1, seed=11)
    coords = torch.rand(1, 50, 3) - 0.5
    for p in tiny.parameters():
        p.requires_grad_(False)
    try:
        fast = tiny.query(planes, coords, kernels="fast")
        ref = tiny.query(planes, coords, kernels="reference")
    finally:
        for p in tiny.parameters():
            p.requires_grad_(True)
    assert fast["sigma"].grad_fn is None
    assert_close(fast["sigma"], ref["sigma"])


@pytest.mark.parametrize("name", ["tiny", "tiny_mimic"])
def test_mesh_field_fast_matches_reference(name: str, request: pytest.FixtureRequest) -> None:
    """The mesh field's fast queries (texel rows built once, density-only decoder) and the mesh they give."""
    from backend.mesh.field import GeneratorField
    from backend.mesh.pipeline import MeshSettings, extract_mesh

    G: TriPlaneGenerator = request.getfixturevalue(name)
    planes = strong_planes(G, batch=2, seed=12)
    fast, ref = GeneratorField(G, planes, 1), GeneratorField(G, planes, 1, kernels="reference")
    xyz = (torch.rand(5000, 3, generator=torch.Generator().manual_seed(13)) - 0.5) * 1.2
    assert_close(fast.density(xyz), ref.density(xyz), "density")
    assert_close(fast.colour(xyz), ref.colour(xyz), "colour")
    assert fast.bytes_per_point < ref.bytes_per_point  # no grid_sample temporaries: larger grid chunks
    level = float(ref.density(xyz).quantile(0.7))
    settings = MeshSettings(resolution=40, level=level, target_faces=None, smooth_iterations=0)
    m_fast, m_ref = extract_mesh(fast, settings), extract_mesh(ref, settings)
    # Densities equal within rounding: the same cells are crossed, vertices agree to rounding.
    assert m_fast.num_faces == m_ref.num_faces and m_fast.num_vertices == m_ref.num_vertices
    assert abs(m_fast.vertices - m_ref.vertices).max() < 1e-4


def test_density_only_query(tiny: TriPlaneGenerator) -> None:
    planes = strong_planes(tiny, batch=1, seed=14)
    coords = torch.rand(1, 700, 3) - 0.5
    with torch.no_grad():
        full = tiny.query(planes, coords)
        sigma = tiny.query(planes, coords, density_only=True)
    assert set(sigma) == {"sigma"}
    assert_close(sigma["sigma"], full["sigma"])


def test_row_sampling_planar_form_matches_too() -> None:
    """The planar corner form (GPUs, huge tables, reduced float32 matmul precision) on CPU: same values."""
    gen = torch.Generator().manual_seed(15)
    planes = [torch.randn(2, 3, 5, 16, 16, generator=gen), torch.randn(2, 3, 5, 24, 24, generator=gen)]
    coords = (torch.rand(2, 400, 3, generator=gen) - 0.5) * 1.6
    ref = sample_planes(planes, coords, "eg3d", box_warp=1.0).mean(dim=1)
    table = plane_rows(planes)
    matmul = sample_rows(table, coords[1], 1, "eg3d", 1.0)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        planar = sample_rows(table, coords[1], 1, "eg3d", 1.0)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert (planar - ref[1]).abs().max() <= 1e-5 and (matmul - ref[1]).abs().max() <= 1e-5
