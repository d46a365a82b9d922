# SPDX-License-Identifier: GPL-3.0-or-later
"""Server operations for Photo to 3D: ``invert_preview`` (crop, and optionally the pose, in seconds) and
``invert`` (the whole pipeline: avatar, mesh in Blender coordinates, the photo's camera, renders).

Registered with :func:`register` (``ops_invert.register(server)`` in ``Server.__init__``); the operation
specs live here rather than in ``protocol.OPS`` because the add-on's client only checks arguments of
operations it knows, and the server's ``hello`` lists the registered ones.

The photo arrives as a path the backend can read (``image``) or, for a remote backend or a Blender image
that exists only in memory, as base64 file bytes (``image_b64``, at most ~700 KB inside the 1 MiB request
limit). Progress: one stage per pipeline stage, so the panel's bar moves through pose, pivot, stage 1,
pseudo views, stage 2 and mesh with an ETA; the crop preview is sent as a progress ``preview`` as soon as it
exists. Cancel takes effect at the next optimisation step.

With a photo encoder that fits the model (``encoder``: ``auto``, ``none`` or a file;
:mod:`backend.invert.start`), ``invert`` first sends the encoder's avatar as a progress ``partial`` (stage
``encoder``: a coarse mesh, its camera, a render and its avatar file; ``first_head``) and then refines it
(``refine``: ``none``, ``fast`` or ``full``); the result replaces it. ``invert_preview``'s pose is then the
encoder's, at once.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from backend.errors import Aware3DError
from backend.server import protocol as P
from backend.server.jobs import JobContext, JobResult
from backend.server.ops_core import load_model
from backend.server.ops_mesh import check_mesh_output_args, requested_level
from backend.validate import path_inside, safe_stem, sanitise_stem, within

_NUM = (int, float)
_OPT_INT = ((int, type(None)), None)
PRESETS = ("fast", "default", "quality")
MODES = ("full", "single-view")
COLOUR_MODES = ("vertex", "none")

_PHOTO_ARGS: dict[str, tuple[tuple[type, ...], Any]] = {
    "image": ((str, type(None)), None),
    "image_b64": ((str, type(None)), None),
    "crop": ((str, list), "auto"),
    "mask": ((str, type(None)), None),
    "auto_mask": ((bool,), False),
    "matte": ((list, type(None)), None),
    "align": ((str,), "auto"),
    "landmarks": ((int,), 5),
    "pose_prior": ((bool,), True),
    "model": P.MODEL_ARG,
    "device": P.DEVICE_ARG,
}

PREVIEW_SPEC = P.OpSpec(True, {**_PHOTO_ARGS, "estimate_pose": ((bool,), False), "encoder": ((str,), "auto")},
                        "Photo to 3D, first look: the crop (and optionally the estimated pose) of a photo")
INVERT_SPEC = P.OpSpec(True, {
    **_PHOTO_ARGS,
    "encoder": ((str,), "auto"),
    "refine": ((str, type(None)), None),  # None: not chosen (the default, fast); explicit values are checked
    "first_head": ((bool,), True),
    "pose": ((list, type(None)), None),
    "preset": ((str,), "default"),
    "mode": ((str,), "full"),
    "steps_project": _OPT_INT, "steps_stage1": _OPT_INT, "steps_stage2": _OPT_INT, "views": _OPT_INT,
    "seed": ((int,), 0),
    "name": ((str, type(None)), None),
    "mesh": ((bool,), True),
    "resolution": ((int,), 128),
    "faces": ((int,), 20_000),
    "level": ((int, float, type(None)), None),  # None: the model's own level
    "colour_mode": ((str,), "vertex"),
    "formats": ((list,), []),
    "camera": ((bool,), True),
    "orbit_frames": ((int,), 0),
}, "Photo to 3D: invert a photo into an avatar; mesh (Blender coordinates), the photo's camera, renders")


def register(server: Any) -> None:
    """Add ``invert_preview`` and ``invert`` to a :class:`backend.server.server.Server`."""
    server.register_op("invert_preview", PREVIEW_SPEC, op_invert_preview)
    server.register_op("invert", INVERT_SPEC, op_invert)


# --------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------


def _photo_path(ctx: JobContext) -> Path:
    a = ctx.args
    if (a["image"] is None) == (a["image_b64"] is None):
        raise Aware3DError("give the photo as 'image' (a path) or 'image_b64' (file bytes), not both or neither",
                           "e.g. {\"image\": \"/path/photo.jpg\"}")
    if a["image"] is not None:
        return Path(a["image"]).expanduser()
    try:
        data = base64.b64decode(a["image_b64"], validate=True)
    except (binascii.Error, ValueError):
        raise Aware3DError("image_b64 is not valid base64", "send the file's bytes base64-encoded") from None
    path = ctx.job_dir / "photo.bin"
    path.write_bytes(data)
    return path


def _crop(value: Any) -> Any:
    from backend.invert.image import CropBox

    if isinstance(value, str):
        if value not in ("auto", "full"):
            raise Aware3DError(f"unknown crop {value!r}", "use 'auto', 'full' or [x, y, size] in photo pixels")
        return value
    if len(value) != 3 or not all(isinstance(v, _NUM) and not isinstance(v, bool) for v in value) or \
            not value[2] > 0:
        raise Aware3DError(f"crop must be [x, y, size] with a positive size, got {value!r}", "e.g. [120, 40, 300]")
    x, y, size = (within("crop_coordinate", v, f"crop {k}", "e.g. [120, 40, 300]")
                  for k, v in zip(("x", "y", "size"), value))
    return CropBox(x, y, size)


def _face_args(a: dict[str, Any]) -> tuple[str, Any]:
    """(align, FaceSettings) from the request, checked."""
    from backend.invert.face import FaceSettings
    from backend.invert.frontend import ALIGNS

    if a["align"] not in ALIGNS:
        raise Aware3DError(f"unknown align {a['align']!r}", f"use one of {', '.join(ALIGNS)}")
    if a["landmarks"] not in (5, 68):
        raise Aware3DError(f"landmarks must be 5 or 68, got {a['landmarks']}", "5 (default) or 68")
    return a["align"], FaceSettings(landmarks=a["landmarks"])


def _matte(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if len(value) != 3 or not all(isinstance(v, _NUM) and 0 <= v <= 1 for v in value):
        raise Aware3DError(f"matte must be [r, g, b] between 0 and 1, got {value!r}", "e.g. [0.6, 0.6, 0.6]")
    return (float(value[0]), float(value[1]), float(value[2]))


def _settings(a: dict[str, Any], refine: str = "full") -> Any:
    """InvertSettings: the preset, the refinement level's budgets (from an encoder start), the explicit steps."""
    from dataclasses import replace

    from backend.invert.pipeline import preset, refine_budget

    if a["preset"] not in PRESETS:
        raise Aware3DError(f"unknown preset {a['preset']!r}", f"use one of {', '.join(PRESETS)}")
    if a["mode"] not in MODES:
        raise Aware3DError(f"unknown mode {a['mode']!r}", f"use one of {', '.join(MODES)}")
    s = refine_budget(preset(a["preset"]), refine)
    pose = a["pose"]
    if pose is not None:
        if len(pose) != 2 or not all(isinstance(v, _NUM) and not isinstance(v, bool) for v in pose):
            raise Aware3DError(f"pose must be [yaw, pitch] in degrees, got {pose!r}", "e.g. [15, -5]")
        if not (-90 < pose[0] < 90 and -60 < pose[1] < 60):
            raise Aware3DError(f"pose {pose} is outside the generator's range", "yaw within ±90°, pitch ±60°")
        s = replace(s, pose=(float(pose[0]), float(pose[1])))
    for key in ("steps_project", "steps_stage1", "steps_stage2"):
        if a[key] is not None:
            within("invert_steps", a[key], key)
    if a["views"] is not None:
        within("pseudo_views", a["views"], "views")
    if a["steps_project"] is not None:
        s = replace(s, project=replace(s.project, steps=a["steps_project"]))
    if a["steps_stage1"] is not None:
        s = replace(s, stage1=replace(s.stage1, steps=a["steps_stage1"]))
    if a["steps_stage2"] is not None:
        s = replace(s, stage2=replace(s.stage2, steps=a["steps_stage2"]))
    if a["views"] is not None:
        s = replace(s, pseudo=replace(s.pseudo, views=a["views"]))
    return replace(s, mode=a["mode"], seed=within("seed", a["seed"], "seed"))


