# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera-aligned textures: generate a view per camera, conditioned on the mesh, and bake them into UVs.

The loop (spec §11.2, sequential as in TEXTure/Text2Tex), for each camera in order:

1. render the mesh's *current* colours (its own colours at first, then the texture built so far) and
   depth into the camera (``render_mesh``, supersampled, with coverage);
2. build the ``Condition``: colour known where the mesh is seen well, depth from the render
   (``backend.texture.visibility``);
3. call the view generator (diffusion, or the projection baseline);
4. project the generated view back: every texel (and, for the per-camera layers, every vertex) gets the
   weight ``visible · cos^p · feather · (1 − near_edge)`` and the view's colour at its projection, and
   the texture takes it where this view sees it about as well as or clearly better than the earlier
   ones (``backend.texture.bake.SequentialBlend``); the next camera is conditioned on the result.

Outputs: a UV-textured mesh (xatlas, or the mesh's own UVs), per camera the projected UV layer and
vertex weights, the generated views, and a report (per-camera PSNR of the textured mesh against its
view, and faces seen well by some camera that ended up untextured). :func:`write_outputs` writes them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import Aware3DError
from backend.fileio import atomic_path, write_json, write_png
from backend.mesh.cleanup import vertex_normals
from backend.mesh.data import Mesh
from backend.mesh.texture import texel_geometry
from backend.texture import bake, frame
from backend.texture.cameras_io import resize_cameras, save_cameras
from backend.texture.generators import ViewGenerator
from backend.texture.project import projected_uv, render_texture, sample_bilinear
from backend.texture.visibility import (
    ViewGeometry,
    WeightOptions,
    fragment_cos,
    make_condition,
    view_geometry,
    view_weights,
)
from backend.views.rgbd import Camera, Condition, RGBDView

Progress = Callable[[int, int, str, "Path | None"], None]
"""``progress(done, total, message, preview_path)``: ``done`` of ``total`` views finished; the path of
the view just written (when ``view_dir`` is given) so a front end can show it."""

DEFAULT_GREY = 0.5


@dataclass
class TextureOptions:
    """Everything beyond the main arguments of :func:`texture_mesh` (defaults follow spec §11.2)."""

    max_angle: float = 70.0
    supersample: int = 3
    edge_px: float | None = None  # None: size / 32 (2 px at 64 px views)
    depth_edge: float = 0.03
    feather: float = 0.08
    depth_eps: float = 0.01
    depth_tolerance: float = 0.03
    refine_gain: float = 0.2
    use_mesh_uvs: bool = True
    square: bool | None = None  # generate non-square cameras over their square cover; None: if the generator asks


@dataclass
class CameraProjection:
    """Per camera, on the *input* mesh's vertices: Blender image UVs [V, 2] and weights [V]."""

    name: str
    camera: Camera
    uv: np.ndarray
    weight: np.ndarray


@dataclass
class TextureResult:
    """The textured mesh (UV-split vertices, glTF UVs, sRGB uint8 texture), the generated views, the
    per-camera projections and a JSON-able ``report``."""

    mesh: Mesh
    views: list[RGBDView]
    projections: list[CameraProjection]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]


def _validate(mesh: Mesh, cameras: Sequence[Camera], size: int | None, texture_size: int,
              exponent: float, options: TextureOptions) -> None:
    if mesh.num_faces == 0 or mesh.num_vertices == 0:
        raise Aware3DError("the mesh has no triangles", "give a mesh made by 'aware3d mesh'")
    f = np.asarray(mesh.faces)
    if f.ndim != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= mesh.num_vertices:
        raise Aware3DError("the mesh's faces are not triangles indexing its vertices", "export it again")
    if not np.isfinite(np.asarray(mesh.vertices, dtype=np.float64)).all():
        raise Aware3DError("the mesh has non-finite vertex positions", "export it again")
    if not cameras:
        raise Aware3DError("no cameras given", "give a cameras.json or ring:N, e.g. ring:8")
    if size is not None and not 16 <= size <= 4096:
        raise Aware3DError(f"view size must be 16-4096 pixels, got {size}", "e.g. --size 64")
    if not 16 <= texture_size <= 8192:
        raise Aware3DError(f"texture size must be 16-8192 pixels, got {texture_size}", "e.g. --texture-size 1024")
    if not 0 < exponent <= 64:
        raise Aware3DError(f"the weight exponent must be in (0, 64], got {exponent}", "e.g. --exponent 3")
    if not 0 < options.max_angle < 90:
        raise Aware3DError(f"max_angle must be in (0, 90) degrees, got {options.max_angle}", "e.g. 70")
    if options.supersample < 1:
        raise Aware3DError("supersample must be at least 1", "e.g. 3")


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    if not mask.any():
        return None
    mse = float(np.mean((np.asarray(a, np.float64)[mask] - np.asarray(b, np.float64)[mask]) ** 2))
    return round(min(100.0, 10.0 * float(np.log10(1.0 / max(mse, 1e-10)))), 3)  # capped: JSON has no inf


