# SPDX-License-Identifier: GPL-3.0-or-later
"""Rendering helpers shared by the inversion stages: one call from ws and cameras to images and depth.

Why a wrapper: every stage renders "ws at these cameras" with the same choices (training-style unfused
convolutions when gradients are needed, per-step seeded ray jitter so runs repeat, super-resolution on),
and the tri-planes are computed once per call however many cameras there are.

An optimisation step of a model that renders its image directly (no super-resolution) may also render only a
square *window* of each view: the volume render is nine tenths of such a step's time, so a 32² window of a 64²
render costs about a quarter of the whole view, and over the steps random windows cover the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.generator import TriPlaneGenerator
from backend.invert.losses import downsample
from backend.render.rays import pixel_uv
from backend.render.renderer import SamplingSettings


@dataclass(frozen=True)
class Window:
    """A square of a render's pixels: top-left corner and side, in pixels of the render resolution."""

    top: int
    left: int
    size: int

    def crop(self, image: torch.Tensor, resolution: int) -> torch.Tensor:
        """The window of ``image`` [N, C, H, W] seen at the render ``resolution`` (area-resized first)."""
        full = downsample(image, resolution)
        return full[..., self.top : self.top + self.size, self.left : self.left + self.size]


def window_size(G: TriPlaneGenerator, patch: int, resolution: int | None = None) -> int:
    """The window side an optimisation step of ``G`` renders for a requested ``patch`` (0: the whole view):
    0 as well for models with super-resolution (it needs the whole raw image) and patches no smaller than
    the render."""
    res = resolution or G.cfg.neural_rendering_resolution
    if patch <= 0 or patch >= res or G.superresolution is not None:
        return 0
    return patch


def draw_windows(resolution: int, size: int, count: int, gen: torch.Generator) -> list[Window]:
    """``count`` windows of side ``size`` at uniformly drawn positions (one per view of a step)."""
    corner = torch.randint(resolution - size + 1, (count, 2), generator=gen)
    return [Window(int(t), int(left), size) for t, left in corner]


def render_views(G: TriPlaneGenerator, ws: torch.Tensor, labels: torch.Tensor, seed: int | None = 0,
                 grad: bool = True, resolution: int | None = None, run_sr: bool | str = "auto",
                 exact: bool = False, windows: list[Window] | None = None) -> dict[str, torch.Tensor]:
    """Render one latent ws [1, L, D] (or one per camera) from cameras ``labels`` [N, 25].

    Returns the generator's dict (``image`` final, ``image_raw``, ``image_depth``, ``image_alpha``); with
    ``windows`` (one per camera, all of one size; models without super-resolution only) only those pixels,
    as [N, C, size, size] images.
    """
    n = labels.shape[0]
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        planes = G.synthesize_planes(ws, noise_mode="const", fused=not grad)
        if ws.shape[0] == 1 and n > 1:
            planes = [p.expand(n, *p.shape[1:]) for p in planes]
            ws_n = ws.expand(n, *ws.shape[1:])
        else:
            ws_n = ws
        sampling = SamplingSettings(exact=exact, seed=seed)
        if windows is None:
            return G.render(planes, ws_n, labels, resolution=resolution, sampling=sampling, run_sr=run_sr)  # type: ignore[arg-type]
        return _render_windows(G, planes, ws_n, labels, windows, resolution, sampling)


def _render_windows(G: TriPlaneGenerator, planes: list[torch.Tensor], ws: torch.Tensor, labels: torch.Tensor,
                    windows: list[Window], resolution: int | None, sampling: SamplingSettings
                    ) -> dict[str, torch.Tensor]:
    if G.superresolution is not None:
        raise ValueError("a window render needs a model that renders its image directly (no super-resolution)")
    if len(windows) != labels.shape[0] or len({w.size for w in windows}) != 1:
        raise ValueError("give one window per camera, all of one size")
    res = resolution or G.cfg.neural_rendering_resolution
    s = windows[0].size
    if any(w.top < 0 or w.left < 0 or w.top + s > res or w.left + s > res for w in windows):
        raise ValueError(f"a window lies outside the {res}² render")
    grid = pixel_uv(res, labels.device).reshape(res, res, 2)
    uv = torch.stack([grid[w.top : w.top + s, w.left : w.left + s].reshape(-1, 2) for w in windows])
    result = G.render_rays(planes, labels, uv, sampling, ws=ws)
    n = labels.shape[0]
    features = result.features.reshape(n, -1, s, s)
    rgb = features[:, :3]
    return {"image": rgb, "image_raw": rgb, "image_depth": result.depth.reshape(n, 1, s, s),
            "feature_image": features, "image_alpha": result.weight_sum.reshape(n, 1, s, s)}
