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
from backend.checkpoints.model_file import check_finite, file_sha256, save_model
from backend.checkpoints.official_pickle import generator_info, module_state_dict, read_snapshot
from backend.config import SR_BLOCK_CHANNELS, SR_INPUT_RESOLUTION, GeneratorConfig, RenderingConfig
from backend.errors import Aware3DError
from backend.render.triplane import PLANE_AXES

SR_CLASSES = {
    "SuperresolutionHybrid8XDC": "hybrid8xdc",
    "SuperresolutionHybrid4X": "hybrid4x",
    "SuperresolutionHybrid2X": "hybrid2x",
}
_HINT_KEYS = "check it with 'aware3d info FILE.pkl --keys'"

RENDERING_KEYS = {
    "ray_start", "ray_end", "depth_resolution", "depth_resolution_importance", "box_warp", "white_back",
    "clamp_mode", "disparity_space_sampling", "avg_camera_radius", "avg_camera_pivot", "c_gen_conditioning_zero",
    "c_scale", "superresolution_noise_mode", "sr_antialias",
}


def projection_from_plane_axes(plane_axes: Any) -> str:
    """Which convention a renderer's ``plane_axes`` implement: the projection is ``coords @ inv(P)[:, :2]``."""
    try:
        planes = np.asarray(plane_axes, dtype=np.float64)
        if planes.shape != (3, 3, 3) or not np.isfinite(planes).all():
            raise ValueError(f"shape {planes.shape}")
        inverses = [np.linalg.inv(p) for p in planes]
    except (ValueError, TypeError, np.linalg.LinAlgError) as exc:
        raise Aware3DError(f"the snapshot's renderer has malformed plane_axes ({str(exc)[:80]})",
                           "expected three invertible 3x3 matrices; the file may be damaged") from None
    axes = []
    for inv in inverses:
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


