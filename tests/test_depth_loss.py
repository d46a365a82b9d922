# SPDX-License-Identifier: GPL-3.0-or-later
"""The depth network's scale-and-shift-invariant loss and the relative -> metric depth conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.depth import align_scale_shift, depth_for_view, metric_disparity, nearest_distance
from backend.views.rgbd import orbit
from train.depth.loss import align, ssi_loss


def _scene(seed: int = 0, b: int = 3, res: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth disparity of a bumpy disc ("head") in front of an infinitely far background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    mask = (xx**2 + yy**2 < 0.5)[None, None].expand(b, 1, res, res)
    z = 2.35 + 0.3 * (xx**2 + yy**2) + 0.02 * torch.rand(b, 1, res, res, generator=g)
    return torch.where(mask, 1.0 / z, torch.zeros(())), mask


def test_ssi_loss_is_zero_for_any_affine_copy_of_the_truth() -> None:
    disp, mask = _scene()
    disp = disp.double()
    for a, b in ((1.0, 0.0), (3.0, -7.0), (-0.2, 5.0)):
        loss, parts = ssi_loss(a * disp + b, disp, mask)
        assert float(loss) < 1e-5, (a, b, parts)


def test_ssi_loss_is_invariant_to_scale_and_shift_of_the_prediction() -> None:
    disp, mask = _scene()
    pred = torch.randn(disp.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    disp = disp.double()
    base, _ = ssi_loss(pred, disp, mask)
    assert float(base) > 0.1
    for a, b in ((2.5, 1.0), (1e-3, -4.0), (-1.0, 0.0), (40.0, 300.0)):
        loss, _ = ssi_loss(a * pred + b, disp, mask)
        assert float(loss) == pytest.approx(float(base), rel=1e-6)


def test_ssi_loss_penalises_a_background_that_is_not_at_disparity_zero() -> None:
    """Head exact but background too near: only the whole-image term sees it, as the head distortion the
    misplaced background would cause in metric depth (the head's spread relative to its distance)."""
    disp, mask = _scene()
    _, parts_near = ssi_loss(torch.where(mask, disp, torch.full_like(disp, 0.2)), disp, mask)
    _, parts_far = ssi_loss(torch.where(mask, disp, torch.full_like(disp, 0.3)), disp, mask)
    assert parts_near["loss/data"] < 1e-5 and parts_near["loss/gradient"] < 1e-5
    assert 1e-3 < parts_near["loss/background"] < parts_far["loss/background"]


def test_ssi_loss_gradients_reach_the_prediction() -> None:
    disp, mask = _scene()
    pred = torch.randn(disp.shape, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    loss, _ = ssi_loss(pred, disp, mask)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_alignment_matches_numpy_and_handles_flat_predictions() -> None:
    disp, mask = _scene(b=1)
    pred = disp * 4 + 1 + 0.01 * torch.randn(disp.shape, generator=torch.Generator().manual_seed(3))
    s, t = align(pred, disp, mask)
    sn, tn = align_scale_shift(pred[0, 0].numpy(), disp[0, 0].numpy(), mask[0, 0].numpy())
    assert float(s[0]) == pytest.approx(sn, rel=1e-4) and float(t[0]) == pytest.approx(tn, rel=1e-4, abs=1e-6)
    s0, t0 = align_scale_shift(np.zeros((4, 4)), np.arange(16.0).reshape(4, 4))
    assert s0 == 0.0 and t0 == pytest.approx(7.5)


def test_metric_disparity_maps_background_to_zero_and_nearest_to_the_chosen_distance() -> None:
    disp, mask = _scene(b=1, res=32)
    d = metric_disparity(5.0 * disp[0, 0].numpy() - 2.0, nearest=2.2)  # an affine copy: scale/shift unknown
    m = mask[0, 0].numpy()
    assert d.max() == pytest.approx(1 / 2.2) and np.all(d[~m] == 0)
    assert np.all(metric_disparity(np.full((8, 8), 3.0), 2.2) == 0)  # no structure: all backdrop


def test_depth_for_view_follows_the_documented_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a perfect (affine) disparity, depth_for_view returns the true shape with the nearest point at
    r - 0.3 (2.2 for the frontal FFHQ camera) and the background at far."""
    import backend.depth.estimate as est

    res = 32
    disp, mask = _scene(b=1, res=res)
    monkeypatch.setattr(est, "estimate_disparity", lambda net, images: 0.3 * disp + 0.1)
    cam = orbit(0.0, 0.0, res)
    near, far = cam.depth_range()
    z = depth_for_view(None, np.zeros((res, res, 3), np.float32), cam)  # type: ignore[arg-type]
    m = mask[0, 0].numpy()
    assert z.shape == (res, res) and z.dtype == np.float32
    assert z.min() >= near and z.max() <= far
    assert nearest_distance(cam) == pytest.approx(2.2)
    assert z[m].min() == pytest.approx(2.2, rel=1e-5)
    assert np.all(z[~m] == far) and np.all(z[m] < far)
    true = 1.0 / disp[0, 0].numpy()[m]
    np.testing.assert_allclose(z[m] / true, 2.2 / true.min(), rtol=1e-3)  # one common scale: shape kept
    z_override = depth_for_view(None, np.zeros((res, res, 3), np.float32), cam, nearest=2.35)  # type: ignore[arg-type]
    assert z_override[m].min() == pytest.approx(2.35, rel=1e-5)