def _check_view(view: RGBDView, camera: Camera, index: int) -> np.ndarray:
    """The generated view's pixel scale relative to ``camera`` ([sx, sy]); a generator may answer at
    its own resolution (the diffusion model's) as long as the field of view is the camera's."""
    rgb, z = np.shape(view.rgb), np.shape(view.z)
    if len(rgb) != 3 or rgb[2] != 3 or z != rgb[:2] or min(z) < 1:
        raise ValueError(f"view generator returned rgb {rgb} / z {z} for camera {index}; expected "
                         f"[H, W, 3] / [H, W]")
    if abs(z[1] / z[0] - camera.width / camera.height) > 0.02 * camera.width / camera.height:
        raise ValueError(f"view generator returned a {z[1]}x{z[0]} view for the {camera.width}x"
                         f"{camera.height} camera {index}: the aspect ratio differs (a generator that "
                         f"only makes square views must say so: backend.texture.frame.SQUARE_ATTR)")
    return np.array([z[1] / camera.width, z[0] / camera.height])


def _keep_mesh_depth(view: RGBDView, condition: Condition) -> RGBDView:
    """The mesh is the geometry: where the condition gave its depth, the view keeps it (the generator was told
    it and only adds colour there), so the depth-agreement test rejects only geometry the generator invented."""
    if view.z.shape != condition.z.shape:
        return view
    return RGBDView(view.rgb, np.where(condition.depth_mask, condition.z, view.z).astype(np.float32), view.camera)


def _at_camera_size(image: np.ndarray, camera: Camera) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (camera.width, camera.height):
        return image
    interp = cv2.INTER_AREA if w > camera.width else cv2.INTER_LINEAR
    return cv2.resize(np.asarray(image, np.float32), (camera.width, camera.height), interpolation=interp)


def _generate(generator: ViewGenerator, condition: Any, step: Callable[[int, int], None] | None) -> RGBDView:
    """One view; a generator that takes ``progress`` (the diffusion one) reports every denoising step, so a
    raising ``step`` (a cancel) stops it within a step instead of after the whole view."""
    try:
        takes = step is not None and "progress" in inspect.signature(generator).parameters
    except (TypeError, ValueError):  # a callable without a signature: no per-step reports
        takes = False
    if takes:
        return generator(condition, progress=step)  # type: ignore[call-arg]
    return generator(condition)


