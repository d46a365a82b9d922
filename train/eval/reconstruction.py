# SPDX-License-Identifier: GPL-3.0-or-later
"""Reconstruction of held-out heads from their own latent: the distilled model against the truth.

Why: a GAN can only be judged by distributions (FID), but a distilled model promises more: ``G(z, c)`` *is*
the head of latent ``z`` seen from camera ``c``. For held-out test heads (whose latents the model never saw)
we render every test view and compare it with the true image and depth, mesh the density and compare it
with the true surface, and look at the head from behind (which the data never shows), against the truth
rendered on the fly.

Measures (per view, then averaged): PSNR and SSIM of the final image, whole and head region (true
foreground at the image size); the median depth error over pixels that are head in the truth and opaque in
the render (neural resolution); the symmetric Chamfer distance between the model's density-level mesh and
the true zero set, inside the box where the truth is not cut (the shoulders are); and the PSNR of the view
from behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from backend.errors import Aware3DError
from backend.mesh.field import GeneratorField, SDFField
from backend.mesh.metrics import chamfer, sample_surface
from backend.mesh.pipeline import MeshSettings, extract_mesh
from backend.render.renderer import SamplingSettings
from train.distill.losses import truth_at
from train.distill.targets import render_targets
from train.synthetic.heads import head_sdf
from train.synthetic.latent import LATENT_DIMS, takes_head_latents
from train.synthetic.params import HeadParams

Progress = Callable[[str, int, int], None]
MESH_SETTINGS = MeshSettings(resolution=128, border_pad=0, component_min_ratio=1.0, target_faces=None,
                             colours=False, smooth_iterations=0)
CHAMFER_INNER = 0.45  # the truth's shoulders are cut by the box: compare inside |x|, |y|, |z| < this
BACK_YAWS = (180.0,)


# Discrete choices the report splits the head PSNR by: a model that never draws a rare one (a hat, a full beard)
# shows it here long before the mean moves.
CHOICES = ("hat", "glasses", "beard", "hair_style", "hair_colour")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of images in [0, 1] (``mask``: [H, W] pixels to count)."""
    diff = (a - b) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        diff = diff[mask]
    mse = float(diff.mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM of [H, W, 3] images in [0, 1] (7-pixel window), over ``mask`` when given."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=7, full=True)
    full = full.mean(axis=2)
    return float(full[mask].mean() if mask is not None else full.mean())


def _to01(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy().astype(np.float64)


@torch.no_grad()
def render_views(G: Any, z: torch.Tensor, labels: torch.Tensor, sampling: SamplingSettings) -> dict[str, torch.Tensor]:
    device = next(G.parameters()).device
    zz = z.expand(labels.shape[0], -1).to(device)
    c = labels.to(device)
    ws = G.mapping(zz, c)
    planes = G.synthesize_planes(ws)
    return G.render(planes, ws, c, sampling=sampling)


def view_scores(out: dict[str, torch.Tensor], i: int, image: torch.Tensor, depth: torch.Tensor) -> dict[str, float]:
    """Scores of view ``i`` of a render against its true image [3, R, R] in [-1, 1] and depth [R, R]."""
    pred, true = _to01(out["image"][i]), _to01(image)
    if pred.shape != true.shape:
        raise ValueError(f"the model renders {pred.shape[0]}² images, the test data is {true.shape[0]}²")
    head = np.isfinite(depth.numpy())
    low = truth_at(image[None], depth[None], out["image_depth"].shape[-1])
    valid = low["depth_valid"][0, 0].numpy() & (out["image_alpha"][i, 0].cpu().numpy() > 0.5)
    err = np.abs(out["image_depth"][i, 0].cpu().numpy() - low["depth"][0, 0].numpy())[valid]
    return {"psnr": psnr(pred, true), "psnr_head": psnr(pred, true, head), "ssim": ssim(pred, true),
            "ssim_head": ssim(pred, true, head),
            "depth_error": float(np.median(err)) if err.size else float("nan")}


def head_planes(G: Any, z: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """(ws, tri-planes) of latent ``z`` [1, z_dim] (the distilled models take no camera conditioning)."""
    device = next(G.parameters()).device
    with torch.no_grad():
        ws = G.mapping(z.to(device), torch.zeros(1, G.cfg.c_dim, device=device))
        return ws, G.synthesize_planes(ws)


def mesh_chamfers(G: Any, planes: Any, head: HeadParams, levels: Sequence[float],
                  samples: int = 20000) -> dict[float, float]:
    """Chamfer distance (world units) between the model's mesh of one head's ``planes`` (:func:`head_planes`) at
    each density level and the true surface (NaN where the model's field has no surface at that level).

    Several levels share one tri-plane synthesis and one truth mesh: the level a model's meshes should use is
    the one whose surface lies on the truth, and a distilled model can be asked directly (``--mesh-levels``).
    """
    truth_mesh = extract_mesh(SDFField(lambda p: head_sdf(head, p).to(p.dtype)), MESH_SETTINGS)
    b = sample_surface(truth_mesh.vertices, truth_mesh.faces, samples, seed=1)
    b = b[np.abs(b).max(axis=1) < CHAMFER_INNER]
    out: dict[float, float] = {}
    for level in levels:
        try:
            model_mesh = extract_mesh(GeneratorField(G, planes), dataclasses.replace(MESH_SETTINGS, level=level))
        except Aware3DError:  # no surface at the level: nothing to compare (counted in the report)
            out[level] = float("nan")
            continue
        a = sample_surface(model_mesh.vertices, model_mesh.faces, samples, seed=0)
        a = a[np.abs(a).max(axis=1) < CHAMFER_INNER]
        out[level] = chamfer(a, b)
    return out


def head_latent(cfg: Any, params: dict[str, Any]) -> torch.Tensor:
    """The z [1, z_dim] of a data head from its stored parameters (its latent; the rest of z is zero)."""
    z = torch.zeros(1, cfg.z_dim)
    z[0, :LATENT_DIMS] = torch.tensor(params["latent"][:LATENT_DIMS])
    return z


def _median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when none: e.g. a render with no opaque pixel)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _mean(rows: Sequence[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def reconstruction(G: Any, test: Any, heads: int | None = None, max_yaw: float = 45.0, meshes: int = 4,
                   on_progress: Progress | None = None,
                   mesh_levels: Sequence[float] | None = None) -> dict[str, Any]:
    """The report section: held-out heads of a ``*_test.zip`` (with latents) rendered from their own z.

    ``chamfer_mean`` is at the first of ``mesh_levels`` (default: the model's own ``mesh_level``); with more
    than one, ``chamfer_by_level`` gives each.
    """
    cfg = G.cfg
    mesh_levels = tuple(mesh_levels) if mesh_levels else (float(cfg.mesh_level),)
    if not takes_head_latents(cfg):
        return {"skipped": f"{cfg.name} does not take head latents as z (not a distilled model)"}
    p0 = test.params(0)
    if "latent" not in p0:
        return {"skipped": "the test data has no head latents (made by an older aware3d-train make-dataset)"}
    r = cfg.rendering
    sampling = SamplingSettings(exact=True, depth_resolution=r.depth_resolution * 2,
                                depth_resolution_importance=r.depth_resolution_importance * 2)
    ids = test.test_heads[:heads] if heads else test.test_heads
    views = [(y, p) for (y, p) in test.test_views if abs(y) <= max_yaw]
    rows: list[dict[str, float]] = []
    back: list[float] = []
    chamfers: list[dict[float, float]] = []
    for n, h in enumerate(ids):
        idx = [test.test_view(h, y, p) for (y, p) in views]
        items = [test[i] for i in idx]
        params = test.params(idx[0])
        z = head_latent(cfg, params)
        labels = torch.stack([it["label"] for it in items])
        out = render_views(G, z, labels, sampling)
        choices = {key: str(params.get(key)) for key in CHOICES}
        for k, ((yaw, pitch), it) in enumerate(zip(views, items)):
            image = it["image"].float() / 127.5 - 1
            rows.append({"yaw": yaw, "pitch": pitch, **view_scores(out, k, image, it["depth"]), **choices})
        truth = render_targets(z[:, :LATENT_DIMS].double().numpy().repeat(len(BACK_YAWS), 0),
                               [(y, 0.0) for y in BACK_YAWS], cfg.img_resolution, cfg.z_dim)
        out_back = render_views(G, z, truth.c, sampling)
        back += [view_scores(out_back, k, truth.image[k], truth.depth[k])["psnr_head"] for k in range(len(BACK_YAWS))]
        if n < meshes:
            chamfers.append(mesh_chamfers(G, head_planes(G, z)[1], HeadParams.from_json(params), mesh_levels))
        if on_progress:
            on_progress("reconstruction", n + 1, len(ids))
    by_yaw = {}
    for yaw in sorted({r["yaw"] for r in rows}):
        sel = [r for r in rows if r["yaw"] == yaw]
        by_yaw[f"{yaw:+.0f}"] = {k: round(_mean(sel, k), 4) for k in ("psnr", "psnr_head", "ssim", "depth_error")}
    by_choice: dict[str, dict[str, dict[str, float]]] = {}
    for key in CHOICES:
        for value in sorted({r[key] for r in rows}):
            sel = [r for r in rows if r[key] == value]
            by_choice.setdefault(key, {})[value] = {"heads": len(sel) // len(views),
                                                    "psnr_head": round(_mean(sel, "psnr_head"), 4)}
    return {
        "heads": len(ids), "views_per_head": len(views), "max_yaw": max_yaw,
        **{f"{k}_mean": _mean(rows, k) for k in ("psnr", "psnr_head", "ssim", "ssim_head")},
        "depth_error_median": _median([r["depth_error"] for r in rows]),
        "chamfer_mean": _mean([{"c": c[mesh_levels[0]]} for c in chamfers], "c"),
        "chamfer_level": float(mesh_levels[0]),
        "chamfer_heads": len(chamfers),
        "chamfer_no_surface": int(sum(not np.isfinite(c[mesh_levels[0]]) for c in chamfers)),
        **({"chamfer_by_level": {f"{lv:g}": {"mean": _mean([{"c": c[lv]} for c in chamfers], "c"),
                                             "no_surface": int(sum(not np.isfinite(c[lv]) for c in chamfers))}
                                 for lv in mesh_levels}} if len(mesh_levels) > 1 else {}),
        "back_psnr_head_mean": float(np.mean(back)) if back else float("nan"),
        "by_yaw": by_yaw,
        "by_choice": by_choice,
    }
