# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 1a: the latent pivot, optimised jointly with the camera (W or W+).

What is kept from HFGI3D/PTI's projector (spec §2.2, §8.1): start from the average latent, Adam with the
StyleGAN2-ADA learning-rate schedule (peak ``lr``, linear ramp-up over the first 5 %, cosine ramp-down over
the last 25 %) and Gaussian noise on the latent that decays to zero at 75 % of the steps.

Deviations (docs/invert.md): the VGG feature distance is replaced by pixel L2 + (1 − SSIM) + multi-scale L1
(:mod:`.losses`), plus the same loss on the raw neural render against the target area-downsampled to its
size, which ties the latent to the 3D render and not only to the super-resolution output; the generator's
noise inputs stay constant (no noise-map optimisation, so no noise regulariser); and, after Ko et al.
(WACV 2023), yaw and pitch are optional parameters of the same optimisation, with their own learning rate,
so a pose from the coarse search is refined against the latent it explains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backend.generator import TriPlaneGenerator
from backend.invert.geometry import orbit_labels
from backend.invert.losses import LossWeights, downsample, reconstruction_loss
from backend.invert.render import draw_windows, render_views, window_size
from backend.sampling import conditioning_label

Progress = Callable[[str, int, int, str], None]
SPACES = ("w", "w+")


@dataclass(frozen=True)
class ProjectSettings:
    """Latent (and camera) optimisation. Defaults fit the 90 s budget at 64² on a 2-core CPU."""

    steps: int = 100
    space: str = "w+"
    lr: float = 0.01
    rampup: float = 0.05
    rampdown: float = 0.25
    noise_strength: float = 0.05
    noise_ramp: float = 0.75
    loss: LossWeights = field(default_factory=lambda: LossWeights(l2=1.0, ssim=0.5, multiscale=1.0))
    raw_weight: float = 0.5
    refine_camera: bool = True
    camera_lr: float = 0.5  # degrees per step at the peak of the schedule
    camera_limit: float = 20.0  # the refinement may move the pose at most this far (degrees)
    w_avg_samples: int = 512
    # Render only a random patch × patch window of the view per step (0: the whole view); models that render
    # their image directly only (render.window_size).
    patch: int = 0


@dataclass
class LatentStats:
    """Mean and spread of W under the frontal conditioning camera (HFGI3D: 600 samples, truncation 1)."""

    w_avg: torch.Tensor  # [1, w_dim]
    w_std: float


@dataclass
class ProjectResult:
    ws: torch.Tensor  # [1, num_ws, w_dim], detached
    yaw: float
    pitch: float
    losses: list[float]
    seconds: float


def latent_stats(G: TriPlaneGenerator, samples: int = 512, seed: int = 123) -> LatentStats:
    """Map ``samples`` random z (frontal conditioning camera, no truncation) to estimate W's mean and spread."""
    device = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(samples, G.cfg.z_dim, generator=gen).to(device)
    c = torch.from_numpy(conditioning_label(G.cfg))[None].to(device).expand(samples, -1)
    with torch.no_grad():
        w = G.mapping(z, c, truncation_psi=1.0)[:, 0]
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg) ** 2).sum(1).mean().sqrt())
    return LatentStats(w_avg, w_std)


def lr_schedule(t: float, peak: float, rampup: float, rampdown: float) -> float:
    """StyleGAN2-ADA projector schedule at progress t in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp = ramp * min(1.0, t / rampup)
    return peak * ramp


def image_loss(out: dict[str, torch.Tensor], target: torch.Tensor, loss: LossWeights, raw_weight: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """The reconstruction loss on the final image plus ``raw_weight`` × the same on the raw render."""
    total = reconstruction_loss(out["image"], downsample(target, out["image"].shape[-1]), loss, weight)
    if raw_weight:
        raw = out["image_raw"]
        total = total + raw_weight * reconstruction_loss(raw, downsample(target, raw.shape[-1]), loss, weight)
    return total


def project_latent(
    G: TriPlaneGenerator,
    target: torch.Tensor,
    yaw: float,
    pitch: float,
    settings: ProjectSettings,
    stats: LatentStats | None = None,
    weight: torch.Tensor | None = None,
    init_ws: torch.Tensor | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    stage: str = "project",
) -> ProjectResult:
    """Find ws (and refine yaw/pitch) so that G renders ``target`` [1, 3, R, R] from that camera."""
    if settings.space not in SPACES:
        raise ValueError(f"latent space must be one of {SPACES}, got {settings.space!r}")
    t0 = time.perf_counter()
    device = target.device
    stats = stats or latent_stats(G, settings.w_avg_samples)
    n_ws = G.num_ws
    if init_ws is not None:
        start = init_ws.detach()[:, :1] if settings.space == "w" else init_ws.detach()
    else:
        start = stats.w_avg[:, None].repeat(1, 1 if settings.space == "w" else n_ws, 1)
    w_opt = start.clone().to(device).requires_grad_(True)
    yaw0, pitch0 = float(yaw), float(pitch)
    cam = torch.tensor([yaw0, pitch0], device=device, requires_grad=settings.refine_camera)
    params: list[dict] = [{"params": [w_opt], "lr": settings.lr}]
    if settings.refine_camera:
        params.append({"params": [cam], "lr": settings.camera_lr})
    opt = torch.optim.Adam(params, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    losses: list[float] = []
    G.requires_grad_(False)
    res = G.cfg.neural_rendering_resolution
    size = window_size(G, settings.patch)
    for step in range(settings.steps):
        t = step / max(settings.steps, 1)
        scale = lr_schedule(t, 1.0, settings.rampup, settings.rampdown)
        opt.param_groups[0]["lr"] = settings.lr * scale
        if settings.refine_camera:
            opt.param_groups[1]["lr"] = settings.camera_lr * scale
        noise_scale = stats.w_std * settings.noise_strength * max(0.0, 1.0 - t / settings.noise_ramp) ** 2
        noise = torch.randn(w_opt.shape, generator=gen).to(device) * noise_scale
        ws = (w_opt + noise).expand(1, n_ws, -1) if settings.space == "w" else w_opt + noise
        label = orbit_labels(G.cfg, cam[0:1], cam[1:2]).to(device)
        window = draw_windows(res, size, 1, gen)[0] if size else None
        out = render_views(G, ws, label, seed=seed * 100_003 + step, windows=None if window is None else [window])
        seen, seen_weight = (target, weight) if window is None else \
            (window.crop(target, res), None if weight is None else window.crop(weight, res))
        loss = image_loss(out, seen, settings.loss, settings.raw_weight, seen_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if settings.refine_camera:
            with torch.no_grad():  # a bounded refinement, not a second search
                cam[0].clamp_(yaw0 - settings.camera_limit, yaw0 + settings.camera_limit)
                cam[1].clamp_(pitch0 - settings.camera_limit, pitch0 + settings.camera_limit)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(stage, step + 1, settings.steps, f"loss {losses[-1]:.4f}, yaw {float(cam[0].detach()):+.1f}°, "
                                                      f"pitch {float(cam[1].detach()):+.1f}°")
    ws_final = w_opt.detach().expand(1, n_ws, -1).clone() if settings.space == "w" else w_opt.detach().clone()
    return ProjectResult(ws_final, float(cam[0].detach()), float(cam[1].detach()), losses, time.perf_counter() - t0)
