"""How well a generator's mesh lines up with the generator's own volume render.

Why a library function: the same number is a test on the bundled model, a line of ``aware3d-train eval``'s
report and model card, and what the ray-distortion loss in training is meant to improve. A mesh is only as
useful as its agreement with what the artist saw rendered: the silhouette (IoU of the mesh's coverage and
the render's alpha > 0.5) and, where both see the head, the distance along the ray between the mesh surface
and the render's expected depth.

The render is taken with ``SAMPLES_FACTOR`` times the model's samples per ray, so the comparison measures the
field and not the sampler: a sharp surface at the model's own 16+16 samples (the bundled model) is missed by
grazing rays at the rim (alpha 0 where the converged render gives 0.2-0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from backend import cameras
from backend.mesh.data import Mesh
from backend.mesh.field import GeneratorField
from backend.mesh.metrics import silhouette_iou
from backend.mesh.pipeline import MeshSettings, extract_mesh
from backend.mesh.raster import render_depth
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label

# No border trim and no component filter: the render sees the whole box, shoulders and specks included.
ALIGNMENT_SETTINGS = MeshSettings(resolution=256, coarse_to_fine=True, border_pad=0, component_min_ratio=0.0)
SAMPLES_FACTOR = 4


@dataclass(frozen=True)
class ViewAlignment:
    yaw: float
    iou: float                 # silhouette IoU, mesh coverage vs render alpha > 0.5
    depth_error: float         # median |mesh depth - render depth| where both see the head (world units)
    depth_offset: float        # median (mesh - render): negative when the mesh lies in front


@torch.no_grad()
def view_alignment(G: Any, planes: list[torch.Tensor], ws: torch.Tensor, mesh: Mesh,
                   yaws: Sequence[float] = (0.0, 30.0), resolution: int | None = None) -> list[ViewAlignment]:
    """Compare ``mesh`` (in generator units) with ``G``'s raw render of the same latent from orbit cameras."""
    res = resolution or G.cfg.neural_rendering_resolution
    device = next(G.parameters()).device
    r = G.cfg.rendering
    sampling = SamplingSettings(exact=True, depth_resolution=r.depth_resolution * SAMPLES_FACTOR,
                                depth_resolution_importance=r.depth_resolution_importance * SAMPLES_FACTOR)
    views = []
    for yaw in yaws:
        label = camera_label(G.cfg, yaw=yaw)
        out = G.render(planes, ws, torch.from_numpy(label)[None].to(device), resolution=res,
                       sampling=sampling, run_sr=False)
        c2w, k = cameras.split_label(label)
        mesh_depth = render_depth(mesh.vertices, mesh.faces, c2w, k, res, res, kind="ray")
        gen_depth = out["image_depth"][0, 0].cpu().numpy()
        gen_mask = out["image_alpha"][0, 0].cpu().numpy() > 0.5
        mesh_mask = np.isfinite(mesh_depth)
        both = mesh_mask & gen_mask
        diff = mesh_depth[both] - gen_depth[both]
        views.append(ViewAlignment(
            yaw=float(yaw), iou=silhouette_iou(mesh_mask, gen_mask),
            depth_error=float(np.median(np.abs(diff))) if diff.size else float("nan"),
            depth_offset=float(np.median(diff)) if diff.size else float("nan")))
    return views


def latent_alignment(G: Any, planes: list[torch.Tensor], ws: torch.Tensor,
                     settings: MeshSettings = ALIGNMENT_SETTINGS, yaws: Sequence[float] = (0.0, 30.0),
                     ) -> list[ViewAlignment]:
    """Mesh one latent's field at ``settings.level`` (None: the model's own) and compare it with its renders."""
    mesh = extract_mesh(GeneratorField(G, planes), settings)
    return view_alignment(G, planes, ws, mesh, yaws)


def summarise(views: Sequence[ViewAlignment]) -> dict[str, Any]:
    """Means over views (the eval report's ``mesh`` section)."""
    rows = [asdict(v) for v in views]
    return {"views": len(rows),
            **{f"{k}_mean": float(np.nanmean([r[k] for r in rows])) for k in ("iou", "depth_error", "depth_offset")},
            "iou_min": float(min(r["iou"] for r in rows)),
            "depth_error_max": float(np.nanmax([r["depth_error"] for r in rows]))}
