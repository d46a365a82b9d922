"""``aware3d-train eval``: a JSON report on a generator, computed without any downloaded network.

- Quality: FID and KID in the synthetic-head feature network's space, for the final (super-resolved) image,
  the raw neural render (up-sampled) and the direct render at the final resolution (what Mimic3D's 3D-to-2D
  imitation trains), each against real images of the data set.
- 3D consistency: reprojection error between two views of the same head through the rendered depth, for the
  raw render, the SR image and the direct render (lower is more consistent; SR tends to break it).
- Geometry: without ground truth for generated heads, the spread of the frontal depth over the head
  (flat cards score ≈ 0) — and for the data set itself, the same reprojection check with its ground truth.
- Mesh: how well the density-10 mesh of a few latents lines up with their renders (silhouette IoU and the
  depth error, ``backend.mesh.alignment``): what a user exporting meshes gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.mesh.alignment import latent_alignment, summarise
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label
from train.eval.features import FeatureNet
from train.eval.metrics import depth_statistics, frechet_distance, kernel_inception_distance, reprojection_error

Progress = Callable[[str, int, int], None]


@torch.no_grad()
def embed(net: FeatureNet, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    out = [net.embedding(images[i : i + batch]).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def generate_for_fid(G: TriPlaneGenerator, labels: torch.Tensor, count: int, seed: int, batch: int = 16,
                     on_progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """``count`` samples at truncation 1 with cameras drawn from the data set's labels."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    res = G.cfg.img_resolution
    outs: dict[str, list[torch.Tensor]] = {"image": [], "raw": [], "direct": []}
    for start in range(0, count, batch):
        n = min(batch, count - start)
        z = torch.randn(n, G.cfg.z_dim, generator=gen).to(device)
        c = labels[torch.randint(len(labels), (n,), generator=gen)].to(device)
        ws = G.mapping(z, c)
        planes = G.synthesize_planes(ws)
        sampling = SamplingSettings(seed=seed + start)
        out = G.render(planes, ws, c, sampling=sampling, run_sr=G.superresolution is not None)
        outs["image"].append(out["image"].clamp(-1, 1).cpu())
        outs["raw"].append(F.interpolate(out["image_raw"], size=(res, res), mode="bilinear", align_corners=False)
                           .clamp(-1, 1).cpu())
        if G.cfg.neural_rendering_resolution != res:
            direct = G.render(planes, ws, c, resolution=res, sampling=sampling, run_sr=False)["image_raw"]
        else:
            direct = out["image_raw"]
        outs["direct"].append(direct.clamp(-1, 1).cpu())
        if on_progress:
            on_progress("generate", start + n, count)
    return {k: torch.cat(v) for k, v in outs.items()}


@torch.no_grad()
def consistency(G: TriPlaneGenerator, latents: int, seed: int, yaw: float = 20.0,
                on_progress: Progress | None = None) -> dict[str, Any]:
    """Mean reprojection error between the frontal view and views at ±yaw, per image kind."""
    device = next(G.parameters()).device
    cfg = G.cfg
    res = cfg.img_resolution
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, list[float]] = {"raw": [], "sr": [], "direct": []}
    geometry: list[dict[str, float]] = []
    c_front = torch.from_numpy(camera_label(cfg, 0, 0)).to(device)
    for i in range(latents):
        z = torch.randn(1, cfg.z_dim, generator=gen).to(device)
        ws = G.mapping(z, c_front[None], truncation_psi=0.7)
        planes = G.synthesize_planes(ws)
        views = {}
        for y in (0.0, -yaw, yaw):
            c = torch.from_numpy(camera_label(cfg, y, 0)).to(device)
            s = SamplingSettings(exact=True)
            low = G.render(planes, ws, c[None], sampling=s)
            full = (G.render(planes, ws, c[None], resolution=res, sampling=s, run_sr=False)
                    if cfg.neural_rendering_resolution != res else low)
            views[y] = (c, low, full)
        geometry.append(depth_statistics(views[0.0][1]["image_depth"][0, 0], views[0.0][1]["image_alpha"][0, 0]))
        c0, low0, full0 = views[0.0]
        for y in (-yaw, yaw):
            c1, low1, full1 = views[y]
            for kind, a, b in (("raw", low0, low1), ("sr", low0, low1), ("direct", full0, full1)):
                key = "image" if kind == "sr" else "image_raw"
                err, _ = reprojection_error(a[key][0], a["image_depth"][0], a["image_alpha"][0], c0,
                                            b[key][0], b["image_depth"][0], c1)
                if np.isfinite(err):
                    errors[kind].append(err)
        if on_progress:
            on_progress("consistency", i + 1, latents)
    report: dict[str, Any] = {f"reprojection_error_{k}": float(np.mean(v)) if v else None for k, v in errors.items()}
    report["yaw_deg"] = yaw
    report["geometry"] = {k: float(np.mean([g[k] for g in geometry])) for k in geometry[0]} if geometry else {}
    return report


