# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera pose estimation without a landmark or pose network: render and compare.

HFGI3D gets the pose from Deep3DFaceRecon (spec §2.1), which cannot be downloaded here. Aware3D estimates it
with the generator itself, in three steps:

1. **grid search**: the average head (mean W) is rendered from a grid of yaw × pitch (raw neural renders at a
   low resolution, batched, no gradients) and each render is scored against the target. The score compares
   structure, not colour: both images are turned grey and standardised (zero mean, unit variance), then
   ``1 − SSIM`` plus the L1 of their image gradients. The average head has neither the person's colours nor
   their background, so raw colour distances would pick the pose whose background happens to match. The
   score at (yaw, pitch) is averaged with the mirrored photo's score at (−yaw, pitch) — the same camera for
   a left-right symmetric head — which cancels a lopsided average head (measured in docs/invert.md);
2. **probe fits** (Ko et al., WACV 2023: optimise the latent and the camera together, several starts): the
   best ``candidates`` poses each get a few steps of latent fitting, and the pose whose fit explains the
   target best wins. This separates mirror poses (±yaw), which the average head cannot;
3. **joint refinement**: :func:`backend.invert.project.project_latent` keeps yaw and pitch as parameters
   while it optimises the pivot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from backend.generator import TriPlaneGenerator
from backend.invert.geometry import orbit_labels
from backend.invert.losses import ssim_map
from backend.invert.project import LatentStats, ProjectSettings, project_latent
from backend.invert.render import render_views

Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class PoseSettings:
    """The render-and-compare search (degrees)."""

    yaw_range: float = 52.5
    yaw_step: float = 7.5
    pitch_range: float = 15.0
    pitch_step: float = 7.5
    resolution: int = 24
    batch: int = 16
    candidates: int = 2
    min_separation: float = 15.0  # candidates are at least this far apart in yaw (mirror poses)
    mirror: bool = True  # also score the mirrored photo at the mirrored poses (cancels the head's bias)
    probe_steps: int = 8
    probe: ProjectSettings = field(default_factory=lambda: ProjectSettings(refine_camera=False, raw_weight=0.0,
                                                                           noise_strength=0.0, rampup=0.0))


@dataclass
class PoseEstimate:
    yaw: float
    pitch: float
    source: str  # 'given', 'estimated' (render and compare) or 'landmarks' (the face front end's prior)
    grid: dict = field(default_factory=dict)  # yaw/pitch axes and scores, for reports
    candidates: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"yaw_deg": round(self.yaw, 2), "pitch_deg": round(self.pitch, 2), "source": self.source,
                "candidates": self.candidates, "seconds": round(self.seconds, 2)}


def _standardise(img: torch.Tensor) -> torch.Tensor:
    grey = img.mean(1, keepdim=True)
    mu = grey.mean((2, 3), keepdim=True)
    sd = grey.std((2, 3), keepdim=True).clamp_min(1e-3)
    return (grey - mu) / sd


