# SPDX-License-Identifier: GPL-3.0-or-later
"""Pivotal tuning: fine-tune a copy of the generator so that the fixed pivot renders the targets.

Used for HFGI3D's stage 1b (input view only, short, only to get a depth map and fill images) and stage 2
(input view plus one pseudo view per step, from the *original* generator; spec §2.3, §2.5). What is kept:
Adam at lr 3e-4 over every generator parameter the pivot reaches (tri-plane backbone, decoder,
super-resolution; the mapping gets no gradient), an early stop on a reconstruction score checked before the
update, one uniformly drawn pseudo view per step, configurable input/pseudo weights, and PTI's optional
locality regulariser. Deviation: LPIPS-AlexNet is replaced by ``1 − SSIM`` (:mod:`.losses`), and the early
stop uses input-view PSNR instead of LPIPS ≤ 0.06.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backend.generator import TriPlaneGenerator
from backend.invert.geometry import orbit_labels, pose_from_label
from backend.invert.losses import LossWeights, downsample, psnr
from backend.invert.project import image_loss
from backend.invert.render import Window, draw_windows, render_views, window_size
from backend.sampling import conditioning_label

Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class TuneSettings:
    steps: int = 100
    lr: float = 3e-4
    loss: LossWeights = field(default_factory=lambda: LossWeights(l2=1.0, ssim=1.0))
    raw_weight: float = 0.5
    input_weight: float = 1.0
    pseudo_weight: float = 1.0
    pseudo_per_step: int = 1
    early_stop_psnr: float | None = None  # stop once the input view reaches this PSNR (dB)
    locality_weight: float = 0.0  # PTI's locality regulariser (0: off, as in HFGI3D and PTI's default)
    locality_alpha: float = 0.5  # distance of the regularisation latents, in units of W's spread
    locality_truncation: float = 0.5
    # Render only a random patch × patch window of each view per step (0: whole views). Models that render
    # their image directly only (render.window_size); about four times fewer rays at 32 of 64.
    patch: int = 0


@dataclass
class Target:
    """One supervised view: image [1, 3, R, R] in [−1, 1], camera label [1, 25], optional weight map."""

    image: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor | None = None


@dataclass
class TuneReport:
    steps: int
    stopped_early: bool
    input_psnr: float
    losses: list[float]
    seconds: float


def trainable_parameters(G: TriPlaneGenerator) -> list[torch.nn.Parameter]:
    """Every parameter except the mapping network's (the pivot is fixed, so it would get no gradient)."""
    return [p for n, p in G.named_parameters() if not n.startswith("backbone.mapping.")]


def tune_generator(
    G_base: TriPlaneGenerator,
    ws: torch.Tensor,
    input_view: Target,
    pseudo_views: list[Target] | None = None,
    settings: TuneSettings | None = None,
    progress: Progress | None = None,
    stage: str = "tune",
    seed: int = 0,
    w_spread: float = 1.0,
) -> tuple[TriPlaneGenerator, TuneReport]:
    """A tuned copy of ``G_base`` (left untouched). ``w_spread`` scales the locality distance."""
    s = settings or TuneSettings()
    t0 = time.perf_counter()
    G = copy.deepcopy(G_base)
    G.requires_grad_(False)
    params = trainable_parameters(G)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=s.lr)
    pseudo = pseudo_views or []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = ws.device
    ws = ws.detach()
    losses: list[float] = []
    stopped = False
    last_psnr = float("nan")
    step = 0
    res = G.cfg.neural_rendering_resolution
    size = window_size(G, s.patch)
    for step in range(s.steps):
        chosen: list[Target] = []
        if pseudo and s.pseudo_weight > 0:
            idx = torch.randint(len(pseudo), (min(s.pseudo_per_step, len(pseudo)),), generator=gen)
            chosen = [pseudo[int(i)] for i in idx]
        views = [input_view, *chosen]
        labels = torch.cat([v.label for v in views]).to(device)
        windows = draw_windows(res, size, len(views), gen) if size else None
        out = render_views(G, ws, labels, seed=seed * 100_003 + step, windows=windows)
        seen = [_seen(v, None if windows is None else windows[j], res) for j, v in enumerate(views)]
        last_psnr = psnr(out["image"][:1].detach(), downsample(seen[0].image, out["image"].shape[-1]))
        if s.early_stop_psnr is not None and last_psnr >= s.early_stop_psnr:  # on the window when patched
            stopped = True
            break
        loss = s.input_weight * image_loss({k: v[:1] for k, v in out.items()}, seen[0].image, s.loss,
                                           s.raw_weight, seen[0].weight)
        for j, v in enumerate(seen[1:], start=1):
            loss = loss + s.pseudo_weight / len(chosen) * image_loss(
                {k: t[j : j + 1] for k, t in out.items()}, v.image, s.loss, s.raw_weight, v.weight)
        if s.locality_weight > 0:
            loss = loss + s.locality_weight * _locality(G, G_base, ws, input_view.label, s, gen, w_spread)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(stage, step + 1, s.steps, f"loss {losses[-1]:.4f}, input PSNR {last_psnr:.2f} dB")
    G.requires_grad_(False)
    G.eval()
    if progress is not None and stopped:
        progress(stage, s.steps, s.steps, f"early stop at step {step}: input PSNR {last_psnr:.2f} dB")
    return G, TuneReport(step if stopped else s.steps, stopped, last_psnr, losses, time.perf_counter() - t0)


def _seen(view: Target, window: Window | None, resolution: int) -> Target:
    """The part of ``view`` that a step's render covers (all of it without a window)."""
    if window is None:
        return view
    weight = None if view.weight is None else window.crop(view.weight, resolution)
    return Target(window.crop(view.image, resolution), view.label, weight)


def _locality(G: TriPlaneGenerator, G_base: TriPlaneGenerator, ws: torch.Tensor, label: torch.Tensor,
              s: TuneSettings, gen: torch.Generator, w_spread: float) -> torch.Tensor:
    """PTI's locality term: near the pivot, in the direction of a random truncated sample, the tuned
    generator must still render what the original one renders (L2 + the structural term)."""
    device = ws.device
    z = torch.randn(1, G.cfg.z_dim, generator=gen).to(device)
    c = torch.from_numpy(conditioning_label(G.cfg))[None].to(device)
    with torch.no_grad():
        wz = G_base.mapping(z, c, truncation_psi=s.locality_truncation)
        d = wz - ws
        w_r = ws + s.locality_alpha * w_spread * d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        yaw, pitch, _ = pose_from_label(label[0])
        jitter = (torch.rand(2, generator=gen) * 2 - 1) * torch.tensor([20.0, 8.0])
        cam = orbit_labels(G.cfg, yaw + float(jitter[0]), pitch + float(jitter[1])).to(device)
        ref = render_views(G_base, w_r, cam, seed=0, grad=False)
    out = render_views(G, w_r, cam, seed=0)
    return image_loss(out, ref["image"], s.loss, s.raw_weight)
