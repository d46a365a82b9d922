"""Writing sampled views to files: images, 16-bit depth, depth in world units, the camera as JSON, videos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from backend import cameras
from backend.errors import Aware3DError
from backend.fileio import atomic_path, write_json, write_npy, write_png
from backend.sampling import View


def depth_to_uint16(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Linear 16-bit encoding: value v ↔ depth = near + v / 65535 · (far − near)."""
    d = np.nan_to_num(depth, nan=far, posinf=far, neginf=near)
    v = (d - near) / max(far - near, 1e-12)
    return np.round(np.clip(v, 0, 1) * 65535).astype(np.uint16)


def camera_json(label: np.ndarray, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    c2w, K = cameras.split_label(label)
    return {
        "label": [float(x) for x in label],
        "cam2world": c2w.tolist(),
        "intrinsics": K.tolist(),
        "focal": float(K[0, 0]),
        "fov_deg": cameras.focal_to_fov(float(K[0, 0])),
        "convention": "cam2world in OpenCV axes (x right, y down, z forward); world y up, face towards +z; "
                      "intrinsics normalised by the image width",
        **(extra or {}),
    }


def save_view(view: View, out_dir: Path, stem: str, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``stem.png`` (final), ``stem_raw.png``, ``stem_depth.png`` (16-bit), ``stem_depth.npy`` (world
    units) and ``stem_camera.json``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    finite = view.depth[np.isfinite(view.depth)]
    near = float(finite.min()) if finite.size else 0.0
    far = float(finite.max()) if finite.size else 1.0
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}_raw.png", out_dir / f"{stem}_depth.png",
             out_dir / f"{stem}_depth.npy", out_dir / f"{stem}_camera.json"]
    write_png(paths[0], view.image)
    write_png(paths[1], view.raw)
    write_png(paths[2], depth_to_uint16(view.depth, near, far))
    write_npy(paths[3], view.depth.astype(np.float32))
    info = {
        "depth": {
            "npy": "distance along the unit camera ray, world units (float32)",
            "png16": {"near": near, "far": far,
                      "decode": "depth = near + value / 65535 * (far - near)"},
        },
        **(extra or {}),
    }
    write_json(paths[4], camera_json(view.label, info))
    return paths


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """Write frames as .mp4 (H.264 through imageio-ffmpeg) or .gif, atomically."""
    import imageio.v2 as imageio

    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise Aware3DError(f"unsupported video format {suffix!r}", "use .mp4 or .gif")
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".mp4":
            writer = imageio.get_writer(os.fspath(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                        quality=8, pixelformat="yuv420p", macro_block_size=1)
            try:
                for f in frames:
                    writer.append_data(f)
            finally:
                writer.close()
        else:
            imageio.mimsave(os.fspath(tmp), frames, format="GIF", duration=1000 / fps, loop=0)
    return path