def structure_score(renders: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-render dissimilarity [N] of renders [N, 3, s, s] to a target [1, 3, s, s] (lower is better)."""
    a, b = _standardise(renders), _standardise(target).expand(renders.shape[0], -1, -1, -1)
    # SSIM expects about [0, 1]: map ±3 standard deviations there.
    s = ssim_map((a / 6 + 0.5).clamp(0, 1), (b / 6 + 0.5).clamp(0, 1), sigma=1.0).mean((1, 2, 3))
    gx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    gy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    grad = (gx(a) - gx(b)).abs().mean((1, 2, 3)) + (gy(a) - gy(b)).abs().mean((1, 2, 3))
    return (1 - s) + 0.25 * grad


def _axis(extent: float, step: float) -> np.ndarray:
    n = max(0, round(extent / step))
    return np.linspace(-n * step, n * step, 2 * n + 1)


def grid_axes(settings: PoseSettings) -> tuple[np.ndarray, np.ndarray]:
    return _axis(settings.yaw_range, settings.yaw_step), _axis(settings.pitch_range, settings.pitch_step)


def grid_search(G: TriPlaneGenerator, target: torch.Tensor, stats: LatentStats, settings: PoseSettings,
                progress: Progress | None = None, total: int | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores [P, Y] of the average head over the pitch × yaw grid; returns (yaws, pitches, scores).

    Progress counts renders out of ``total`` (default: the grid's size), so callers can add later steps."""
    yaws, pitches = grid_axes(settings)
    yy, pp = np.meshgrid(yaws, pitches)
    flat_y, flat_p = yy.reshape(-1), pp.reshape(-1)
    device = target.device
    s = settings.resolution
    small = F.interpolate(target, size=(s, s), mode="area")
    ws = stats.w_avg[:, None].repeat(1, G.num_ws, 1).to(device)
    scores, renders = [], []
    n = len(flat_y)
    for i in range(0, n, settings.batch):
        labels = orbit_labels(G.cfg, torch.from_numpy(flat_y[i : i + settings.batch]).float(),
                              torch.from_numpy(flat_p[i : i + settings.batch]).float()).to(device)
        out = render_views(G, ws, labels, seed=0, grad=False, resolution=s, run_sr=False)
        scores.append(structure_score(out["image_raw"], small))
        renders.append(out["image_raw"])
        if progress is not None:
            progress("pose", min(i + settings.batch, n), total or n, "searching yaw and pitch")
    grid = torch.cat(scores).reshape(len(pitches), len(yaws))
    if settings.mirror:
        # The mirrored photo seen from (−yaw, pitch) is the photo seen from (yaw, pitch): scoring both cancels
        # a lopsided average head (a symmetric photo then scores symmetrically), at no extra render.
        mirrored = structure_score(torch.cat(renders), small.flip(-1)).reshape(len(pitches), len(yaws))
        grid = 0.5 * (grid + mirrored.flip(-1))
    return yaws, pitches, grid.cpu().numpy()


def pick_candidates(yaws: np.ndarray, pitches: np.ndarray, scores: np.ndarray, k: int,
                    min_separation: float) -> list[tuple[float, float, float]]:
    """The k best (yaw, pitch, score), each at least ``min_separation`` degrees of yaw from the others."""
    order = np.argsort(scores, axis=None)
    picked: list[tuple[float, float, float]] = []
    for idx in order:
        p, y = np.unravel_index(idx, scores.shape)
        cand = (float(yaws[y]), float(pitches[p]), float(scores[p, y]))
        if all(abs(cand[0] - c[0]) >= min_separation for c in picked):
            picked.append(cand)
        if len(picked) >= k:
            break
    return picked


def estimate_pose(G: TriPlaneGenerator, target: torch.Tensor, stats: LatentStats, settings: PoseSettings,
                  weight: torch.Tensor | None = None, progress: Progress | None = None,
                  seed: int = 0) -> PoseEstimate:
    """Grid search, then short probe fits at the best candidates (see the module docstring)."""
    t0 = time.perf_counter()
    ya, pa = grid_axes(settings)
    n_grid = len(ya) * len(pa)
    k_cand = max(1, settings.candidates)
    n_probe = settings.probe_steps if k_cand > 1 else 0
    total = n_grid + k_cand * n_probe
    yaws, pitches, scores = grid_search(G, target, stats, settings, progress, total)
    cands = pick_candidates(yaws, pitches, scores, k_cand, settings.min_separation)
    results = []
    if len(cands) > 1 and n_probe > 0:
        probe = replace(settings.probe, steps=n_probe)

        for k, (y, p, sc) in enumerate(cands):
            def prog(stage: str, i: int, n: int, msg: str, k: int = k) -> None:
                if progress is not None:
                    progress("pose", n_grid + k * n_probe + i, total, f"probe fit {k + 1}/{len(cands)}")

            r = project_latent(G, target, y, p, probe, stats, weight, progress=prog, seed=seed)
            fit = float(np.mean(r.losses[-3:]))
            results.append({"yaw_deg": y, "pitch_deg": p, "grid_score": round(sc, 4), "fit_loss": round(fit, 5)})
        best = min(results, key=lambda r: r["fit_loss"])
    else:
        y, p, sc = cands[0]
        results.append({"yaw_deg": y, "pitch_deg": p, "grid_score": round(sc, 4)})
        best = results[0]
    if progress is not None:
        progress("pose", total, total, f"estimated: yaw {best['yaw_deg']:+.1f}°, pitch {best['pitch_deg']:+.1f}°")
    return PoseEstimate(best["yaw_deg"], best["pitch_deg"], "estimated",
                        {"yaws": yaws.tolist(), "pitches": pitches.tolist(), "scores": scores.round(4).tolist()},
                        results, time.perf_counter() - t0)