def texture_mesh(
    mesh: Mesh,
    cameras: Sequence[Camera],
    generator: ViewGenerator,
    size: int | None = 64,
    texture_size: int = 1024,
    exponent: float = 3.0,
    progress: Progress | None = None,
    *,
    names: Sequence[str] | None = None,
    options: TextureOptions | None = None,
    view_dir: str | Path | None = None,
) -> TextureResult:
    """Texture ``mesh`` (generator world) from ``cameras`` in order with ``generator`` (module docstring).

    ``size``: the longer side of every view in pixels (None keeps each camera's own size);
    ``texture_size``: the atlas size; ``exponent``: p of the cos^p weight. When ``view_dir`` is given each
    generated view is written there as ``cam_XX.png`` as soon as it exists (the progress preview).
    """
    opts = options or TextureOptions()
    _validate(mesh, cameras, size, texture_size, exponent, opts)
    cams = resize_cameras(cameras, size)
    cam_names = list(names) if names is not None else [f"cam_{i:02d}" for i in range(len(cams))]
    if len(cam_names) != len(cams):
        raise ValueError("names and cameras differ in length")
    edge_px = opts.edge_px if opts.edge_px is not None else max(1.0, max(max(c.width, c.height) for c in cams) / 32)
    wopts = WeightOptions(exponent=exponent, max_angle=opts.max_angle, edge_px=edge_px,
                          depth_edge=opts.depth_edge, feather=opts.feather, depth_eps=opts.depth_eps,
                          depth_tolerance=opts.depth_tolerance)
    total = len(cams)
    seconds: dict[str, float] = {}
    t_all = t = time.perf_counter()

    def tick(key: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[key] = seconds.get(key, 0.0) + now - t
        t = now

    def report(done: int, message: str, preview: Path | None = None) -> None:
        if progress is not None:
            progress(done, total, message, preview)

    # Geometry: input vertices, and the UV-split copy the texture lives on (xatlas keeps face order).
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    normals = (np.asarray(mesh.normals, dtype=np.float64) if mesh.normals is not None
               else vertex_normals(verts, faces).astype(np.float64))
    own_uvs = opts.use_mesh_uvs and mesh.uvs is not None and mesh.texture is not None
    report(0, "unwrapping UVs" if not own_uvs else "using the mesh's UVs")
    if own_uvs:
        vmap, faces_u, uvs = np.arange(len(verts)), faces, np.asarray(mesh.uvs, dtype=np.float64)
    else:
        from backend.mesh.texture import unwrap

        vmap, faces_u, uvs = unwrap(verts, faces, None if progress is None else
                                    lambda i, n: report(0, "unwrapping UVs"))
    verts_u, normals_u = verts[vmap], normals[vmap]
    tick("unwrap")
    geom = texel_geometry(verts_u, faces_u, normals_u, uvs, texture_size,
                          None if progress is None else lambda i, n: report(0, "rasterising the texture atlas"))
    if own_uvs:
        base = bake.texel_colours_from_texture(geom, mesh.texture)  # type: ignore[arg-type]
    elif mesh.colours is not None:
        base = bake.texel_colours_from_vertices(geom, faces, mesh.colours)
    else:
        base = np.full((geom.count, 3), DEFAULT_GREY)
    blend = bake.SequentialBlend(base, opts.refine_gain)
    tick("texel_geometry")

    views: list[RGBDView] = []
    projections: list[CameraProjection] = []
    geometries: list[ViewGeometry] = []
    per_camera: list[dict[str, Any]] = []
    square = opts.square if opts.square is not None else frame.square_resolution(generator) is not None
    for k, (name, cam) in enumerate(zip(cam_names, cams, strict=True)):
        vg = view_geometry(verts_u, faces_u, normals_u, cam, wopts, opts.supersample)
        current = bake.compose(geom, blend.colours())
        cover = frame.square_cover(cam) if square and cam.width != cam.height else None
        gvg = vg if cover is None else view_geometry(verts_u, faces_u, normals_u, cover.square, wopts,
                                                     opts.supersample)
        condition = make_condition(gvg, render_texture(gvg.render, verts_u, faces_u, uvs, current, gvg.camera))
        tick("render")
        view = _keep_mesh_depth(_generate(generator, condition, None if progress is None else
                                          lambda i, n, k=k: report(k, f"view {k + 1}/{total}: step {i}/{n}")),
                                condition)
        generated = [int(np.shape(view.z)[1]), int(np.shape(view.z)[0])]
        if cover is not None:
            view = frame.crop_view(view, cover)
        scale = _check_view(view, cam, k)
        tick("generate")
        tw = view_weights(geom.position, geom.normal, vg, wopts, view.z)
        colours = np.zeros((geom.count, 3))
        hit = tw.weight > 0
        colours[hit] = sample_bilinear(view.rgb, tw.xy[hit] * scale)
        eff = blend.add(colours, tw.weight, tw.cos)
        vw = view_weights(verts, normals, vg, wopts, view.z)
        projections.append(CameraProjection(name, cam, projected_uv(verts, cam), vw.weight.astype(np.float32)))
        tick("project")
        views.append(view)
        geometries.append(vg)
        per_camera.append({"name": name, "width": cam.width, "height": cam.height,
                           "view_size": [int(np.shape(view.z)[1]), int(np.shape(view.z)[0])],
                           "generated_size": generated, "square_cover": cover is not None,
                           "seen_pixels": int(vg.seen.sum()), "texels_weighted": int((tw.weight > 0).sum()),
                           "texels_taken": int((eff > 0).sum())})
        preview = None
        if view_dir is not None:
            preview = Path(view_dir) / f"cam_{k:02d}.png"
            write_png(preview, bake.to_uint8(view.rgb))
            tick("write")
        report(k + 1, f"view {k + 1}/{total} ({name})", preview)

    texture = bake.to_uint8(bake.compose(geom, blend.colours()))
    tick("bake")

    # Check: render the final textured mesh from every camera against its generated view.
    final = texture.astype(np.float32) / 255.0
    seen_faces: set[int] = set()
    drawn_faces: set[int] = set()
    for vg, view, info in zip(geometries, views, per_camera, strict=True):
        rgb = render_texture(vg.render, verts_u, faces_u, uvs, final, vg.camera)
        target = _at_camera_size(view.rgb, vg.camera)
        info["psnr"] = _psnr(rgb, target, vg.covered)
        info["psnr_seen"] = _psnr(rgb, target, vg.seen)
        s = vg.render.supersample
        face = vg.render.face
        # a face counts as seen where one of its own fragments passes the angle test in a well-seen pixel
        seen_sub = np.repeat(np.repeat(vg.seen, s, axis=0), s, axis=1) & (fragment_cos(vg) > wopts.min_cos)
        seen_faces.update(np.unique(face[seen_sub & (face >= 0)]).tolist())
        drawn_faces.update(np.unique(face[face >= 0]).tolist())
    has_texels = np.zeros(len(faces), dtype=bool)
    has_texels[geom.face] = True
    textured = np.zeros(len(faces), dtype=bool)
    textured[geom.face[blend.painted]] = True
    seen = np.zeros(len(faces), dtype=bool)
    seen[list(seen_faces)] = True
    drawn = np.zeros(len(faces), dtype=bool)
    drawn[list(drawn_faces)] = True
    tick("evaluate")
    seconds["total"] = time.perf_counter() - t_all

    out_mesh = Mesh(verts_u.astype(np.float32), faces_u.astype(np.int64), normals_u.astype(np.float32),
                    None, uvs.astype(np.float32), texture)
    result_report = {
        "vertices": len(verts), "faces": len(faces), "uv_vertices": len(verts_u),
        "texture_size": int(texture_size), "exponent": float(exponent), "uvs": "mesh" if own_uvs else "xatlas",
        "texels_covered": int(geom.count), "texels_painted": int(blend.painted.sum()),
        "faces_seen": int(seen.sum()),
        "faces_seen_untextured": int((seen & has_texels & ~textured).sum()),
        "faces_drawn_untextured": int((drawn & has_texels & ~textured).sum()),
        "faces_without_texels": int((~has_texels).sum()),
        "options": {**{k: v for k, v in vars(opts).items()}, "edge_px": float(edge_px)},
        "cameras": per_camera,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
    return TextureResult(out_mesh, views, projections, result_report)


def write_outputs(result: TextureResult, out_dir: str | Path, axes: str = "blender",
                  extra: dict[str, Any] | None = None) -> list[Path]:
    """Write the output folder (docs/texture.md): textured.glb, texture.png, views/cam_XX.png,
    projection.npz, cameras.json and texture.json (last, so its presence means the rest is there)."""
    from backend.mesh.export import save_mesh

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    written: list[Path] = []
    for k, view in enumerate(result.views):
        p = out / "views" / f"cam_{k:02d}.png"
        write_png(p, bake.to_uint8(view.rgb))
        written.append(p)
    written += save_mesh(result.mesh, out / "textured.glb", axes=axes)
    write_png(out / "texture.png", result.mesh.texture)  # type: ignore[arg-type]
    written.append(out / "texture.png")
    proj = result.projections
    with atomic_path(out / "projection.npz", suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            names=np.array(result.names),
            uv=np.stack([p.uv for p in proj]).astype(np.float32),
            weight=np.stack([p.weight for p in proj]).astype(np.float32),
            cam2world=np.stack([p.camera.cam2world for p in proj]).astype(np.float32),
            K=np.stack([p.camera.K for p in proj]).astype(np.float32),
            size=np.array([[p.camera.width, p.camera.height] for p in proj], dtype=np.int32),
        )
    written.append(out / "projection.npz")
    save_cameras(out / "cameras.json", [(p.name, p.camera) for p in proj])
    written.append(out / "cameras.json")
    summary = dict(result.report)
    summary["seconds"] = {**summary.get("seconds", {}), "write": round(time.perf_counter() - t, 4)}
    summary = {**(extra or {}), **summary, "axes": axes,
               "files": [str(p.relative_to(out)) for p in written] + ["texture.json"]}
    write_json(out / "texture.json", summary)
    written.append(out / "texture.json")
    return written
