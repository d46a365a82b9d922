# SPDX-License-Identifier: GPL-3.0-or-later
"""Held-out evaluation of the depth network on a ``*_test.zip``: AbsRel and δ after alignment.

Protocol (spec §12.2, the usual one for affine-invariant monocular depth): per image, the predicted
disparity is aligned to the ground-truth disparity 1/z by least-squares scale and shift over the head pixels,
turned into depth, and compared with the true camera-space z on the head: AbsRel = mean |ẑ − z| / z and
δ<τ = share of pixels with max(ẑ/z, z/ẑ) < τ, each averaged over images.

Baseline: the best constant disparity per image (what the alignment makes of a flat prediction). The head's
depth spans only ~15 %, so δ<1.25 is ~1 even for the baseline; the stricter δ<1.02 and δ<1.05 are reported
to separate them. ``metric`` evaluates :func:`backend.depth.depth_for_view` itself (no alignment to the
ground truth: nearest point placed at r − 0.3, 2.2 frontal), plus how well its "far" pixels match the background.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from backend.depth.estimate import align_scale_shift, estimate_disparity, metric_disparity, nearest_distance
from backend.diffusion.unet import UNet
from train.depth.data import DepthData

THRESHOLDS = (1.25, 1.05, 1.02)


def depth_errors(z_pred: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """AbsRel and δ<τ of predicted against true depths (1-D arrays over the evaluated pixels)."""
    ratio = np.maximum(z_pred / z_true, z_true / z_pred)
    out = {"absrel": float(np.mean(np.abs(z_pred - z_true) / z_true))}
    for t in THRESHOLDS:
        out[f"delta_{t:g}"] = float(np.mean(ratio < t))
    return out


def _aligned_depth(pred: np.ndarray, disp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    s, t = align_scale_shift(pred, disp, mask)
    d = s * pred[mask] + t
    return 1.0 / np.maximum(d, 1e-6)


@torch.no_grad()
def evaluate(net: UNet, data: DepthData, max_images: int | None = None, batch: int = 32,
             data_path: str = "") -> dict[str, Any]:
    """Metrics of ``net`` on ``data`` (un-flipped); JSON-ready dict with the constant baseline beside."""
    n = len(data) if max_images is None else min(max_images, len(data))
    sums: dict[str, dict[str, float]] = {"model": {}, "constant_baseline": {}, "metric": {}}
    t0 = time.time()
    count = 0
    for start in range(0, n, batch):
        idx = list(range(start, min(start + batch, n)))
        rgb, disp, mask = data.batch(idx)
        pred = estimate_disparity(net, rgb)[:, 0].cpu().numpy()
        for k, i in enumerate(idx):
            m = mask[k, 0].numpy()
            if not m.any():
                continue
            g = disp[k, 0].numpy()
            count += 1
            z = 1.0 / g[m]
            rows = {"model": depth_errors(_aligned_depth(pred[k], g, m), z),
                    "constant_baseline": depth_errors(_aligned_depth(np.zeros_like(g), g, m), z)}
            cam = data.camera(i)
            near, far = cam.depth_range()
            md = metric_disparity(pred[k], nearest_distance(cam))
            zm = np.clip(np.where(md > 1 / far, 1 / np.maximum(md, 1e-12), far), near, far)
            fg = zm < far
            metric = depth_errors(zm[m], z)
            metric["silhouette_iou"] = float((fg & m).sum() / max((fg | m).sum(), 1))
            metric["nearest_true_z"] = float(z.min())
            rows["metric"] = metric
            for name, vals in rows.items():
                for key, v in vals.items():
                    sums[name][key] = sums[name].get(key, 0.0) + v
    result: dict[str, Any] = {name: {k: round(v / max(count, 1), 5) for k, v in vals.items()}
                              for name, vals in sums.items()}
    result.update({"images": count, "data": data_path or data.path, "seconds": round(time.time() - t0, 1),
                   "protocol": "per-image least-squares scale+shift of disparity over head pixels; "
                               "AbsRel and delta over head pixels, averaged over images"})
    return result
