# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing generated views: one PNG, depth .npy and camera per view, a contact sheet, and ``views.json``.

Files are written atomically (``backend.fileio``), so a killed job never leaves a half-written image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backend.fileio import write_json, write_npy, write_png
from backend.views.rgbd import RGBDView


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(rgb) * 255.0), 0, 255).astype(np.uint8)


def depth_preview(view: RGBDView) -> np.ndarray:
    """Depth as a grey uint8 image (near = white, far = black) over the camera's depth range."""
    near, far = view.camera.depth_range()
    inv = (1.0 / np.maximum(view.z, 1e-6) - 1.0 / far) / (1.0 / near - 1.0 / far)
    g = to_uint8(np.clip(inv, 0, 1))
    return np.repeat(g[..., None], 3, axis=2)


def contact_sheet(views: list[RGBDView], cols: int = 9, with_depth: bool = True) -> np.ndarray:
    """Views (and their depth below each row) tiled into one uint8 image."""
    h, w = views[0].rgb.shape[:2]
    rows = (len(views) + cols - 1) // cols
    per = 2 if with_depth else 1
    sheet = np.zeros((rows * per * h, min(cols, len(views)) * w, 3), dtype=np.uint8)
    for i, v in enumerate(views):
        r, c = divmod(i, cols)
        sheet[r * per * h: r * per * h + h, c * w: (c + 1) * w] = to_uint8(v.rgb)
        if with_depth:
            sheet[(r * per + 1) * h: (r * per + 2) * h, c * w: (c + 1) * w] = depth_preview(v)
    return sheet


def sheet_layout(angles: list[tuple[float, float]]) -> tuple[list[int], int]:
    """Where each view goes on the contact sheet: a turntable read left to right (yaw ascending), one row per
    pitch from the highest camera down, whatever order the views were generated in (a trajectory grows
    outward from the first view: 0, +30, −30, …). Returns the view indices in sheet order and the columns
    (the number of yaws when the views form a full yaw × pitch grid, else up to 9 per row)."""
    order = sorted(range(len(angles)), key=lambda i: (-angles[i][1], angles[i][0]))
    yaws = {round(a[0], 6) for a in angles}
    pitches = {round(a[1], 6) for a in angles}
    grid = len(yaws) * len(pitches) == len(angles)
    return order, (len(yaws) if grid and len(yaws) <= 16 else min(9, max(1, len(angles))))


def save_views(views: list[RGBDView], angles: list[tuple[float, float]], out: Path,
               extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``view_NN.png``, ``view_NN_depth.npy`` (camera-space z) and ``views.json`` (files numbered in
    generation order) and ``sheet.png`` (laid out by angle, :func:`sheet_layout`)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    records = []
    for i, (v, (yaw, pitch)) in enumerate(zip(views, angles)):
        png, npy = out / f"view_{i:02d}.png", out / f"view_{i:02d}_depth.npy"
        write_png(png, to_uint8(v.rgb))
        write_npy(npy, v.z.astype(np.float32))
        paths += [png, npy]
        records.append({"index": i, "yaw_deg": yaw, "pitch_deg": pitch, "image": png.name, "depth": npy.name,
                        "camera": v.camera.to_dict()})
    sheet = out / "sheet.png"
    order, cols = sheet_layout(angles)
    write_png(sheet, contact_sheet([views[i] for i in order], cols=cols))
    meta = out / "views.json"
    write_json(meta, {"views": records, "depth": "camera-space z in world units (float32); the backdrop is at "
                      "the camera's far plane", **(extra or {})})
    return [*paths, sheet, meta]
