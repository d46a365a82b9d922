"""Distribution distances (FID, KID) and 3D-consistency measures for generated views."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from backend.render.rays import camera_rays


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets [N, D]: ‖μa − μb‖² + Tr(Σa + Σb − 2·(Σa Σb)^½)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 500,
                              seed: int = 0) -> float:
    """KID: the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³, averaged over subsets."""
    rng = np.random.RandomState(seed)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    total = 0.0
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        total += ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                  - 2 * kxy.mean())
    return float(total / subsets)


def _resize(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def reprojection_error(
    image_a: torch.Tensor, depth_a: torch.Tensor, alpha_a: torch.Tensor, label_a: torch.Tensor,
    image_b: torch.Tensor, depth_b: torch.Tensor, label_b: torch.Tensor, depth_tolerance: float = 0.03,
) -> tuple[float, float]:
    """How well view A's colours reappear in view B where A's surface is visible from B.

    Pixels of A (opacity > 0.5) are lifted to 3D through A's depth (distance along the unit ray), projected
    into B, kept when B's depth there agrees (the point is not occluded in B), and compared with B's colour
    there. Images [3, H, W] in [−1, 1] (compared in [0, 1]); depths/alpha [1, h, w] at any resolution (they
    are resized to the image's). Returns (mean absolute colour error, fraction of A's foreground used).
    """
    res = image_a.shape[-1]
    d_a = _resize(depth_a[None], res, "nearest")[0, 0]
    a_a = _resize(alpha_a[None], res, "nearest")[0, 0]
    d_b = _resize(depth_b[None], res, "nearest")[0, 0]
    origins, dirs = camera_rays(label_a[None], res)
    pts = origins[0] + dirs[0] * d_a.reshape(-1, 1)
    c2w_b = label_b[:16].reshape(4, 4)
    k_b = label_b[16:].reshape(3, 3)
    world2cam = torch.linalg.inv(c2w_b)
    cam = pts @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = cam[:, 2].clamp_min(1e-6)
    u = (k_b[0, 0] * cam[:, 0] / z + k_b[0, 2]) * 2 - 1      # normalised [−1, 1] grid coordinates
    v = (k_b[1, 1] * cam[:, 1] / z + k_b[1, 2]) * 2 - 1
    grid = torch.stack([u, v], dim=-1).reshape(1, res, res, 2)
    sampled = F.grid_sample(image_b[None], grid, mode="bilinear", align_corners=False)[0]
    sampled_depth = F.grid_sample(d_b[None, None], grid, mode="nearest", align_corners=False)[0, 0]
    dist_b = (pts - c2w_b[:3, 3]).norm(dim=-1).reshape(res, res)
    inside = (u.abs() < 1) & (v.abs() < 1)
    visible = (a_a > 0.5) & inside.reshape(res, res) & ((sampled_depth - dist_b).abs() < depth_tolerance)
    if not bool(visible.any()):
        return float("nan"), 0.0
    diff = ((sampled - image_a).abs() / 2).mean(0)
    return float(diff[visible].mean()), float(visible.float().sum() / (a_a > 0.5).float().sum().clamp_min(1))


def depth_statistics(depth: torch.Tensor, alpha: torch.Tensor) -> dict[str, float]:
    """Geometry without ground truth: spread of the frontal depth over the head (a flat card scores ≈ 0)."""
    mask = alpha > 0.5
    if not bool(mask.any()):
        return {"depth_range": 0.0, "depth_std": 0.0, "foreground": 0.0}
    d = depth[mask]
    lo, hi = torch.quantile(d, 0.05), torch.quantile(d, 0.95)
    return {"depth_range": float(hi - lo), "depth_std": float(d.std()), "foreground": float(mask.float().mean())}
