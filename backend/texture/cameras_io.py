# SPDX-License-Identifier: GPL-3.0-or-later
"""Cameras for texturing: read a ``cameras.json`` (generator or Blender form), write one, or make a ring.

Why two forms: scripts and the backend think in generator world (EG3D cam2world, normalised K), while a
user who placed cameras in Blender has ``matrix_world``, lens and sensor numbers. Both are read into
``backend.views.rgbd.Camera`` (generator world) through ``backend.cameras``' exact Blender<->EG3D
conversion, and ``cameras.json`` written by ``aware3d texture`` holds both forms for every camera.

File format: a JSON list of cameras, or ``{"cameras": [...]}``. Each camera is either

* generator form: ``{"name", "cam2world": 4x4, "K": 3x3 normalised, "width", "height"[, "pivot": 3]}``, or
* Blender form: ``{"name", "matrix_world": 4x4 (metres, Z up), "lens" (mm), "sensor_width" (mm),
  "sensor_fit": "AUTO"|"HORIZONTAL"|"VERTICAL", "resolution_x", "resolution_y"[, "sensor_height",
  "shift_x", "shift_y", "resolution_percentage"]}``.

When both are present the generator form wins. ``pivot`` (what the depth convention measures the camera
distance to; default the FFHQ pivot) is generator world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend import cameras
from backend.errors import Aware3DError
from backend.fileio import write_json
from backend.views.rgbd import Camera, orbit

MIN_SIZE = 8


def ring_yaws(n: int) -> list[float]:
    """Yaw angles of an n-camera ring, frontal first then alternating sides (0, +45, −45, ..., 180 for 8).

    Why this order: the frontal view (the one a head generator is best at) is generated first, and every
    later view has an already-textured neighbour on the side it turns from, so sequential texturing grows
    outwards from the face symmetrically instead of wrapping around one side.
    """
    if n < 1:
        raise ValueError("a ring needs at least one camera")
    step = 360.0 / n
    yaws = [0.0]
    k = 1
    while len(yaws) < n:
        yaws.append(k * step)
        if len(yaws) < n:
            yaws.append(-k * step)
        k += 1
    return yaws


def ring(n: int, pitch: float = 0.0, size: int = 64) -> list[tuple[str, Camera]]:
    """``n`` FFHQ orbit cameras (radius 2.7, looking at the pivot) at ``pitch`` degrees, named by yaw."""
    if not 1 <= n <= 360:
        raise Aware3DError(f"a camera ring needs 1 to 360 cameras, got {n}", "e.g. --cameras ring:8")
    if not -89.0 <= pitch <= 89.0:
        raise Aware3DError(f"--pitch must be between -89 and 89 degrees, got {pitch}", "e.g. --pitch 0")
    return [(f"yaw{yaw:+04.0f}", orbit(yaw, pitch, size)) for yaw in ring_yaws(n)]


def _matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not a numeric matrix") from exc
    if m.shape != shape or not np.isfinite(m).all():
        raise ValueError(f"{what} must be a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


def _size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if int(value) < MIN_SIZE:
        raise ValueError(f"{what} must be at least {MIN_SIZE}, got {value}")
    return int(value)


def camera_from_generator_dict(d: dict[str, Any]) -> Camera:
    """Generator-form dict -> Camera (checks that cam2world is a rigid pose and K a pinhole)."""
    c2w = _matrix(d["cam2world"], (4, 4), "cam2world")
    r = c2w[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise ValueError("cam2world's rotation is not orthonormal with det +1")
    k = _matrix(d["K"], (3, 3), "K")
    if not (k[0, 0] > 0 and k[1, 1] > 0) or np.abs(k[2] - [0, 0, 1]).max() > 1e-6:
        raise ValueError("K must be normalised intrinsics [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0")
    pivot = d.get("pivot", cameras.FFHQ_PIVOT)
    return Camera(c2w, k, _size(d["width"], "width"), _size(d["height"], "height"),
                  np.asarray(pivot, dtype=np.float64).reshape(3))


def camera_from_blender_dict(d: dict[str, Any]) -> Camera:
    """Blender-form dict -> Camera in generator world (exact inverse of ``eg3d_to_blender_camera``)."""
    mw = _matrix(d["matrix_world"], (4, 4), "matrix_world")
    pct = float(d.get("resolution_percentage", 100)) / 100.0
    width = _size(round(float(d["resolution_x"]) * pct), "resolution_x")
    height = _size(round(float(d["resolution_y"]) * pct), "resolution_y")
    lens, sensor_w = float(d["lens"]), float(d["sensor_width"])
    fit = str(d.get("sensor_fit", "AUTO")).upper()
    if fit not in ("AUTO", "HORIZONTAL", "VERTICAL"):
        raise ValueError(f"sensor_fit must be AUTO, HORIZONTAL or VERTICAL, got {fit!r}")
    shift_x, shift_y = float(d.get("shift_x", 0.0)), float(d.get("shift_y", 0.0))
    aspect = width / height
    vertical = fit == "VERTICAL" or (fit == "AUTO" and height > width)
    if vertical:
        # The sensor spans the image height: fy (heights) = lens / sensor; focal in widths = fy / aspect.
        sensor_v = float(d.get("sensor_height", 24.0)) if fit == "VERTICAL" else sensor_w
        sensor_w = sensor_v * aspect
        # Blender measures lens shift in units of the fitted side (here the height); ours is in widths.
        shift_x, shift_y = shift_x / aspect, shift_y / aspect
    try:
        c2w, focal, cx, cy = cameras.blender_to_eg3d_camera(mw, lens, sensor_w, shift_x, shift_y,
                                                            aspect=aspect)
    except ValueError as exc:
        raise ValueError(str(exc)) from exc
    pivot = d.get("pivot", cameras.FFHQ_PIVOT)
    return Camera(c2w, cameras.intrinsics(focal, cx, cy, aspect=aspect), width, height,
                  np.asarray(pivot, dtype=np.float64).reshape(3))


def camera_to_dict(name: str, camera: Camera) -> dict[str, Any]:
    """Both forms of one camera (what ``cameras.json`` holds); the Blender form assumes square pixels."""
    aspect = camera.width / camera.height
    fx, cx, cy = camera.K[0, 0], camera.K[0, 2], camera.K[1, 2]
    b = cameras.eg3d_to_blender_camera(camera.cam2world, fx, cx, cy, aspect=aspect)
    return {"name": name, **camera.to_dict(), "blender": {
        "matrix_world": np.asarray(b.matrix_world).tolist(), "lens": b.lens_mm,
        "sensor_width": b.sensor_width_mm, "sensor_fit": b.sensor_fit, "shift_x": b.shift_x,
        "shift_y": b.shift_y, "resolution_x": camera.width, "resolution_y": camera.height}}


def parse_cameras(doc: Any, source: str = "cameras") -> list[tuple[str, Camera]]:
    """A decoded ``cameras.json`` document -> [(name, Camera)] (ValueError-free: Aware3DError on bad input)."""
    items = doc.get("cameras") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise Aware3DError(f"{source}: expected a non-empty list of cameras",
                           'write [{"name", "cam2world", "K", "width", "height"}, ...] or {"cameras": [...]}')
    out: list[tuple[str, Camera]] = []
    for i, item in enumerate(items):
        name = str(item.get("name", f"cam_{i:02d}")) if isinstance(item, dict) else f"cam_{i:02d}"
        try:
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
            if "cam2world" in item:
                cam = camera_from_generator_dict(item)
            elif "matrix_world" in item:
                cam = camera_from_blender_dict(item)
            else:
                raise ValueError("needs cam2world/K/width/height or matrix_world/lens/sensor_width/"
                                 "resolution_x/resolution_y")
        except KeyError as exc:
            raise Aware3DError(f"{source}: camera {i} ({name}) lacks {exc.args[0]!r}",
                               "see docs/texture.md for the cameras.json format") from None
        except (ValueError, TypeError) as exc:
            raise Aware3DError(f"{source}: camera {i} ({name}): {exc}",
                               "see docs/texture.md for the cameras.json format") from None
        out.append((name, cam))
    return out


def load_cameras(path: str | os.PathLike[str]) -> list[tuple[str, Camera]]:
    """Read a ``cameras.json`` file (module docstring) into [(name, Camera)] in generator world."""
    p = Path(path)
    if not p.is_file():
        raise Aware3DError(f"camera file {str(p)!r} not found", "give a cameras.json or ring:N, e.g. ring:8")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Aware3DError(f"cannot read {p.name}: {exc}", "it must be a JSON file (see docs/texture.md)") from None
    return parse_cameras(doc, p.name)


def parse_camera_arg(spec: str, pitch: float = 0.0, size: int = 64) -> list[tuple[str, Camera]]:
    """``ring:N`` or a path to a cameras.json (the CLI's ``--cameras``)."""
    if spec.startswith("ring:"):
        count = spec[len("ring:"):]
        if not count.isdigit():
            raise Aware3DError(f"bad camera ring {spec!r}", "use ring:N with a whole number, e.g. ring:8")
        return ring(int(count), pitch, size)
    return load_cameras(spec)


def resize_cameras(cams: Sequence[Camera], size: int | None) -> list[Camera]:
    """Scale every camera so that its longer side is ``size`` pixels (normalised K is unchanged)."""
    if size is None:
        return list(cams)
    out = []
    for c in cams:
        s = size / max(c.width, c.height)
        out.append(c.resized(max(1, round(c.width * s)), max(1, round(c.height * s))))
    return out


def save_cameras(path: str | os.PathLike[str], named: Sequence[tuple[str, Camera]]) -> None:
    """Write ``{"cameras": [...]}`` with both forms of every camera (atomic)."""
    write_json(path, {"cameras": [camera_to_dict(n, c) for n, c in named]})

