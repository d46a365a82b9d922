# SPDX-License-Identifier: GPL-3.0-or-later
"""Evaluating novel views against ground truth on held-out synthetic heads (spec §12.2).

Protocol: for each test head the *true* frontal view (colour and depth) is the first view; G_c then
generates yaw +15, −15, +30, −30, +45, −45, +60, −60 (pitch 0) in that order, each conditioned on all
previous views. At ±30° and ±60° the generated view is compared with the true one: PSNR and SSIM of the
whole image and of the head alone (the true view's foreground: the backdrop is generated afresh in every
view, so its colour is a guess), PSNR separately on the part the first view saw (the warp's colour mask) and
on the rest (where a generative model may legitimately differ), and depth AbsRel on the head. The baseline warps
the true first view straight to the target and fills the holes with the nearest known colour.
Consistency: each generated view is warped into its neighbour on the trajectory and compared on
co-visible pixels (depth agreeing within 2 %). A G_c with backdrop channels is given the first view's backdrop
(as ``aware3d views`` does); for every model, the backdrop's drift is reported: the mean CIE76 ΔE between each
generated view's backdrop pixels and the first view's backdrop there, its largest value along the trajectory.
``unconditional_fid`` measures G_u's first views in the feature network's space (FID against a data zip).

A G_c with shape channels is given each target view's true geometry (as texturing gives it the mesh's, and
``aware3d views`` the GAN's), unless ``shape=False`` (IVID's setting: only the previous views are known).
Because that is knowledge the plain baseline does not use, a second baseline is reported with it:
``baseline_shape`` warps and fills the same way inside the true silhouette and draws the carried backdrop
outside it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from backend.views import rgbd
from backend.views.backdrop import Backdrop, backdrop_mask, fit_backdrop
from backend.views.generate import ViewModels, condition_for
from backend.views.holes import fill_nearest
from backend.views.rgbd import Condition, RGBDView
from backend.views.warp import aggregate
from train.data.zip_dataset import ZipDataset
from train.diffusion.data import view_from_item

EVAL_YAWS = (15.0, -15.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0)
REPORT_YAWS = (30.0, -30.0, 60.0, -60.0)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        if not mask.any():
            return math.nan
        d = d[mask]
    return float(10 * math.log10(1.0 / max(float(d.mean()), 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=7))


def nearest_fill(cond: Condition) -> RGBDView:
    """The baseline: the warped first view with every unknown pixel given its nearest known colour/depth."""
    known = cond.rgb_mask if cond.rgb_mask.any() else cond.depth_mask
    if not known.any():
        return RGBDView(np.zeros_like(cond.rgb), cond.z.copy(), cond.camera)
    dk = cond.depth_mask if cond.depth_mask.any() else known
    return RGBDView(fill_nearest(cond.rgb, known), fill_nearest(cond.z, dk), cond.camera)


def shape_fill(cond: Condition, truth: RGBDView, carried: Backdrop | None) -> RGBDView:
    """The baseline given the target's geometry: inside the true silhouette the nearest known colour (as
    ``nearest_fill``), outside it the trajectory's backdrop, and the true depth."""
    base = nearest_fill(cond)
    far = truth.camera.depth_range()[1]
    surface = truth.z < far - 1e-3
    if carried is not None:
        back = carried.image(truth.camera.width, truth.camera.height)
        base.rgb = np.where(surface[..., None] | cond.rgb_mask[..., None], base.rgb, back).astype(np.float32)
    base.z = truth.z.copy()
    return base


def depth_absrel(pred: RGBDView, true: RGBDView) -> float:
    far = true.camera.depth_range()[1]
    head = true.z < far - 1e-3
    if not head.any():
        return math.nan
    return float(np.mean(np.abs(pred.z[head] - true.z[head]) / true.z[head]))


def consistency(a: RGBDView, b: RGBDView, tol: float = 0.02) -> dict[str, float]:
    """Warp ``a`` into ``b``'s camera; PSNR on co-visible pixels (depths agree within ``tol``)."""
    c = aggregate([a], b.camera)
    co = c.rgb_mask & (np.abs(c.z - b.z) < tol * b.z)
    return {"psnr": psnr(c.rgb, b.rgb, co), "covisible": float(co.mean())}


def backdrop_drift(view: RGBDView, carried: Backdrop | None) -> float:
    """Mean ΔE (CIE76) between ``view``'s backdrop pixels and the trajectory's backdrop (nan if none)."""
    from skimage.color import rgb2lab

    mask = backdrop_mask(view)
    if carried is None or not mask.any():
        return math.nan
    ref = carried.image(view.camera.width, view.camera.height)
    d = rgb2lab(np.clip(view.rgb, 0, 1)) - rgb2lab(ref)
    return float(np.sqrt((d**2).sum(-1))[mask].mean())


def _mean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return round(float(np.mean(v)), 3) if v else math.nan