@torch.no_grad()
def mesh_consistency(G: TriPlaneGenerator, latents: int, seed: int,
                     on_progress: Progress | None = None) -> dict[str, Any]:
    """Mesh vs render alignment over ``latents`` heads (truncation 0.7) from the front and at 30° yaw."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    c_front = torch.from_numpy(camera_label(G.cfg, 0, 0)).to(device)
    views, no_surface = [], 0
    for i in range(latents):
        z = torch.randn(1, G.cfg.z_dim, generator=gen).to(device)
        ws = G.mapping(z, c_front[None], truncation_psi=0.7)
        try:
            views += latent_alignment(G, G.synthesize_planes(ws), ws)
        except Aware3DError:  # nothing reaches the model's mesh level (an untrained model)
            no_surface += 1
        if on_progress:
            on_progress("mesh", i + 1, latents)
    return {"latents": latents, "level": float(G.cfg.mesh_level), "no_surface": no_surface,
            **(summarise(views) if views else {})}


def dataset_ground_truth_consistency(test_data: Any, yaw: float = 15.0, heads: int = 20) -> dict[str, Any]:
    """The same reprojection check on the data set's own ground truth (a floor for the metric)."""
    errors: list[float] = []
    for head in test_data.test_heads[:heads]:
        a = test_data[test_data.test_view(head, 0.0)]
        lab_a = torch.as_tensor(test_data.get_label(test_data.test_view(head, 0.0)))
        for y in (-yaw, yaw):
            idx = test_data.test_view(head, y)
            b = test_data[idx]
            lab_b = torch.as_tensor(test_data.get_label(idx))
            img_a = a["image"].float() / 127.5 - 1
            img_b = b["image"].float() / 127.5 - 1
            d_a = torch.nan_to_num(a["depth"], posinf=1e3)[None]
            d_b = torch.nan_to_num(b["depth"], posinf=1e3)[None]
            err, _ = reprojection_error(img_a, d_a, a["mask"].float()[None], lab_a, img_b, d_b, lab_b)
            if np.isfinite(err):
                errors.append(err)
    return {"reprojection_error_ground_truth": float(np.mean(errors)) if errors else None, "yaw_deg": yaw,
            "heads": min(heads, len(test_data.test_heads))}


def evaluate(G: TriPlaneGenerator, data: Any, net: FeatureNet, count: int = 2000, latents: int = 16,
             seed: int = 0, test_data: Any = None, on_progress: Progress | None = None,
             mesh_latents: int = 4) -> dict[str, Any]:
    rng = np.random.RandomState(seed)
    idx = rng.choice(len(data), min(count, len(data)), replace=False)
    real = torch.stack([data[int(i)][0] for i in idx])
    if on_progress:
        on_progress("real", len(idx), len(idx))
    labels = torch.from_numpy(np.stack([np.asarray(data.get_label(i), dtype=np.float32) for i in range(len(data))]))
    real_f = embed(net, real)
    fake = generate_for_fid(G, labels, len(idx), seed + 1, on_progress=on_progress)
    quality: dict[str, Any] = {"count": len(idx)}
    for kind, images in fake.items():
        f = embed(net, images)
        quality[f"fid_{kind}"] = frechet_distance(real_f, f)
        quality[f"kid_{kind}"] = kernel_inception_distance(real_f, f, subsets=20, subset_size=min(500, len(idx)))
    report: dict[str, Any] = {"feature_space": "aware3d synthetic-head feature network", "quality": quality,
                              "consistency": consistency(G, latents, seed + 2, on_progress=on_progress)}
    if mesh_latents > 0:
        report["mesh"] = mesh_consistency(G, mesh_latents, seed + 3, on_progress)
    if test_data is not None:
        report["dataset"] = dataset_ground_truth_consistency(test_data)
    return report
