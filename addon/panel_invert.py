# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Photo to 3D" sub-panel, its settings and operators, and the scripting entry points.

Flow: pick a photo (a file, or an image datablock, which is written to a temporary PNG first), optionally
press **Preview Crop** (the backend's ``invert_preview``: the crop drawn on the photo and, if asked, the
estimated pose — the photo encoder's or the landmarks', at once), then **Photo to 3D** (``invert``): the main
panel's bar shows every stage with its ETA and a Cancel button. With a photo encoder that fits the model,
the encoder's head arrives first (a progress event's ``partial`` result) and is added at the 3D cursor at
once; when the refinement finishes, the refined head replaces it (where it stands now); a cancelled or failed
refinement keeps it. Each head is imported through :mod:`.scene_import` with a camera at the photo's pose,
and its avatar file's path is stored on the object (``obj["aware3d"]["avatar"]``) for other commands
(``aware3d sample --avatar``); the Head files preference links it from the avatars folder or packs it into
the .blend, and the panel's Pack / Unpack buttons switch the active head (:mod:`.storage`).

Registration (kept out of ``__init__``/``panels`` so this file is self-contained): call :func:`register` after
``panels.CLASSES`` are registered (the panel's parent is ``VIEW3D_PT_aware3d``) and :func:`unregister`
before they are unregistered. Like the rest of the add-on, it never imports torch or the backend.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import api, panel_common, prefs, scene_import, session, storage
from .client import BackendError, JobHandle
from .panel_common import panel_state, safe_name
from .panels import ORDER

PREVIEW_IMAGE = "Aware3D Crop Preview"
PREVIEW_KEYS = ("model", "device", "crop", "auto_mask", "matte", "encoder")  # what invert_preview takes
MAX_INLINE_BYTES = 700_000  # base64 of this fits the protocol's 1 MiB request limit

SOURCES = [("FILE", "File", "An image file on disk"), ("IMAGE", "Image", "An image datablock in this .blend")]
CROPS = [("AUTO", "Auto", "Find the head (foreground mask) and frame it like the model's training data"),
         ("FULL", "Already framed", "The photo is already a head crop: use its centred square")]
PRESETS = [("FAST", "Fast", "A quick preview (a few seconds)"),
           ("DEFAULT", "Default", "About a minute for the bundled 64² model on a 2-core CPU"),
           ("QUALITY", "Quality", "HFGI3D's step counts (many minutes on a CPU)")]
MODES = [("FULL", "Pseudo multi-view", "HFGI3D: tune on the photo and pseudo views made by visibility analysis"),
         ("SINGLE", "Single view", "PTI-like: tune on the photo alone (faster, weaker from other angles)")]
REFINES = [("NONE", "Encoder only", "The encoder's head as it is (about a second)"),
           ("FAST", "Fast", "A short refinement of the encoder's head"),
           ("FULL", "Full", "Every refinement stage at the chosen quality")]


class AWARE3D_PG_invert(bpy.types.PropertyGroup):
    """Photo to 3D settings (per scene, saved with the file)."""

    source: EnumProperty(name="Source", items=SOURCES, default="FILE")
    filepath: StringProperty(name="Photo", subtype="FILE_PATH", default="",
                             description="The photo (PNG, JPEG, WebP, ...; any size)")
    image: PointerProperty(name="Image", type=bpy.types.Image, description="An image datablock to invert")
    crop: EnumProperty(name="Crop", items=CROPS, default="AUTO")
    auto_mask: BoolProperty(name="Flatten background", default=False,
                            description="Estimate the foreground and replace the background by flat grey, as in "
                                        "the training data")
    estimate_pose: BoolProperty(name="Estimate pose", default=True,
                                description="Find the camera by render-and-compare (else use yaw and pitch)")
    yaw: FloatProperty(name="Yaw", default=0.0, min=-89.0, max=89.0, description="Degrees, + towards the face's left")
    pitch: FloatProperty(name="Pitch", default=0.0, min=-59.0, max=59.0, description="Degrees, + from above")
    use_encoder: BoolProperty(name="Start from encoder", default=True,
                              description="A photo encoder that fits the model gives a first head at once, then "
                                          "the optimisation refines it (without one: from the average head)")
    refine: EnumProperty(name="Refine", items=REFINES, default="FAST",
                         description="How much to refine the encoder's head (ignored without an encoder)")
    preset: EnumProperty(name="Quality", items=PRESETS, default="DEFAULT")
    mode: EnumProperty(name="Method", items=MODES, default="FULL")
    resolution: IntProperty(name="Mesh resolution", default=128, min=32, max=512)
    faces: IntProperty(name="Target faces", default=20000, min=0, max=2_000_000, soft_max=200_000)
    add_camera: BoolProperty(name="Add photo camera", default=True,
                             description="Add a camera at the photo's (estimated) pose, parented to the head")


class AWARE3D_PG_invert_state(bpy.types.PropertyGroup):
    """Run-time results shown in the panel (on the WindowManager, never saved)."""

    preview_image: StringProperty(default="")
    crop_text: StringProperty(default="")
    face_text: StringProperty(default="")
    pose_text: StringProperty(default="")
    metrics_text: StringProperty(default="")
    encoder_text: StringProperty(default="")
    avatar_path: StringProperty(default="")


# ----------------------------------------------------------------------------------------------------------
# Photo → request arguments
# ----------------------------------------------------------------------------------------------------------


def image_to_file(img: bpy.types.Image, folder: Path) -> Path:
    """A file the backend can read for an image datablock: its own file when unchanged, else a PNG copy."""
    if img.source == "FILE" and img.packed_file is None and not img.is_dirty and img.filepath:
        path = Path(bpy.path.abspath(img.filepath, library=img.library))
        if path.is_file():
            return path
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{safe_name(img.name, 60, 'image')}.png"
    w, h = img.size
    if w == 0 or h == 0:
        raise BackendError("ImageSaveFailed", f"image {img.name!r} has no pixels", "load or paint the image first")
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)
    # A new byte image with the same pixels saves reliably; a copy of a generated or painted image saves
    # its generator's blank pixels instead.
    tmp = bpy.data.images.new("aware3d_photo_export", w, h, alpha=img.channels == 4)
    try:
        if img.channels != 4:
            px = np.concatenate([px.reshape(-1, img.channels)[:, :3], np.ones((w * h, 1), np.float32)], 1).ravel()
        tmp.pixels.foreach_set(px)
        tmp.filepath_raw = str(out)
        tmp.file_format = "PNG"
        tmp.save()
    finally:
        bpy.data.images.remove(tmp)
    if not out.is_file():
        raise BackendError("ImageSaveFailed", f"could not write image {img.name!r} to a file",
                           "save the image to disk and pick the file instead")
    return out