def evaluate_views(models: ViewModels, test: ZipDataset, heads: int, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None, shape: bool = True) -> dict[str, Any]:
    """Run the protocol on the first ``heads`` test heads; per-yaw means for the model and the baselines
    (``shape``: give a G_c with shape channels the true geometry of each target view)."""
    use_shape = shape and models.cond.cfg.shape
    rows: dict[str, dict[str, list[float]]] = {}
    cons: list[dict[str, float]] = []
    drift: list[float] = []
    ids = test.test_heads[:heads]
    t0 = time.time()
    n_generated = 0
    for k, head in enumerate(ids):
        def true_view(yaw: float, head: int = head) -> RGBDView:
            return view_from_item(test[test.test_view(head, yaw, 0.0)])

        first = true_view(0.0)
        views = [first]
        by_yaw = {0.0: first}
        carried = fit_backdrop(first)
        worst = math.nan
        for i, yaw in enumerate(EVAL_YAWS):
            cam = rgbd.orbit(yaw, 0.0, models.resolution)
            shape_z = true_view(yaw).z if use_shape else None
            view = models.next_view(condition_for(views, cam, carried, shape_z), seed * 100_000 + head * 100 + i)
            views.append(view)
            by_yaw[yaw] = view
            n_generated += 1
            d = backdrop_drift(view, carried)
            if not math.isnan(d):
                worst = d if math.isnan(worst) else max(worst, d)
        drift.append(worst)
        for yaw in REPORT_YAWS:
            truth = true_view(yaw)
            direct = aggregate([first], truth.camera)
            base = nearest_fill(direct)
            seen = direct.rgb_mask
            for name, pred in (("model", by_yaw[yaw]), ("baseline", base),
                               ("baseline_shape", shape_fill(direct, truth, carried))):
                r = rows.setdefault(f"{name}@{yaw:+.0f}", {})
                head = truth.z < truth.camera.depth_range()[1] - 1e-3
                for metric, value in (("psnr", psnr(pred.rgb, truth.rgb)), ("ssim", ssim(pred.rgb, truth.rgb)),
                                      ("psnr_head", psnr(pred.rgb, truth.rgb, head)),
                                      ("psnr_seen", psnr(pred.rgb, truth.rgb, seen)),
                                      ("psnr_unseen", psnr(pred.rgb, truth.rgb, ~seen)),
                                      ("depth_absrel", depth_absrel(pred, truth)),
                                      ("seen_fraction", float(seen.mean()))):
                    r.setdefault(metric, []).append(value)
        order = [0.0, *EVAL_YAWS]
        ordered = sorted(order)
        for a, b in itertools.pairwise(ordered):
            if a != 0.0 and b != 0.0:
                cons.append(consistency(by_yaw[a], by_yaw[b]))
        if progress is not None:
            progress(k + 1, len(ids))
    table = {key: {m: _mean(v) for m, v in r.items()} for key, r in rows.items()}
    summary = {}
    for name in ("model", "baseline", "baseline_shape"):
        for group, yaws in (("30", (30.0, -30.0)), ("60", (60.0, -60.0))):
            for metric in ("psnr", "ssim", "psnr_head", "psnr_seen", "psnr_unseen", "depth_absrel"):
                summary[f"{name}_{metric}@±{group}"] = _mean(
                    [x for y in yaws for x in rows[f"{name}@{y:+.0f}"][metric]])
    return {"heads": len(ids), "per_yaw": table, "summary": summary,
            "consistency": {"psnr": _mean([c["psnr"] for c in cons]),
                            "covisible": _mean([c["covisible"] for c in cons]), "pairs": len(cons)},
            "backdrop_delta_e": {"mean_of_max": _mean(drift),
                                 "max": round(max((d for d in drift if not math.isnan(d)), default=math.nan), 3)},
            "seconds_per_view": round((time.time() - t0) / max(n_generated, 1), 3), "steps": models.steps,
            "shape_given": use_shape}


def unconditional_fid(models: ViewModels, real: Any, net: Any, count: int, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None,
                      on_view: Callable[[int, RGBDView], None] | None = None) -> dict[str, Any]:
    """FID of ``count`` G_u first views (25-step DDIM unless set otherwise) against ``count`` images of
    ``real`` (a ZipDataset), both in the feature network ``net``'s space. ``on_view(k, view)`` sees each
    sampled view, so a sample sheet shows exactly the views that were measured."""
    import torch

    from train.eval.metrics import frechet_distance
    from train.eval.report import embed

    rng = np.random.RandomState(seed)
    idx = rng.choice(len(real), min(count, len(real)), replace=False)
    real_images = torch.stack([real[int(i)][0] for i in idx])
    fake = []
    cam = rgbd.orbit(0.0, 0.0, models.resolution)
    for k in range(len(idx)):
        view = models.first_view(cam, seed * 1_000_003 + k)
        fake.append(torch.from_numpy((view.rgb * 255.0 + 0.5).astype(np.uint8).transpose(2, 0, 1)))
        if on_view is not None:
            on_view(k, view)
        if progress is not None:
            progress(k + 1, len(idx))
    with torch.no_grad():
        fid = frechet_distance(embed(net, real_images), embed(net, torch.stack(fake)))
    return {"count": len(idx), "fid": round(fid, 3), "steps": models.steps}
