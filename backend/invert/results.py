# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing an inversion's products to a folder: avatar, renders, pseudo views, orbit video, mesh, report.

One function for the CLI and the server, so both produce the same files:

* ``input.png`` (the framed photo the generator saw) and ``crop_preview.png`` (the photo with the crop);
* ``NAME.avatar.safetensors``;
* ``render.png`` (+ ``_raw``, 16-bit depth, ``_depth.npy``, ``_camera.json``: ``backend.outputs.save_view``) at
  the photo's camera, and ``view_yaw±N.png`` at novel yaws relative to it;
* ``pseudo_views.png``: every pseudo view over its soft mask, so the visibility analysis can be checked;
* ``orbit.mp4`` (or .gif) around the photo's own pose;
* ``head.glb`` (or .obj/.ply) through ``backend.mesh``; if the tuned field has no surface at the requested
  density level (early or very small models), the level is lowered to the median density at the rendered
  input-view surface, and the report says so;
* ``report.json``: pose, crop, settings, timings per stage, input-view metrics, files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.invert.geometry import orbit_labels, unproject
from backend.invert.pipeline import Inversion
from backend.sampling import Latent, View, render_view, to_uint8

Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class OutputOptions:
    name: str = "avatar"
    renders: bool = True
    novel_yaws: tuple[float, ...] = (-30.0, 30.0)
    orbit_frames: int = 48  # 0: no video
    orbit_format: str = "mp4"
    orbit_yaw: float = 30.0
    orbit_pitch: float = 8.0
    mesh: bool = True
    mesh_format: str | None = "glb"  # None: build the mesh (Written.mesh) but write no file
    mesh_resolution: int = 128
    mesh_faces: int = 20_000
    mesh_level: float | None = None  # None: the model's own (GeneratorConfig.mesh_level)
    mesh_axes: str = "blender"
    store: str = "delta"
    keep_geometry: bool = True  # stage-1 depth and pseudo views in the avatar (texture editing needs them)


@dataclass
class Written:
    files: dict[str, Path]  # role → path
    report: dict[str, Any]
    mesh: Any = None  # backend.mesh.Mesh in generator coordinates, when one was made
    extra: dict[str, Any] = field(default_factory=dict)


def stage1_tensors(inv: Inversion) -> dict[str, torch.Tensor]:
    """What texture editing needs from stage 1, for the avatar file."""
    if inv.input_depth is None or not inv.pseudo:
        return {"input.image": inv.target}
    return {
        "input.image": inv.target,
        "stage1.input_depth": inv.input_depth,
        "stage1.poses": torch.tensor([[v.yaw, v.pitch] for v in inv.pseudo]),
        "stage1.labels": torch.cat([v.label for v in inv.pseudo]),
        "stage1.depths": torch.cat([v.depth for v in inv.pseudo]),
        "stage1.fills": torch.cat([v.fill for v in inv.pseudo]),
    }


def latent_of(G: TriPlaneGenerator, ws: torch.Tensor) -> Latent:
    with torch.no_grad():
        return Latent(None, ws, G.synthesize_planes(ws, noise_mode="const"))


def view_at(G: TriPlaneGenerator, latent: Latent, yaw: float, pitch: float) -> View:
    from backend.render.renderer import SamplingSettings

    label = orbit_labels(G.cfg, yaw, pitch)[0].numpy()
    return render_view(G, latent, label, sampling=SamplingSettings(exact=True))


def pseudo_sheet(inv: Inversion, columns: int = 6) -> np.ndarray | None:
    """Pseudo views (top) over their soft masks (bottom), tiled: uint8 RGB."""
    if not inv.pseudo:
        return None
    tiles = []
    for v in inv.pseudo:
        img = to_uint8(v.image[0])
        m = (v.mask[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)
        tiles.append(np.concatenate([img, np.repeat(m[..., None], 3, axis=2)], axis=0))
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (h + 2), min(columns, len(tiles)) * (w + 2), 3), 24, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = t
    return sheet


def surface_level(G: TriPlaneGenerator, latent: Latent, label: torch.Tensor) -> float:
    """Median raw density at the rendered input-view surface (foreground pixels), for a fallback level."""
    from backend.render.renderer import SamplingSettings

    with torch.no_grad():
        out = G.render(latent.planes, latent.ws, label, sampling=SamplingSettings(exact=True), run_sr=False)
        pts = unproject(out["image_depth"], label).reshape(1, -1, 3)
        fg = (out["image_alpha"].reshape(-1) > 0.5)
        if not bool(fg.any()):
            fg = torch.ones_like(fg)
        sigma = G.query(latent.planes, pts)["sigma"][0, :, 0][fg]
    return float(sigma.median())