def _check_mesh_args(a: dict[str, Any]) -> None:
    check_mesh_output_args(a, COLOUR_MODES)
    if a["orbit_frames"] != 0:
        within("orbit_frames", a["orbit_frames"], "orbit_frames", "0 (none) or e.g. 48")


def _name(a: dict[str, Any], job_dir: Path) -> str:
    """The avatar's file stem: a given ``name`` must be a safe stem (refused, not rewritten: see
    ``backend.validate``); without one it is made from the photo's file name. Either way its files are proven
    to land inside the job folder before any work starts."""
    if a["name"] is not None:
        name = safe_stem(a["name"], "name")
    else:
        name = sanitise_stem(Path(a["image"]).name.split(".")[0], "avatar") if a["image"] else "avatar"
    for suffix in (".avatar.safetensors", "-encoder.avatar.safetensors"):
        path_inside(job_dir, f"{name}{suffix}", "the avatar")
    return name


def _read(ctx: JobContext) -> tuple[Any, Any, Path]:
    """Read and check the photo and its mask before any model is loaded: (photo, mask, photo file)."""
    from backend.invert.image import load_mask, load_photo

    a = ctx.args
    _crop(a["crop"])
    _matte(a["matte"])
    _face_args(a)
    photo_file = _photo_path(ctx)
    photo = load_photo(photo_file, Path(a["image"]).name if a["image"] else "the photo")
    mask = load_mask(a["mask"], photo) if a["mask"] else None
    return photo, mask, photo_file


