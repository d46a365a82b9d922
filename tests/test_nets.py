"""Operators and layers: alignment, equivalences between code paths, the spec's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from backend.nets import ops
from backend.nets.decoder import Decoder
from backend.nets.layers import FullyConnectedLayer, MappingNetwork, aware3d


def test_setup_filter_is_the_checkpoint_buffer() -> None:
    f = ops.setup_filter()
    assert f.shape == (4, 4)
    assert torch.allclose(f.sum(), torch.tensor(1.0))
    assert (f * 64).tolist()[0] == [1, 3, 3, 1]


def test_upsample2d_preserves_constants_and_is_pixel_centre_aligned() -> None:
    f = ops.setup_filter()
    x = torch.full([1, 1, 8, 8], 3.0)
    y = ops.upsample2d(x, f)
    assert y.shape == (1, 1, 16, 16)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 3.0))
    # An impulse at low-res pixel a lands centred on high-res coordinate 2a + 0.5 (pixel centres match).
    x = torch.zeros([1, 1, 8, 8])
    x[0, 0, 3, 5] = 1.0
    y = ops.upsample2d(x, f)[0, 0]
    rows = torch.arange(16.0)
    assert math.isclose(float((y.sum(1) * rows).sum() / y.sum()), 2 * 3 + 0.5, abs_tol=1e-5)
    assert math.isclose(float((y.sum(0) * rows).sum() / y.sum()), 2 * 5 + 0.5, abs_tol=1e-5)
    assert math.isclose(float(y.sum()), 4.0, rel_tol=1e-6)  # gain up² keeps the mean


def test_upsampling_conv_with_a_centred_delta_kernel_equals_upsample2d() -> None:
    """The transposed-conv + FIR decomposition and plain FIR up-sampling agree where they must."""
    f = ops.setup_filter()
    x = torch.randn(2, 3, 6, 6)
    w = torch.zeros(3, 3, 3, 3)
    for i in range(3):
        w[i, i, 1, 1] = 1.0
    y = ops.conv2d_resample(x, w, f=f, up=2, padding=1)
    assert y.shape == (2, 3, 12, 12)
    assert torch.allclose(y, ops.upsample2d(x, f), atol=1e-6)


def test_upsampling_conv_applies_the_kernel_as_a_true_convolution() -> None:
    """The official conv0 does not flip w in its transposed conv, so w acts as a true convolution on the
    up-sampled grid: away from the borders, conv0(x) = conv(upsample2d(x), w)."""
    torch.manual_seed(0)
    f = ops.setup_filter()
    x = torch.randn(1, 2, 8, 8)
    w = torch.randn(3, 2, 3, 3)
    y = ops.conv2d_resample(x, w, f=f, up=2, padding=1)
    ref = torch.nn.functional.conv2d(ops.upsample2d(x, f), w.flip([2, 3]), padding=1)
    assert ref.shape == y.shape
    assert torch.allclose(y[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3], atol=1e-5)
    # ...and not a correlation (the flip matters for an asymmetric kernel).
    corr = torch.nn.functional.conv2d(ops.upsample2d(x, f), w, padding=1)
    assert not torch.allclose(y[..., 3:-3, 3:-3], corr[..., 3:-3, 3:-3], atol=1e-2)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_unfused_modulated_conv_agree(up: int, demodulate: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 4, 8, 8)
    w = torch.randn(5, 4, 3, 3)
    styles = torch.randn(3, 4)
    noise = torch.randn(3, 1, 8 * up, 8 * up)
    kw = dict(noise=noise, up=up, padding=1, resample_filter=ops.setup_filter(), demodulate=demodulate)
    a = ops.modulated_conv2d(x, w, styles, fused=True, **kw)
    b = ops.modulated_conv2d(x, w, styles, fused=False, **kw)
    assert torch.allclose(a, b, atol=1e-4)


def test_demodulation_normalises_output_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 64, 16, 16)
    w = torch.randn(64, 64, 3, 3) * 10
    styles = torch.randn(2, 64) * 5
    y = ops.modulated_conv2d(x, w, styles, padding=1)
    assert 0.5 < float(y[..., 2:-2, 2:-2].std()) < 2.0


def test_bias_act_gain_and_clamp() -> None:
    x = torch.tensor([[-1.0, 2.0]])
    b = torch.tensor([0.0, 1.0])
    y = ops.bias_act(x, b, act="lrelu")
    assert torch.allclose(y, torch.tensor([[-0.2 * math.sqrt(2), 3 * math.sqrt(2)]]))
    y = ops.bias_act(x, b, act="lrelu", gain=1.0, clamp=2.5)
    assert torch.allclose(y, torch.tensor([[-0.2, 2.5]]))


def test_fully_connected_equalised_learning_rate() -> None:
    fc = FullyConnectedLayer(4, 2, lr_multiplier=0.01, bias_init=0.0)
    with torch.no_grad():
        fc.weight.fill_(1.0)
        fc.bias.fill_(100.0)
    y = fc(torch.ones(1, 4))
    # weight gain 0.01/sqrt(4) per input, four inputs; bias gain 0.01.
    assert torch.allclose(y, torch.full([1, 2], 4 * 0.01 / 2 + 1.0))


def test_mapping_truncation_and_cutoff() -> None:
    m = MappingNetwork(8, 25, 8, num_ws=5, num_layers=2)
    with torch.no_grad():
        m.w_avg.normal_()
    z, c = torch.randn(2, 8), torch.randn(2, 25)
    ws = m(z, c)
    assert ws.shape == (2, 5, 8)
    assert torch.allclose(ws[:, 0], ws[:, 4])
    ws0 = m(z, c, truncation_psi=0.0)
    assert torch.allclose(ws0, m.w_avg.expand_as(ws0))
    ws_cut = m(z, c, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(ws_cut[:, :2], m.w_avg.expand(2, 2, 8))
    assert torch.allclose(ws_cut[:, 2:], ws[:, 2:])
    # The z branch is scale-invariant (second-moment normalisation).
    assert torch.allclose(m(z * 7, c), ws, atol=1e-5)


def test_mapping_updates_w_avg_only_when_asked() -> None:
    m = MappingNetwork(8, 0, 8, num_ws=2, num_layers=2, w_avg_beta=0.5)
    before = m.w_avg.clone()
    m(torch.randn(4, 8), None)
    assert torch.equal(m.w_avg, before)
    m(torch.randn(4, 8), None, update_emas=True)
    assert not torch.equal(m.w_avg, before)


def naive_aware3d(x: torch.Tensor) -> torch.Tensor:
    """The spec's formulas, pixel by pixel."""
    bc, c, s, _ = x.shape
    p = x.reshape(-1, 3, c, s, s)
    out = torch.zeros(p.shape[0], 3, 3 * c, s, s)
    P0, P1, P2 = p[:, 0], p[:, 1], p[:, 2]
    for r in range(s):
        for q in range(s):
            out[:, 0, :, r, q] = torch.cat([P0[..., r, q], P1[..., :, r].mean(-1), P2[..., q, :].mean(-1)], 1)
            out[:, 1, :, r, q] = torch.cat([P0[..., q, :].mean(-1), P1[..., r, q], P2[..., :, r].mean(-1)], 1)
            out[:, 2, :, r, q] = torch.cat([P0[..., :, r].mean(-1), P1[..., q, :].mean(-1), P2[..., r, q]], 1)
    return out.reshape(bc, 3 * c, s, s)


def test_aware3d_matches_the_formulas() -> None:
    torch.manual_seed(3)
    x = torch.randn(2 * 3, 2, 5, 5)
    assert torch.allclose(aware3d(x), naive_aware3d(x), atol=1e-6)


def test_decoder_output_ranges() -> None:
    dec = Decoder(8, 16, 8)
    with torch.no_grad():
        out = dec(torch.randn(2, 3, 10, 8) * 100)
    assert out["sigma"].shape == (2, 10, 1)
    assert out["rgb"].shape == (2, 10, 8)
    assert float(out["rgb"].min()) >= -0.001 - 1e-6
    assert float(out["rgb"].max()) <= 1.001 + 1e-6