def write_mesh(G: TriPlaneGenerator, latent: Latent, label: torch.Tensor, path: Path | None, opts: OutputOptions,
               progress: Progress | None = None) -> tuple[Any, list[Path], dict[str, Any]]:
    """Mesh the tuned field; returns (mesh, written paths, info incl. the level used)."""
    from backend.mesh.export import save_mesh
    from backend.mesh.field import GeneratorField
    from backend.mesh.pipeline import MeshSettings, extract_mesh

    gfield = GeneratorField(G, latent.planes)

    spans = {"grid": (0.0, 0.7), "marching_cubes": (0.7, 0.8), "cleanup": (0.8, 0.9), "colours": (0.9, 1.0)}
    done = [0]

    def stage_progress(stage: str, frac: float) -> None:
        """The mesh pipeline's sub-stages as one monotonic bar (grid queries dominate; a retry at a lower
        level does not move it back)."""
        if progress is not None:
            lo, hi = spans.get(stage, (0.9, 1.0))
            done[0] = max(done[0], min(99, round(100 * (lo + (hi - lo) * frac))))
            progress("mesh", done[0], 100, stage.replace("_", " "))

    level = opts.mesh_level if opts.mesh_level is not None else gfield.level
    info: dict[str, Any] = {"requested_level": level}
    settings = MeshSettings(resolution=opts.mesh_resolution, level=level, target_faces=opts.mesh_faces or None)
    try:
        mesh = extract_mesh(gfield, settings, progress=stage_progress)
    except Aware3DError:
        level = surface_level(G, latent, label)
        info["fallback"] = "no surface at the requested level: used the median density at the input surface"
        mesh = extract_mesh(gfield, replace(settings, level=level), progress=stage_progress)
    if progress is not None:
        progress("mesh", 100, 100, "done")
    info["level"] = round(level, 4)
    info["vertices"], info["faces"] = mesh.num_vertices, mesh.num_faces
    written = save_mesh(mesh, path, axes=opts.mesh_axes) if path is not None else []
    return mesh, written, info


def write_outputs(out_dir: Path, inv: Inversion, G_base: TriPlaneGenerator, base: dict[str, Any],
                  opts: OutputOptions, source: dict[str, Any] | None = None,
                  crop_preview: np.ndarray | None = None, progress: Progress | None = None,
                  ) -> Written:
    """Write everything listed in the module docstring."""
    from backend.fileio import write_json, write_png
    from backend.invert.avatar import save_avatar
    from backend.outputs import save_view, write_video

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    mesh = None
    seconds: dict[str, float] = {}
    G = inv.G
    t = time.perf_counter()
    files["input"] = out_dir / "input.png"
    write_png(files["input"], to_uint8(inv.target[0].cpu()))
    if crop_preview is not None:
        files["crop_preview"] = out_dir / "crop_preview.png"
        write_png(files["crop_preview"], crop_preview)
    report: dict[str, Any] = {**inv.summary(), "source": source or {}, "base_model": base,
                              "settings": inv.settings.to_dict()}
    files["avatar"] = save_avatar(out_dir / f"{opts.name}.avatar.safetensors", G_base, G, inv.ws, inv.label, base,
                                  {"source": source or {}, "summary": inv.summary(),
                                   "settings": inv.settings.to_dict()},
                                  stage1_tensors(inv) if opts.keep_geometry else None, opts.store)
    seconds["avatar"] = time.perf_counter() - t
    latent = latent_of(G, inv.ws)
    if opts.renders:
        t = time.perf_counter()
        view = view_at(G, latent, inv.yaw, inv.pitch)
        extra = {"avatar": files["avatar"].name, "yaw_deg": inv.yaw, "pitch_deg": inv.pitch}
        paths = save_view(view, out_dir, "render", extra)
        files["render"] = paths[0]
        files["render_depth"] = paths[3]
        files["render_camera"] = paths[4]
        for dy in opts.novel_yaws:
            v = view_at(G, latent, inv.yaw + dy, inv.pitch)
            files[f"view_yaw{dy:+g}"] = out_dir / f"view_yaw{dy:+g}.png"
            write_png(files[f"view_yaw{dy:+g}"], v.image)
        sheet = pseudo_sheet(inv)
        if sheet is not None:
            files["pseudo_views"] = out_dir / "pseudo_views.png"
            write_png(files["pseudo_views"], sheet)
        seconds["renders"] = time.perf_counter() - t
        if progress is not None:
            progress("renders", 1, 1, "renders written")
    if opts.orbit_frames:
        t = time.perf_counter()
        frames = []
        import math

        for i in range(opts.orbit_frames):
            a = 2 * math.pi * i / opts.orbit_frames
            frames.append(view_at(G, latent, inv.yaw + opts.orbit_yaw * math.sin(a),
                                  inv.pitch + opts.orbit_pitch * math.cos(a)).image)
            if progress is not None:
                progress("video", i + 1, opts.orbit_frames, "orbit video")
        files["orbit"] = write_video(out_dir / f"orbit.{opts.orbit_format}", frames)
        seconds["video"] = time.perf_counter() - t
    if opts.mesh:
        t = time.perf_counter()
        path = out_dir / f"head.{opts.mesh_format}" if opts.mesh_format else None
        mesh, written, info = write_mesh(G, latent, inv.label, path, opts, progress)
        if written:
            files["mesh"] = written[0]
            for p in written[1:]:
                files[p.name] = p
        report["mesh"] = info
        seconds["mesh"] = time.perf_counter() - t
    report["output_seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    report["files"] = {k: p.name for k, p in files.items()}
    files["report"] = out_dir / "report.json"
    write_json(files["report"], report)
    return Written(files, report, mesh)
