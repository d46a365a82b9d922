"""Official EG3D / Mimic3D snapshots (.pkl) → an Aware3D generator config and tensors.

The snapshot is read by :mod:`backend.checkpoints.official_pickle` (a whitelisting unpickler that never runs
the module source embedded in the file). The config is derived from what the file states — the pickled
constructor arguments, rendering kwargs and the renderer's plane axes — and cross-checked against the tensor
shapes, so a file that does not fit is refused with the first mismatching key rather than loaded wrongly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend import cameras
from backend.checkpoints.model_file import file_sha256, save_model
from backend.checkpoints.official_pickle import generator_info, module_state_dict, read_snapshot
from backend.config import SR_BLOCK_CHANNELS, SR_INPUT_RESOLUTION, GeneratorConfig, RenderingConfig
from backend.errors import Aware3DError
from backend.render.triplane import PLANE_AXES

SR_CLASSES = {
    "SuperresolutionHybrid8XDC": "hybrid8xdc",
    "SuperresolutionHybrid4X": "hybrid4x",
    "SuperresolutionHybrid2X": "hybrid2x",
}
RENDERING_KEYS = {
    "ray_start", "ray_end", "depth_resolution", "depth_resolution_importance", "box_warp", "white_back",
    "clamp_mode", "disparity_space_sampling", "avg_camera_radius", "avg_camera_pivot", "c_gen_conditioning_zero",
    "c_scale", "superresolution_noise_mode", "sr_antialias",
}


def projection_from_plane_axes(plane_axes: Any) -> str:
    """Which convention a renderer's ``plane_axes`` implement: the projection is ``coords @ inv(P)[:, :2]``."""
    axes = []
    for p in np.asarray(plane_axes, dtype=np.float64):
        inv = np.linalg.inv(p)
        axes.append((int(np.argmax(np.abs(inv[:, 0]))), int(np.argmax(np.abs(inv[:, 1])))))
    for name, table in PLANE_AXES.items():
        if tuple(axes) == table:
            return name
    raise Aware3DError(f"the snapshot projects onto planes {axes}, which Aware3D does not implement",
                       "only the EG3D (XY, XZ, ZX) and corrected (XY, YZ, ZX) conventions are supported")


def _sr_kind(rendering_kwargs: dict[str, Any], keys: set[str]) -> str:
    module = rendering_kwargs.get("superresolution_module")
    if not any(k.startswith("superresolution.") for k in keys):
        return "none"
    name = str(module).rsplit(".", 1)[-1] if module else ""
    if name not in SR_CLASSES:
        raise Aware3DError(f"unsupported super-resolution module {module!r}",
                           f"supported: {', '.join(SR_CLASSES)}")
    return SR_CLASSES[name]


def neural_rendering_resolution(info: dict[str, Any], img_resolution: int, detail_plane: bool) -> int:
    """The resolution a converted model renders at by default.

    Mimic3D's 3d stage (the one with a detail plane) renders its final image directly at ``img_resolution``,
    as the official inference does. Its snapshots still carry ``neural_rendering_resolution = 64``, the
    resolution its 2D super-resolution branch was trained at, and copying that would make every default
    render a 64² volume render pushed through SR. Any other snapshot renders at the resolution it stores.
    """
    if detail_plane:
        return img_resolution
    return int(info.get("neural_rendering_resolution") or 64)