def _frame(ctx: JobContext, G: Any, photo: Any, mask: Any, refuse: bool = True) -> tuple[Any, Path, Path]:
    """Detect the face and frame the photo (:func:`backend.invert.frontend.prepare_photo`); writes input.png
    and crop_preview.png (sent as a progress preview). Returns (front end, preview, input)."""
    from backend.fileio import write_png
    from backend.invert.frontend import prepare_photo
    from backend.invert.image import crop_preview

    a = ctx.args
    crop, matte = _crop(a["crop"]), _matte(a["matte"])
    align, face_settings = _face_args(a)
    ctx.progress("crop", 0, 1, "finding the face")
    fe = prepare_photo(photo, G.cfg, crop, align, mask, a["auto_mask"], matte, face_settings, refuse=refuse,
                       check=ctx.check_cancel)
    framed, face = fe.framed, fe.face
    preview = ctx.job_dir / "crop_preview.png"
    write_png(preview, crop_preview(photo, framed, landmarks=None if face is None else face.landmarks,
                                    face_box=None if face is None else face.box))
    inp = ctx.job_dir / "input.png"
    write_png(inp, framed.uint8())
    ctx.progress("crop", 1, 1, fe.summary(), preview=preview)
    return fe, preview, inp


def _crop_data(photo: Any, fe: Any) -> dict[str, Any]:
    framed = fe.framed
    return {"box": framed.box.to_list(), "method": framed.method, "note": framed.note,
            "angle_deg": round(framed.box.angle, 3), "stretch": framed.box.stretch, "photo_size": list(photo.size)}


def _face_data(fe: Any) -> dict[str, Any]:
    """What the panel shows of the detection: found, confidence, box, landmarks, pose prior, notice."""
    face = fe.face
    return {"found": face is not None, "align": fe.align, "notice": fe.notice,
            "detector": None if fe.search is None else fe.search.detector,
            "confidence": None if face is None else round(face.confidence, 3),
            "box": None if face is None else [round(v, 1) for v in face.box],
            "landmarks": None if face is None else face.landmarks.round(1).tolist(),
            "pose_prior": None if fe.prior is None else fe.prior.to_dict()}


# --------------------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------------------


def op_invert_preview(ctx: JobContext) -> JobResult:
    from backend.invert.pipeline import InvertSettings, find_pose
    from backend.invert.pose import PoseEstimate
    from backend.invert.project import latent_stats
    from backend.invert.start import encoder_start

    a = ctx.args
    ctx.plan({"load": 1, "crop": 1, "encoder": 0, "pose": 4 if a["estimate_pose"] else 0})
    photo, mask, _ = _read(ctx)
    model, _ = load_model(ctx, a["model"], a["device"])
    G = model.generator
    # The preview shows a refusal instead of failing: the panel draws what the detector saw.
    fe, preview, inp = _frame(ctx, G, photo, mask, refuse=False)
    data: dict[str, Any] = {"model": model.name, "crop": _crop_data(photo, fe), "face": _face_data(fe)}
    if a["crop"] == "auto" and fe.face is None and fe.search is not None and fe.search.available:
        data["refused"] = fe.notice
    if a["estimate_pose"]:
        device = next(G.parameters()).device
        # The pose the inversion will start from: the encoder's when one fits (instant), else the landmarks'
        # prior (instant), else the render-and-compare search (seconds).
        choice = _encoder(ctx, G, model, device)
        data["encoder"] = choice.info or None
        if choice.encoder is not None:
            start = encoder_start(choice.encoder, G, fe.framed.image, choice.info)
            data["pose"] = PoseEstimate(start.yaw, start.pitch, "encoder", seconds=start.seconds).to_dict()
        else:
            if choice.notice:
                data["encoder_notice"] = choice.notice
            s = InvertSettings(pose_prior=fe.pose_prior if a["pose_prior"] else None)
            pose = find_pose(G, fe.framed.image.to(device), s, latent_stats(G, s.project.w_avg_samples), None,
                             lambda st, i, n, m: ctx.progress(st, i, n, m))
            data["pose"] = pose.to_dict()
    return JobResult(data=data, files={"crop_preview": preview, "input": inp})