def photo_args(context: bpy.types.Context | None = None, photo: str | None = None,
               image: bpy.types.Image | None = None) -> dict[str, Any]:
    """``image`` (a path) or ``image_b64`` for the request: from the arguments, else the panel's settings."""
    ctx = context or bpy.context
    s = ctx.scene.aware3d_invert
    if photo is None and image is None:
        if s.source == "IMAGE":
            image = s.image
            if image is None:
                raise BackendError("NoPhoto", "no image picked", "pick an image datablock, or switch to File")
        else:
            photo = s.filepath
            if not photo:
                raise BackendError("NoPhoto", "no photo picked", "pick a photo file")
    if image is not None:
        path = image_to_file(image, prefs.user_dir("photos"))
    else:
        path = Path(bpy.path.abspath(str(photo)))
        if not path.is_file():
            raise BackendError("NoPhoto", f"photo not found: {path}", "check the path")
    if prefs.backend_settings(ctx).kind == "tcp":  # a remote backend cannot read our files: send the bytes
        data = path.read_bytes()
        if len(data) > MAX_INLINE_BYTES:
            raise BackendError("PhotoTooLarge", f"{path.name} is {len(data) // 1000} KB; a remote backend takes "
                               f"at most {MAX_INLINE_BYTES // 1000} KB", "send a smaller JPEG")
        return {"image_b64": base64.b64encode(data).decode("ascii")}
    return {"image": str(path)}


