# SPDX-License-Identifier: GPL-3.0-or-later
"""Optimisation steps that render a window of each view (backend.invert.render.Window): the same pixels as
the whole render, refused where they cannot work, and a refinement on windows still fits the whole view."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from backend.invert.geometry import orbit_labels
from backend.invert.losses import psnr
from backend.invert.pipeline import FAST_PATCH, preset, refine_budget
from backend.invert.project import ProjectSettings, project_latent
from backend.invert.render import Window, draw_windows, render_views, window_size
from backend.invert.tuning import Target, TuneSettings, tune_generator
from backend.registry import load_generator

torch.set_num_threads(1)


def _direct() -> Any:
    return load_generator("random:tiny-distilled-direct:2").generator


def _ws(G: Any, seed: int) -> torch.Tensor:
    z = torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, torch.zeros(1, G.cfg.c_dim))


def test_a_window_renders_the_same_pixels_as_the_whole_view() -> None:
    G = _direct()
    ws = _ws(G, 1)
    labels = torch.cat([orbit_labels(G.cfg, 20.0, -5.0), orbit_labels(G.cfg, -30.0, 0.0)])
    whole = render_views(G, ws, labels, grad=False, exact=True)
    windows = [Window(3, 5, 16), Window(0, 16, 16)]
    part = render_views(G, ws, labels, grad=False, exact=True, windows=windows)
    for key in ("image", "image_raw", "image_depth", "image_alpha"):
        assert part[key].shape[-2:] == (16, 16)
        for i, w in enumerate(windows):
            want = whole[key][i : i + 1, :, w.top : w.top + 16, w.left : w.left + 16]
            assert torch.allclose(part[key][i : i + 1], want, atol=1e-5), key
    # and the crop of a target at another size is the window of its area-resized picture
    big = torch.rand(1, 3, 64, 64)
    assert torch.equal(windows[0].crop(big, 32), torch.nn.functional.interpolate(big, size=(32, 32),
                                                                                 mode="area")[..., 3:19, 5:21])


def test_windows_only_where_they_can_work() -> None:
    G = _direct()
    res = G.cfg.neural_rendering_resolution
    assert window_size(G, 16) == 16 and window_size(G, 0) == 0 and window_size(G, res) == 0
    with_sr = load_generator("random:tiny-distilled:2").generator
    assert window_size(with_sr, 16) == 0  # super-resolution needs the whole raw image
    label = orbit_labels(G.cfg, 0.0, 0.0)
    with pytest.raises(ValueError, match="no super-resolution"):
        render_views(with_sr, _ws(with_sr, 1), label, grad=False, windows=[Window(0, 0, 8)])
    with pytest.raises(ValueError, match="outside"):
        render_views(G, _ws(G, 1), label, grad=False, windows=[Window(res - 4, 0, 8)])
    with pytest.raises(ValueError, match="one window per camera"):
        render_views(G, _ws(G, 1), label, grad=False, windows=[Window(0, 0, 8), Window(0, 0, 8)])
    drawn = draw_windows(res, 8, 50, torch.Generator().manual_seed(0))
    assert all(0 <= w.top <= res - 8 and 0 <= w.left <= res - 8 for w in drawn)
    assert len({(w.top, w.left) for w in drawn}) > 10


def test_fast_refinement_renders_windows() -> None:
    s = refine_budget(preset("default"), "fast")
    assert s.project.patch == FAST_PATCH and s.stage2.patch == FAST_PATCH
    full = refine_budget(preset("default"), "full")
    assert full.project.patch == 0 and full.stage2.patch == 0


def test_tuning_on_windows_fits_the_whole_view() -> None:
    G = _direct()
    ws = _ws(G, 1)
    label = orbit_labels(G.cfg, 10.0, 0.0)
    target = render_views(G, _ws(G, 7), label, grad=False, exact=True)["image"]  # another head
    before = psnr(render_views(G, ws, label, grad=False, exact=True)["image"], target)
    tuned, report = tune_generator(G, ws, Target(target, label), None, TuneSettings(steps=30, lr=3e-3, patch=16))
    after = psnr(render_views(tuned, ws, label, grad=False, exact=True)["image"], target)
    assert report.steps == 30 and after > before + 3.0


def test_projection_on_windows_fits_the_whole_view() -> None:
    G = _direct()
    label = orbit_labels(G.cfg, 0.0, 0.0)
    target = render_views(G, _ws(G, 7), label, grad=False, exact=True)["image"]
    settings = ProjectSettings(steps=40, w_avg_samples=64, refine_camera=False)
    start = project_latent(G, target, 0.0, 0.0, replace(settings, steps=0))
    fitted = project_latent(G, target, 0.0, 0.0, replace(settings, patch=16))

    def score(ws: torch.Tensor) -> float:
        return psnr(render_views(G, ws, label, grad=False, exact=True)["image"], target)

    assert score(fitted.ws) > score(start.ws) + 1.0
