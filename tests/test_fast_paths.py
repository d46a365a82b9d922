"""The fast convolution kernels (``backend.nets.fast_conv``) compute what the reference layers compute.

The reference path is what ``--exact`` and the official parity tests run; the fast path is every inference
default. A user relies on the two giving the same tri-planes and images (to float rounding) for every model
family: EG3D with each super-resolution module, Mimic3D's per-plane roll-outs, batches, noise modes, clamps.
"""

from __future__ import annotations

import math

import pytest
import torch

from backend.configs import TINY, TINY_MIMIC3D
from backend.generator import TriPlaneGenerator
from backend.nets import fast_conv, ops
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label

CONFIGS = {
    "tiny-2x": TINY,
    "tiny-8xdc-clamped": TINY.replace(name="tiny-8x", superresolution="hybrid8xdc", img_resolution=128,
                                      sr_fp16=True, conv_clamp=256.0),
    "tiny-mimic3d": TINY_MIMIC3D,
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("noise_mode", ["const", "random"])
@pytest.mark.parametrize("batch", [1, 2])  # one sample runs channels-last, a batch NCHW (fast_conv._layout)
def test_fast_planes_and_images_match_the_reference(name: str, noise_mode: str, batch: int) -> None:
    cfg = CONFIGS[name]
    G = TriPlaneGenerator(cfg, seed=3).eval()
    with torch.no_grad():  # random weights give tiny noise strengths; make noise matter
        for mod in G.modules():
            if hasattr(mod, "noise_strength"):
                mod.noise_strength.fill_(0.3)
    z = torch.randn(batch, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.from_numpy(camera_label(cfg, 20, -5))[None].repeat(batch, 1)
    out = {}
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=0.8)
        for kernels in ("reference", "fast"):
            gens = [torch.Generator().manual_seed(7 + i) for i in range(batch)]
            planes = G.synthesize_planes(ws, noise_mode=noise_mode, generator=gens, kernels=kernels)
            render = G.render(planes, ws, c, sampling=SamplingSettings(seed=0, kernels=kernels))
            out[kernels] = (planes, render)
    (p_ref, r_ref), (p_fast, r_fast) = out["reference"], out["fast"]
    assert len(p_ref) == len(p_fast)
    for a, b in zip(p_ref, p_fast, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
    assert r_ref["image"].shape == r_fast["image"].shape
    assert psnr(r_ref["image"], r_fast["image"]) >= 60
    assert psnr(r_ref["image_raw"], r_fast["image_raw"]) >= 60


def test_exact_sampling_runs_the_reference_kernels_bit_for_bit() -> None:
    """``--exact`` must stay the official arithmetic: asking for fast kernels changes nothing under it."""
    G = TriPlaneGenerator(CONFIGS["tiny-8xdc-clamped"], seed=0).eval()
    c = torch.from_numpy(camera_label(G.cfg))[None]
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.cfg.z_dim), c)
        planes = G.synthesize_planes(ws, kernels="reference")
        a = G.render(planes, ws, c, sampling=SamplingSettings(exact=True, kernels="fast"))["image"]
        b = G.render(planes, ws, c, sampling=SamplingSettings(exact=True, kernels="reference"))["image"]
    assert torch.equal(a, b)


def test_fast_kernels_stand_aside_when_gradients_are_recorded() -> None:
    """Inversion and training differentiate through the generator: the in-place fast kernels must not run,
    and the gradients are the reference's."""
    G = TriPlaneGenerator(TINY, seed=0).eval()
    c = torch.from_numpy(camera_label(TINY))[None]
    grads = {}
    for kernels in ("reference", "fast"):
        ws = G.mapping(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(0)), c).detach()
        ws.requires_grad_(True)
        planes = G.synthesize_planes(ws, kernels=kernels)
        planes[0].square().mean().backward()
        grads[kernels] = ws.grad
    assert torch.equal(grads["reference"], grads["fast"])
    x = torch.zeros(1, 4, 8, 8)
    assert fast_conv.applies("fast", True, x) is False  # grad mode is on in this test
    with torch.no_grad():
        assert fast_conv.applies("fast", True, x)
        assert not fast_conv.applies("reference", True, x)
        assert not fast_conv.applies("fast", False, x)  # per-batch (training) weights
        assert not fast_conv.applies("fast", True, x.half())


@pytest.mark.parametrize("channels", [3, 32])
def test_fir_upsampling_as_one_transposed_convolution(channels: int) -> None:
    f = ops.setup_filter()
    x = torch.randn(2, channels, 9, 7, generator=torch.Generator().manual_seed(0))
    ref = ops.upsample2d(x, f)
    fast = fast_conv.upsample2d(x, f)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_fast_kernels_stand_aside_under_autocast() -> None:
    """Training with --amp renders fakes under bf16 autocast without gradients: the fast kernels (whose corner
    rows are exact-integer float32 products) must not run there; the result is the reference's."""
    G = TriPlaneGenerator(TINY, seed=0).eval()
    c = torch.from_numpy(camera_label(TINY))[None]
    out = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ws = G.mapping(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(0)), c)
        for kernels in ("reference", "fast"):
            planes = G.synthesize_planes(ws, kernels=kernels)
            out[kernels] = G.render(planes, ws, c, sampling=SamplingSettings(seed=0, kernels=kernels))["image"]
    assert torch.equal(out["reference"], out["fast"])