def config_from_snapshot(info: dict[str, Any], state: dict[str, torch.Tensor], name: str,
                         focal: float | None = None) -> GeneratorConfig:
    """A config from a snapshot's ``generator_info`` and its ``G_ema`` tensors (sizes come from the tensors)."""
    kw = dict(info.get("init_kwargs") or {})
    rk = dict(info.get("rendering_kwargs") or kw.get("rendering_kwargs") or {})
    keys = set(state)
    mimic = info.get("class_name") == "DualTriPlaneGenerator" or any(".b3d" in k for k in keys)
    blocks = sorted(int(m.group(1)) for k in keys if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k)))
    aware = sorted({int(m.group(1)) for k in keys if (m := re.match(r"backbone\.synthesis\.b3d(\d+)\.", k))})
    triplane_res = blocks[-1]
    torgb = state[f"backbone.synthesis.b{triplane_res}.torgb.weight"]
    hidden = state["decoder.net.0.weight"].shape[0]
    sr_kind = _sr_kind(rk, keys)
    img_resolution = int(kw.get("img_resolution", 512))
    detail_plane = any(".block3." in k for k in keys if ".b3d" in k)
    if "plane_axes" in info and info["plane_axes"] is not None:
        projection = projection_from_plane_axes(info["plane_axes"])
    else:
        projection = "corrected" if mimic else "eg3d"
    rendering = {k: rk[k] for k in RENDERING_KEYS if k in rk}
    if "avg_camera_pivot" in rendering:
        rendering["avg_camera_pivot"] = tuple(float(v) for v in rendering["avg_camera_pivot"])
    # The focal length is a property of the data set, not stored in snapshots. ShapeNet cars (box 1.6,
    # white background) use 1.7074; the face and cat models 4.2647.
    if focal is None:
        focal = cameras.SHAPENET_FOCAL if rk.get("white_back") and rk.get("box_warp") == 1.6 else 4.2647
    rendering["focal"] = float(focal)
    mapping = kw.get("mapping_kwargs") or {}
    # SR sizes from the tensors; recorded only where they differ from the official modules' fixed sizes.
    sr_input = sr_channels = None
    if sr_kind != "none":
        c0 = int(state["superresolution.block0.conv0.weight"].shape[0])
        c1 = int(state["superresolution.block1.conv0.weight"].shape[0])
        res0 = int(state["superresolution.block0.conv0.noise_const"].shape[0])
        found_input = res0 // 2 if sr_kind == "hybrid8xdc" else res0
        sr_input = None if found_input == SR_INPUT_RESOLUTION[sr_kind] else found_input
        sr_channels = None if (c0, c1) == SR_BLOCK_CHANNELS[sr_kind] else (c0, c1)
    try:
        return GeneratorConfig(
            name=name,
            family="mimic3d" if mimic else "eg3d",
            z_dim=int(kw.get("z_dim", 512)),
            w_dim=int(kw.get("w_dim", 512)),
            c_dim=int(kw.get("c_dim", 25)),
            mapping_layers=int(mapping.get("num_layers", 2)),
            img_resolution=img_resolution,
            img_channels=int(kw.get("img_channels", 3)),
            triplane_resolution=triplane_res,
            triplane_channels=int(torgb.shape[0]),
            channel_base=int(kw.get("channel_base", 32768)),
            channel_max=int(kw.get("channel_max", 512)),
            num_fp16_res=int(kw.get("num_fp16_res", 0)),
            conv_clamp=kw.get("conv_clamp"),
            superresolution=sr_kind,  # type: ignore[arg-type]
            sr_fp16=int(kw.get("sr_num_fp16_res", 0)) > 0,
            sr_input=sr_input,
            sr_channels=sr_channels,
            decoder_hidden=int(hidden),
            decoder_output_dim=int(state["decoder.net.2.weight"].shape[0]) - 1,
            decoder_lr_mul=float(rk.get("decoder_lr_mul", 1.0)),
            neural_rendering_resolution=neural_rendering_resolution(info, img_resolution, detail_plane),
            projection=projection,  # type: ignore[arg-type]
            aware3d_res=tuple(aware),
            detail_plane=detail_plane,
            rendering=RenderingConfig(**rendering),
        )
    except (TypeError, ValueError) as exc:
        raise Aware3DError(f"cannot describe this snapshot as an Aware3D config ({exc})",
                           "check it with 'aware3d info FILE.pkl --keys'") from None


def convert_official_pickle(
    path: str | Path, focal: float | None = None, name: str | None = None
) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official snapshot safely; return (config, G_ema tensors, provenance)."""
    path = Path(path)
    snap = read_snapshot(path)
    if snap.G_ema is None:
        raise Aware3DError(f"{path.name} has no G_ema generator", "is this an EG3D/Mimic3D training snapshot?")
    info = generator_info(snap)
    state = dict(module_state_dict(snap.G_ema))
    notes = []
    if "dataset_label_std" not in state:
        state = {"dataset_label_std": torch.ones(25), **state}
        notes.append("dataset_label_std was missing and was set to ones")
    cfg = config_from_snapshot(info, state, name or path.stem, focal)
    stored = info.get("neural_rendering_resolution")
    if stored is not None and int(stored) != cfg.neural_rendering_resolution:
        notes.append(f"neural_rendering_resolution {stored} (the 3d stage's SR training resolution) became "
                     f"{cfg.neural_rendering_resolution}: the final image is rendered directly, as the official "
                     f"inference does; render at {stored} (--resolution {stored}) to go through the SR module")
    from backend.registry import generator_from_tensors

    generator_from_tensors(cfg, state, path.name)  # refuses files whose keys or shapes do not fit
    provenance = {
        "source": f"converted from official {'Mimic3D' if cfg.family == 'mimic3d' else 'EG3D'} snapshot",
        "file": path.name,
        "sha256": file_sha256(path),
        "class": info.get("class_name"),
        "module_sources": {k: sorted(v) if isinstance(v, (list, set, tuple)) else v
                           for k, v in (info.get("module_sources") or {}).items()},
        "training_set_kwargs": snap.training_set_kwargs,
        "notes": notes,
    }
    return cfg, state, provenance


def convert_to_file(src: str | Path, dst: str | Path, focal: float | None = None,
                    name: str | None = None) -> GeneratorConfig:
    cfg, tensors, provenance = convert_official_pickle(src, focal, name or Path(dst).name.split(".")[0])
    from backend.generator import TriPlaneGenerator

    order = list(TriPlaneGenerator(cfg).state_dict())
    save_model(dst, {k: tensors[k] for k in order}, kind="gan", config=cfg.to_dict(), provenance=provenance)
    return cfg