def request_args(context: bpy.types.Context | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``invert`` request for the panel's settings (``overrides`` win)."""
    ctx = context or bpy.context
    s = ctx.scene.aware3d_invert
    args: dict[str, Any] = {
        "model": ctx.scene.aware3d.model or None, "device": session.device(ctx),
        "crop": "auto" if s.crop == "AUTO" else "full", "auto_mask": bool(s.auto_mask),
        "matte": [0.6, 0.6, 0.6] if s.auto_mask else None,
        "pose": None if s.estimate_pose else [float(s.yaw), float(s.pitch)],
        "encoder": "auto" if s.use_encoder else "none", "refine": s.refine.lower(),
        "preset": s.preset.lower(), "mode": "full" if s.mode == "FULL" else "single-view",
        "resolution": int(s.resolution), "faces": int(s.faces), "camera": bool(s.add_camera)}
    args.update(overrides)
    if args["encoder"] == "none" and "refine" not in overrides:
        # The refinement level applies to an encoder's start: with the encoder off (the panel's checkbox or a
        # script's encoder="none") it is left out, as the backend refuses an explicit one then.
        args["refine"] = None
    return args


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


def _state() -> Any:
    return panel_state("aware3d_invert")


def show_preview(path: str | None) -> bpy.types.Image | None:
    """Load (or reload) the crop preview into one packed image datablock shown by the panel."""
    return panel_common.show_preview(path, PREVIEW_IMAGE, "aware3d_invert")


def _record(data: dict[str, Any]) -> None:
    st = _state()
    if st is None:
        return
    crop = data.get("crop") or {}
    if crop:
        st.crop_text = f"Crop {crop.get('method', '')}: {crop.get('box')}" + (
            f" - {crop['note']}" if crop.get("note") else "")
    face = data.get("face") or {}
    if face:
        st.face_text = (f"Face found: confidence {face.get('confidence') or 0:.2f} ({face.get('detector')})"
                        if face.get("found") else (data.get("refused") or face.get("notice") or "No face found"))
    pose = data.get("pose") or {}
    if pose:
        st.pose_text = f"Pose ({pose.get('source')}): yaw {pose.get('yaw_deg', 0):+.1f}°, " \
                       f"pitch {pose.get('pitch_deg', 0):+.1f}°"
    metrics = data.get("metrics") or {}
    final = metrics.get("final") if data.get("stage") != "encoder" else metrics.get("encoder")
    if final:
        st.metrics_text = (f"{'First head' if data.get('stage') == 'encoder' else 'Photo view'}: PSNR "
                           f"{final.get('psnr', 0):.1f} dB, SSIM {final.get('ssim', 0):.2f}"
                           + (" - refining..." if data.get("stage") == "encoder" else ""))
    encoder = (data.get("start") or {}).get("encoder") or data.get("encoder")
    if encoder:
        st.encoder_text = f"Encoder {encoder.get('name')}" + (
            f": refine {data['refine']}" if data.get("refine") else "")
    elif data.get("encoder_notice"):
        st.encoder_text = str(data["encoder_notice"])
    if data.get("avatar"):
        st.avatar_path = str(data["avatar"])


class InvertFuture(api.GenerateFuture):
    """A Photo to 3D request in flight: the same future as ``api.generate_async`` returns, plus the backend's
    result data (pose, crop, avatar path) once done. ``first_object`` is the encoder's head while the
    refinement runs (the refined head replaces it; a cancelled or failed refinement keeps it)."""

    first_object_name: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return self.handle.data

    @property
    def first_object(self) -> bpy.types.Object | None:
        return bpy.data.objects.get(self.first_object_name) if self.first_object_name else None


def keep_first_avatar(first: bpy.types.Object, h: JobHandle) -> str:
    """A kept encoder's head (refinement cancelled or failed) keeps its avatar: moved out of the job folder,
    which is removed, into the avatars folder; returns the status line's note."""
    partial = h.partial or {}
    data, files = partial.get("data") or {}, partial.get("files") or {}
    kept, where = session.keep_avatar(str(files.get("avatar") or data.get("avatar") or ""))
    if not where:
        return ""
    meta = first.get("aware3d")
    if meta is not None:
        meta["avatar"] = kept
    st = _state()
    if st is not None:
        st.avatar_path = kept
    return f"; avatar saved {where}: {kept}" + store_head(first)


def store_head(obj: bpy.types.Object) -> str:
    """Keep a new head's files as the Head files preference says (:func:`storage.store_new_head`); returns
    the status line's note when that failed (the head stays, with its avatar file where it is)."""
    try:
        storage.store_new_head(obj)
    except (BackendError, OSError, RuntimeError) as exc:
        print(f"Aware3D: could not store the files of {obj.name}: {exc}")
        return f" (not stored as asked: {exc})"
    return " (packed into the .blend)" if storage.storage_of(obj) == storage.PACK else ""


def invert_async(photo: str | None = None, image: bpy.types.Image | None = None, location: Any = None,
                 name: str | None = None, on_done: Callable[[InvertFuture], Any] | None = None,
                 context: bpy.types.Context | None = None, **args: Any) -> InvertFuture:
    """Start Photo to 3D for a photo file or image datablock (default: the panel's); returns at once.

    ``args`` override request arguments (``pose=[yaw, pitch]``, ``preset='fast'``, ``steps_stage2=...``).
    """
    ctx = context or bpy.context
    scene = ctx.scene
    req = {**request_args(ctx, **args), **photo_args(ctx, photo, image)}
    loc = tuple(scene.cursor.location) if location is None else tuple(location)
    collection = getattr(ctx, "collection", None) or scene.collection
    coll_name, scene_name, with_camera = collection.name, scene.name, bool(req.get("camera", True))
    # The Generate panel's origin and scale: a head from a photo also stands on the cursor by default.
    placement = api._placement(scene.aware3d, None, None, None)
    future: InvertFuture

    def meta(data: dict[str, Any]) -> dict[str, Any]:
        pose = data.get("pose") or {}
        return {"model": data.get("model", ""), "avatar": data.get("avatar", ""),
                "yaw": float(pose.get("yaw_deg", 0.0)), "pitch": float(pose.get("pitch_deg", 0.0)),
                "refine": "none (first head)" if data.get("stage") == "encoder" else str(data.get("refine", ""))}

    def drop_first() -> tuple[float, ...]:
        """Remove the encoder's head; the refined one goes where it stands now."""
        first = future.first_object
        if first is None:
            return loc
        where = tuple(first.location)
        scene_import.remove_head(first)
        future.first_object_name = None
        return where

    def show_first(partial: dict[str, Any]) -> None:
        files, data = partial.get("files") or {}, partial.get("data") or {}
        if "mesh" not in files:
            return
        where = drop_first()
        scene = bpy.data.scenes.get(scene_name) or bpy.context.scene
        collection = bpy.data.collections.get(coll_name) or scene.collection
        obj_name = name or f"Aware3D_{data.get('name') or 'photo'}"
        try:
            obj = scene_import.import_head(files, obj_name, where, collection, meta(data), with_camera,
                                           **placement)
        except (scene_import.ImportFailed, OSError, KeyError, ValueError) as exc:
            print(f"Aware3D: the encoder's head could not be shown: {exc}")
            return
        future.first_object_name = future.object_name = obj.name
        _record(data)
        session.record_result(f"{obj.name}: the encoder's head; refining")

    def done(h: JobHandle) -> None:
        try:
            if h.state != "done":
                future.error = h.error or BackendError("Cancelled", "cancelled")
                if h.state == "error" and future.error.type != session.DISCARDED:  # (already shown)
                    session.record_error(future.error)
                first = future.first_object if future.error.type != session.DISCARDED else None
                if first is not None:
                    note = keep_first_avatar(first, h)
                    session.record_result(f"{first.name}: the encoder's head (refinement "
                                          f"{'cancelled' if h.state == 'cancelled' else 'failed'}){note}")
                return
            # The local copy of the file (a remote backend's data names its own path), else the data's path.
            kept, saved_in = session.keep_avatar(str(h.files.get("avatar") or h.data.get("avatar") or ""))
            if saved_in:
                h.data["avatar"] = kept  # the job folder is removed after this callback
            _record(h.data)
            show_preview(h.files.get("crop_preview"))
            obj_name = name or f"Aware3D_{h.data.get('name') or 'photo'}"
            if "mesh" in h.files:
                at = drop_first()
                obj = api.import_result(h, future, obj_name, at, coll_name, scene_name, meta(h.data),
                                        with_camera, placement)
                if obj is None:
                    return
                note = store_head(obj)
                session.record_result(f"{obj.name}: {h.data.get('vertices', 0)} vertices from the photo"
                                      + (f"; avatar saved {saved_in}: {kept}" if saved_in else "") + note)
                if not bpy.app.background:
                    with contextlib.suppress(RuntimeError):
                        bpy.ops.ed.undo_push(message="Aware3D: photo to 3D")
        finally:
            future._finish()

    seen = [0]

    def progress(h: JobHandle) -> None:
        if h.stage == "crop" and h.preview:
            show_preview(h.preview)
        if h.partial is not None and h.partials != seen[0]:
            seen[0] = h.partials
            show_first(h.partial)

    handle = session.submit("invert", req, on_done=done, on_progress=progress, context=ctx, cleanup=True)
    future = InvertFuture(handle)
    if on_done is not None:
        future.add_done_callback(on_done)
    return future


def invert(photo: str | None = None, image: bpy.types.Image | None = None, timeout: float | None = None,
           **kwargs: Any) -> bpy.types.Object:
    """Photo to 3D, blocking: returns the imported head (raises ``BackendError`` on failure)."""
    return invert_async(photo, image, **kwargs).result(timeout)


def preview(photo: str | None = None, image: bpy.types.Image | None = None, estimate_pose: bool = True,
            timeout: float | None = None, context: bpy.types.Context | None = None) -> dict[str, Any]:
    """The crop (and pose) of a photo, blocking; also updates the panel's preview."""
    ctx = context or bpy.context
    req = {k: v for k, v in request_args(ctx).items() if k in PREVIEW_KEYS}
    req.update(photo_args(ctx, photo, image), estimate_pose=estimate_pose)
    h = session.wait(session.submit("invert_preview", req, on_done=_preview_done, context=ctx, cleanup=True),
                     timeout)
    if h.error is not None:
        raise h.error
    return h.data


def _preview_done(h: JobHandle) -> None:
    """Show the crop (packed into the .blend) before the job folder it came in is removed."""
    if h.state == "done":
        _record(h.data)
        show_preview(h.files.get("crop_preview"))


# ----------------------------------------------------------------------------------------------------------
# Operators and panel
# ----------------------------------------------------------------------------------------------------------


def _busy_inverting() -> bool:
    return session.busy_with("invert", "invert_preview")


class AWARE3D_OT_invert(bpy.types.Operator):
    """Turn the photo into a 3D head (pose, pivot, pseudo views, tuning) and add it at the 3D cursor"""

    bl_idname = "aware3d.invert"
    bl_label = "Photo to 3D"
    bl_options = {"REGISTER"}  # noqa: RUF012 - the undo step is pushed when the head arrives

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not _busy_inverting()

    def execute(self, context: bpy.types.Context) -> set[str]:
        return session.execute_job(self, lambda: invert_async(context=context),
                                   lambda fut: f"Aware3D: added {fut.result().name}")


class AWARE3D_OT_invert_preview(bpy.types.Operator):
    """Show how the photo will be cropped (and, if Estimate pose is on, the camera pose found)"""

    bl_idname = "aware3d.invert_preview"
    bl_label = "Preview Crop"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not _busy_inverting()

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.aware3d_invert
        try:
            if session.blocking():
                preview(estimate_pose=s.estimate_pose, context=context)
            else:
                req = {k: v for k, v in request_args(context).items() if k in PREVIEW_KEYS}
                req.update(photo_args(context), estimate_pose=bool(s.estimate_pose))
                session.submit("invert_preview", req, on_done=_preview_done, context=context, cleanup=True)
        except BackendError as exc:
            session.record_error(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class VIEW3D_PT_aware3d_photo(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Aware3D"
    bl_label = "Photo to 3D"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["photo"]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.aware3d_invert
        st = context.window_manager.aware3d_invert
        layout.prop(s, "source", expand=True)
        if s.source == "FILE":
            layout.prop(s, "filepath", text="")
        else:
            layout.template_ID(s, "image", open="image.open")
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(s, "crop")
        col.prop(s, "auto_mask")
        col.prop(s, "estimate_pose")
        if not s.estimate_pose:
            col.prop(s, "yaw")
            col.prop(s, "pitch")
        col.prop(s, "use_encoder")
        if s.use_encoder:
            col.prop(s, "refine")
        col.prop(s, "preset")
        col.prop(s, "mode")
        col.prop(s, "resolution")
        col.prop(s, "faces")
        col.prop(s, "add_camera")
        p = prefs.preferences(context)
        if p is not None:
            col.prop(p, "head_files")
        layout.operator("aware3d.invert_preview", icon="IMAGE_DATA")
        panel_common.draw_preview_and_lines(layout, st, (st.face_text, st.crop_text, st.pose_text, st.encoder_text,
                                                         st.metrics_text), scale=8.0)
        stage = context.window_manager.aware3d.stage
        panel_common.draw_job_progress(layout, context, ("invert", "invert_preview"), stage)
        layout.operator("aware3d.invert", icon="USER")
        draw_head_files(layout, getattr(context, "active_object", None))


def draw_head_files(layout: bpy.types.UILayout, obj: bpy.types.Object | None) -> None:
    """The active head's avatar: where it is (linked, packed, missing) and the buttons that switch it."""
    text = storage.describe(obj) if obj is not None else ""
    if not text:
        return
    box = layout.box()
    box.label(text=text, icon="ERROR" if text.startswith("Avatar missing") else "FILE")
    row = box.row(align=True)
    row.operator("aware3d.pack_head", icon="PACKAGE")
    row.operator("aware3d.unpack_head", icon="UGLYPACKAGE")


CLASSES = (AWARE3D_PG_invert, AWARE3D_PG_invert_state, AWARE3D_OT_invert, AWARE3D_OT_invert_preview,
           VIEW3D_PT_aware3d_photo)


def register() -> None:
    """Register after ``panels.CLASSES`` (the panel's parent must exist)."""
    panel_common.register_panel(CLASSES, "aware3d_invert", AWARE3D_PG_invert, AWARE3D_PG_invert_state)


def unregister() -> None:
    panel_common.unregister_panel(CLASSES, "aware3d_invert")