def _mapping(value: Any, what: str) -> dict[str, Any]:
    """A hyper-parameter dict of the snapshot (``None`` → empty); anything else is one error line."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Aware3DError(f"the snapshot's {what} is a {type(value).__name__}, not a dict", _HINT_KEYS)
    return dict(value)


def _whole(mapping: dict[str, Any], key: str, default: int) -> int:
    """An integer hyper-parameter of the snapshot, or one line naming it."""
    value = mapping.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Aware3DError(f"the snapshot's {key} is {str(value)[:40]!r}, not an integer", _HINT_KEYS)
    return value


def _dim(state: dict[str, torch.Tensor], key: str, axis: int = 0) -> int:
    """One dimension of a tensor the config is read from, or one line naming the missing tensor."""
    tensor = state.get(key)
    if not isinstance(tensor, torch.Tensor):
        raise Aware3DError(f"the snapshot's G_ema has no tensor {key}", _HINT_KEYS)
    if tensor.dim() <= axis:
        raise Aware3DError(f"the snapshot's tensor {key} has shape {tuple(tensor.shape)}, too few dimensions",
                           _HINT_KEYS)
    return int(tensor.shape[axis])


def config_from_snapshot(info: dict[str, Any], state: dict[str, torch.Tensor], name: str,
                         focal: float | None = None) -> GeneratorConfig:
    """A config from a snapshot's ``generator_info`` and its ``G_ema`` tensors (sizes come from the tensors)."""
    kw = _mapping(info.get("init_kwargs"), "init_kwargs")
    rk = _mapping(info.get("rendering_kwargs") or kw.get("rendering_kwargs"), "rendering_kwargs")
    keys = set(state)
    mimic = info.get("class_name") == "DualTriPlaneGenerator" or any(".b3d" in k for k in keys)
    blocks = sorted(int(m.group(1)) for k in keys if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k)))
    aware = sorted({int(m.group(1)) for k in keys if (m := re.match(r"backbone\.synthesis\.b3d(\d+)\.", k))})
    if not blocks:
        raise Aware3DError("the snapshot's G_ema has no synthesis blocks (backbone.synthesis.b4 ...)",
                           "is this an EG3D/Mimic3D generator? " + _HINT_KEYS)
    triplane_res = blocks[-1]
    triplane_channels = _dim(state, f"backbone.synthesis.b{triplane_res}.torgb.weight")
    hidden = _dim(state, "decoder.net.0.weight")
    decoder_out = _dim(state, "decoder.net.2.weight")
    sr_kind = _sr_kind(rk, keys)
    img_resolution = _whole(kw, "img_resolution", 512)
    detail_plane = any(".block3." in k for k in keys if ".b3d" in k)
    if "plane_axes" in info and info["plane_axes"] is not None:
        projection = projection_from_plane_axes(info["plane_axes"])
    else:
        projection = "corrected" if mimic else "eg3d"
    rendering = {k: rk[k] for k in RENDERING_KEYS if k in rk}
    # The focal length is a property of the data set, not stored in snapshots. ShapeNet cars (box 1.6,
    # white background) use 1.7074; the face and cat models 4.2647.
    if focal is None:
        focal = cameras.SHAPENET_FOCAL if rk.get("white_back") and rk.get("box_warp") == 1.6 else 4.2647
    rendering["focal"] = float(focal)
    mapping = _mapping(kw.get("mapping_kwargs"), "mapping_kwargs")
    # SR sizes from the tensors; recorded only where they differ from the official modules' fixed sizes.
    sr_input = sr_channels = None
    if sr_kind != "none":
        c0 = _dim(state, "superresolution.block0.conv0.weight")
        c1 = _dim(state, "superresolution.block1.conv0.weight")
        res0 = _dim(state, "superresolution.block0.conv0.noise_const")
        found_input = res0 // 2 if sr_kind == "hybrid8xdc" else res0
        sr_input = None if found_input == SR_INPUT_RESOLUTION[sr_kind] else found_input
        sr_channels = None if (c0, c1) == SR_BLOCK_CHANNELS[sr_kind] else (c0, c1)
    try:
        if "avg_camera_pivot" in rendering:
            rendering["avg_camera_pivot"] = tuple(float(v) for v in rendering["avg_camera_pivot"])
        cfg = GeneratorConfig(
            name=name,
            family="mimic3d" if mimic else "eg3d",
            z_dim=_whole(kw, "z_dim", 512),
            w_dim=_whole(kw, "w_dim", 512),
            c_dim=_whole(kw, "c_dim", 25),
            mapping_layers=_whole(mapping, "num_layers", 2),
            img_resolution=img_resolution,
            img_channels=_whole(kw, "img_channels", 3),
            triplane_resolution=triplane_res,
            triplane_channels=triplane_channels,
            channel_base=_whole(kw, "channel_base", 32768),
            channel_max=_whole(kw, "channel_max", 512),
            num_fp16_res=_whole(kw, "num_fp16_res", 0),
            conv_clamp=kw.get("conv_clamp"),
            superresolution=sr_kind,  # type: ignore[arg-type]
            sr_fp16=_whole(kw, "sr_num_fp16_res", 0) > 0,
            sr_input=sr_input,
            sr_channels=sr_channels,
            decoder_hidden=int(hidden),
            decoder_output_dim=decoder_out - 1,
            decoder_lr_mul=float(rk.get("decoder_lr_mul", 1.0)),
            neural_rendering_resolution=neural_rendering_resolution(info, img_resolution, detail_plane),
            projection=projection,  # type: ignore[arg-type]
            aware3d_res=tuple(aware),
            detail_plane=detail_plane,
            rendering=RenderingConfig(**rendering),
        )
        # The same type and range checks as a model file's config: the numbers came from the pickle.
        return GeneratorConfig.from_dict(cfg.to_dict())
    except (TypeError, ValueError, OverflowError) as exc:
        raise Aware3DError(f"cannot describe this snapshot as an Aware3D config ({str(exc)[:200]})",
                           _HINT_KEYS) from None


def convert_official_pickle(
    path: str | Path, focal: float | None = None, name: str | None = None, allow_nonfinite: bool | None = None
) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official snapshot safely; return (config, G_ema tensors, provenance).

    Every malformed file is one Aware3DError line; tensors with NaN or inf are refused unless
    ``allow_nonfinite`` (default: the ``AWARE3D_ALLOW_NONFINITE`` environment variable)."""
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
    if isinstance(stored, (int, float)) and not isinstance(stored, bool) and stored != cfg.neural_rendering_resolution:
        notes.append(f"neural_rendering_resolution {stored} (the 3d stage's SR training resolution) became "
                     f"{cfg.neural_rendering_resolution}: the final image is rendered directly, as the official "
                     f"inference does; render at {stored} (--resolution {stored}) to go through the SR module")
    from backend.registry import generator_from_tensors

    generator_from_tensors(cfg, state, path.name)  # refuses files whose keys or shapes do not fit
    for key, tensor in state.items():
        check_finite(tensor, key, path.name, allow_nonfinite)
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
                    name: str | None = None, allow_nonfinite: bool | None = None) -> GeneratorConfig:
    """Convert an official snapshot to an Aware3D model file; nothing is written unless it validates."""
    cfg, tensors, provenance = convert_official_pickle(src, focal, name or Path(dst).name.split(".")[0],
                                                       allow_nonfinite)
    from backend.generator import TriPlaneGenerator

    order = list(TriPlaneGenerator(cfg).state_dict())
    save_model(dst, {k: tensors[k] for k in order}, kind="gan", config=cfg.to_dict(), provenance=provenance)
    return cfg
