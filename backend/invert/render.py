# SPDX-License-Identifier: GPL-3.0-or-later
"""Rendering helpers shared by the inversion stages: one call from ws and cameras to images and depth.

Why a wrapper: every stage renders "ws at these cameras" with the same choices (training-style unfused
convolutions when gradients are needed, per-step seeded ray jitter so runs repeat, super-resolution on),
and the tri-planes are computed once per call however many cameras there are.
"""

from __future__ import annotations

import torch

from backend.generator import TriPlaneGenerator
from backend.render.renderer import SamplingSettings


def render_views(G: TriPlaneGenerator, ws: torch.Tensor, labels: torch.Tensor, seed: int | None = 0,
                 grad: bool = True, resolution: int | None = None, run_sr: bool | str = "auto",
                 exact: bool = False) -> dict[str, torch.Tensor]:
    """Render one latent ws [1, L, D] (or one per camera) from cameras ``labels`` [N, 25].

    Returns the generator's dict (``image`` final, ``image_raw``, ``image_depth``, ``image_alpha``).
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
        return G.render(planes, ws_n, labels, resolution=resolution, sampling=sampling, run_sr=run_sr)  # type: ignore[arg-type]