def _encoder(ctx: JobContext, G: Any, model: Any, device: Any) -> Any:
    """The request's encoder (``backend.invert.start.choose_encoder``); a bad one is the job's error."""
    from backend.invert.avatar import base_identity
    from backend.invert.start import choose_encoder

    ctx.progress("encoder", 0, 1, "looking for a photo encoder")
    return choose_encoder(ctx.args["encoder"], G, base_identity(model), device)


def _plan(ctx: JobContext, settings: Any, a: dict[str, Any], encoder: bool) -> None:
    """Stage weights for the overall bar: roughly the renders each stage makes."""
    full = settings.mode == "full"
    none = encoder and settings.refine == "none"
    ctx.plan({"load": 1, "crop": 1, "encoder": (4 if a["first_head"] and a["mesh"] else 1) if encoder else 0,
              "pose": 0 if (settings.pose or encoder) else max(10, settings.project.steps // 7),
              "project": 0 if none else settings.project.steps,
              "stage1": 0 if (none or not full) else settings.stage1.steps,
              "pseudo": 2 if full and not none else 0,
              "stage2": 0 if none else 3 * settings.stage2.steps * (1 if full else 0.5),
              "renders": 2, "video": a["orbit_frames"] / 4, "mesh": 20 if a["mesh"] else 0, "write": 1})


def _first_head(ctx: JobContext, G: Any, framed: Any, settings: Any, start: Any, base: dict[str, Any],
                source: dict[str, Any], name: str) -> None:
    """Send the encoder's avatar as a ``partial`` result: a mesh (Blender coordinates), its camera, a render
    and its avatar file, in the job's ``first/`` folder, so the panel shows a head before the refinement."""
    from dataclasses import replace

    import numpy as np

    from backend.fileio import atomic_path, write_json
    from backend.invert.pipeline import invert
    from backend.invert.results import OutputOptions, write_outputs
    from backend.server.ops_mesh import blender_arrays, blender_camera_dict

    a = ctx.args
    folder = ctx.job_dir / "first"
    inv = invert(G, framed.image, replace(settings, refine="none"), start=start)
    # A coarser grid than the final mesh: this head is shown for the seconds the refinement takes.
    opts = OutputOptions(name=f"{name}-encoder", novel_yaws=(), orbit_frames=0, mesh=True, mesh_format=None,
                         mesh_resolution=min(int(a["resolution"]), 64), mesh_faces=a["faces"],
                         mesh_level=requested_level(a), keep_geometry=False)

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        ctx.progress("encoder", step, total, f"first head: {message or stage}")

    written = write_outputs(folder, inv, G, base, opts, source, None, progress)
    files: dict[str, Path] = {"avatar": written.files["avatar"], "preview": written.files["render"]}
    if written.mesh is not None:
        if a["colour_mode"] == "none":
            written.mesh.colours = None
        files["mesh"] = folder / "mesh.npz"
        with atomic_path(files["mesh"], suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **blender_arrays(written.mesh))
    if a["camera"]:
        files["camera"] = folder / "camera.json"
        write_json(files["camera"], blender_camera_dict(G.cfg, inv.label[0].cpu().numpy()))
    data = {"stage": "encoder", "name": name, "model": base.get("name"), "pose": inv.pose.to_dict(),
            "metrics": inv.metrics,
            "start": start.to_dict(), "avatar": str(written.files["avatar"])}
    ctx.progress("encoder", 1, 1, "first head from the encoder; refining", preview=files["preview"],
                 partial=JobResult(data=data, files=files))


def op_invert(ctx: JobContext) -> JobResult:
    from dataclasses import replace

    import numpy as np

    from backend.checkpoints.model_file import file_sha256
    from backend.fileio import atomic_path, write_json
    from backend.invert.avatar import base_identity
    from backend.invert.pipeline import invert
    from backend.invert.refine import check_refine, refine_ignored_note
    from backend.invert.results import OutputOptions, write_outputs
    from backend.invert.start import encoder_start
    from backend.mesh.export import save_mesh
    from backend.server.ops_mesh import blender_arrays, blender_camera_dict

    a = ctx.args
    refine = check_refine(a["refine"], a["encoder"], flag="refine")
    settings = _settings(a)
    _check_mesh_args(a)
    name = _name(a, ctx.job_dir)
    photo, mask, photo_file = _read(ctx)
    _plan(ctx, settings, a, encoder=False)
    model, _ = load_model(ctx, a["model"], a["device"])
    G = model.generator
    fe, preview, inp = _frame(ctx, G, photo, mask)
    framed = fe.framed
    device = next(G.parameters()).device
    base = base_identity(model)
    source = {"photo": Path(a["image"]).name if a["image"] else "(sent inline)", "size": list(photo.size),
              "sha256": file_sha256(photo_file), "crop": framed.box.to_list(), "crop_method": framed.method,
              "crop_angle_deg": round(framed.box.angle, 3), "crop_stretch": framed.box.stretch,
              "face": fe.to_dict()}
    choice = _encoder(ctx, G, model, device)
    start = None
    if choice.encoder is not None:
        settings = _settings(a, refine)
        _plan(ctx, settings, a, encoder=True)
        start = encoder_start(choice.encoder, G, framed.image, choice.info)
        ctx.progress("encoder", 0, 1, f"first avatar: yaw {start.yaw:+.1f}°, pitch {start.pitch:+.1f}°")
        if refine != "none" and a["first_head"] and a["mesh"]:
            _first_head(ctx, G, framed, settings, start, base, source, name)
    else:
        ctx.progress("encoder", 1, 1, refine_ignored_note(choice.notice, a["refine"], flag="refine"))
        if fe.pose_prior is not None and a["pose_prior"] and settings.pose is None:
            settings = replace(settings, pose_prior=fe.pose_prior)

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        ctx.progress(stage, step, total, message)

    inv = invert(G, framed.image.to(device), settings, progress=progress, start=start)
    opts = OutputOptions(name=name, novel_yaws=(), orbit_frames=a["orbit_frames"], mesh=a["mesh"],
                         mesh_format=None, mesh_resolution=a["resolution"], mesh_faces=a["faces"],
                         mesh_level=requested_level(a))
    # The mesh goes to the add-on as arrays (mesh.npz); files in other formats only when asked for.
    written = write_outputs(ctx.job_dir, inv, G, base, opts, source, None, progress)
    files: dict[str, Path] = {k: v for k, v in written.files.items() if k in
                              ("avatar", "render", "render_depth", "orbit", "pseudo_views", "report")}
    files["crop_preview"], files["input"] = preview, inp
    if "render" in files:
        files["preview"] = files.pop("render")
    ctx.progress("write", 0, 1)
    data: dict[str, Any] = {"model": model.name, "config": G.cfg.name, "name": name,
                            "pose": inv.pose.to_dict(), "crop": _crop_data(photo, fe), "face": _face_data(fe),
                            "metrics": inv.metrics, "timings_s": written.report["timings_s"],
                            "mode": settings.mode, "avatar": str(written.files["avatar"]),
                            "start": written.report["start"], "refine": settings.refine,
                            "stages": written.report["stages"],
                            "encoder_notice": refine_ignored_note(choice.notice, a["refine"], flag="refine") or None}
    mesh = written.mesh
    if mesh is not None:
        if a["colour_mode"] == "none":
            mesh.colours = None
        arrays = blender_arrays(mesh)
        files["mesh"] = ctx.job_dir / "mesh.npz"
        with atomic_path(files["mesh"], suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        for fmt in a["formats"]:
            for p in save_mesh(mesh, ctx.job_dir / f"head.{fmt}", axes="blender"):
                files[p.name if p.suffix[1:] != fmt else fmt] = p
        v = arrays["vertices"]
        data.update(vertices=len(v), faces=len(arrays["faces"]), mesh_level=written.report["mesh"]["level"],
                    bounds_m=[v.min(axis=0).tolist(), v.max(axis=0).tolist()] if len(v) else None)
    if a["camera"]:
        files["camera"] = ctx.job_dir / "camera.json"
        write_json(files["camera"], blender_camera_dict(G.cfg, inv.label[0].cpu().numpy()))
    ctx.progress("write", 1, 1)
    return JobResult(data=data, files=files)
