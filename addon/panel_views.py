# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Novel-view textures" sub-panel, its settings and operators, and the scripting entry points.

Flow: make the mesh (a generated head, or any mesh object) active; select camera objects to paint from, or
press **Add Camera Ring** (or select none: the ring is made when the job starts) to get N real cameras in a
collection around the object that can be moved before texturing; press **Texture from Views**. The mesh is
written to a GLB with the cameras in its frame (:mod:`.texture_scene`), the backend's ``texture`` job
generates a view per camera in turn (the main panel's bar counts views; the latest view is shown as a
preview), and when it finishes the object gets UV maps, weight attributes and a material that blends the
camera-projected views (or, with **Bake to one texture**, the baked texture).

Registration: call :func:`register` after ``panels.CLASSES`` (the panel's parent is ``VIEW3D_PT_aware3d``)
and :func:`unregister` before they go. Like the rest of the add-on it never imports torch or the backend.
"""

from __future__ import annotations

import base64
import contextlib
import math
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from mathutils import Matrix, Vector

from . import api, panel_common, prefs, scene_import, session, storage, texture_scene
from .client import BackendError, JobHandle
from .panel_common import panel_state, safe_name
from .panels import ORDER

PREVIEW_IMAGE = "Aware3D View Preview"
MAX_INLINE_BYTES = 700_000  # base64 of this fits the protocol's 1 MiB request limit
RING_COLLECTION = "Aware3D Cameras"
FFHQ_FOCAL = 4.2647  # the generator's focal length in image widths
FFHQ_RADIUS_M = 1.35  # the generator's orbit radius (2.7 units of 0.5 m)
FFHQ_PIVOT_LOCAL = (0.0, -0.1, 0.0)  # the generator's look-at point in a head's own frame (metres)
SENSOR_MM = 36.0

GENERATORS = [("AUTO", "Auto", "The diffusion view model when it is installed, else Projection"),
              ("DIFFUSION", "Diffusion", "Generate every view with the conditional view model"),
              ("PROJECTION", "Projection", "No model: re-project the mesh's own colours (a quick check of "
                                           "cameras and layers)")]


class AWARE3D_PG_views(bpy.types.PropertyGroup):
    """Novel-view texture settings (per scene, saved with the file)."""

    ring_count: IntProperty(name="Ring cameras", default=8, min=1, max=64,
                            description="Cameras in the ring made when no camera is selected")
    ring_pitch: FloatProperty(name="Ring pitch", default=0.0, min=-80.0, max=80.0,
                              description="Degrees above (+) or below (-) the object's centre")
    generator: EnumProperty(name="Generator", items=GENERATORS, default="AUTO")
    size: IntProperty(name="View size", default=64, min=16, max=1024,
                      description="Longer side of every generated view, in pixels")
    texture_size: IntProperty(name="Texture size", default=1024, min=64, max=8192)
    exponent: FloatProperty(name="Weight exponent", default=3.0, min=0.1, max=64.0,
                            description="p of the cos^p view weight: higher gives sharper seams between views")
    steps: IntProperty(name="Steps", default=25, min=1, max=1000, description="Diffusion sampling steps")
    seed: IntProperty(name="Seed", default=0, min=0, max=2**31 - 1, description="Diffusion seed")
    bake: BoolProperty(name="Bake to one texture", default=False,
                       description="Use the one baked texture on its own UV map instead of blending the "
                                   "camera projections in the material")


class AWARE3D_PG_views_state(bpy.types.PropertyGroup):
    """Run-time results shown in the panel (on the WindowManager, never saved)."""

    preview_image: StringProperty(default="")
    view_text: StringProperty(default="")
    result_text: StringProperty(default="")


def _state() -> Any:
    return panel_state("aware3d_views")


# ----------------------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------------------


def ring_yaws(n: int) -> list[float]:
    """Frontal first, then alternating sides (0, +45, −45, +90, … for 8): texturing grows out from the front."""
    step = 360.0 / n
    yaws, k = [0.0], 1
    while len(yaws) < n:
        yaws.append(k * step)
        if len(yaws) < n:
            yaws.append(-k * step)
        k += 1
    return yaws


def _frame(obj: bpy.types.Object) -> tuple[Vector, Vector, float, Vector, float]:
    """(orbit centre, look-at point, distance, front direction, lens mm) of a ring that frames ``obj``.

    A generated head (``obj["aware3d"]``) gets the generator's own orbit (1.35 m around its origin, looking
    at its pivot, FFHQ lens: the cameras of ``aware3d texture --cameras ring:N``, the framing the view model
    was trained on); any other mesh a distance that fits its bounding sphere into the same lens."""
    mw = obj.matrix_world
    front = mw.to_3x3() @ Vector((0.0, -1.0, 0.0))  # a head faces −Y
    front.z = 0.0
    front = front.normalized() if front.length > 1e-6 else Vector((0.0, -1.0, 0.0))
    lens = FFHQ_FOCAL * SENSOR_MM
    if "aware3d" in obj:
        # The generator's frame: its centre is the object's origin only with the "Generator centre" origin
        # option; with the default "Base of the neck" it sits above the origin (obj["aware3d_centre"]).
        centre = Vector(tuple(obj.get("aware3d_centre", (0.0, 0.0, 0.0))))
        return (mw @ centre, mw @ (centre + Vector(FFHQ_PIVOT_LOCAL)), FFHQ_RADIUS_M * max(mw.to_scale()), front,
                lens)
    corners = [mw @ Vector(c) for c in obj.bound_box]
    lo = Vector(tuple(min(c[i] for c in corners) for i in range(3)))
    hi = Vector(tuple(max(c[i] for c in corners) for i in range(3)))
    radius = max((hi - lo).length / 2.0, 1e-3)
    half = math.atan(0.5 / FFHQ_FOCAL)
    centre = (lo + hi) / 2.0
    return centre, centre, 1.05 * radius / math.sin(half), front, lens


def make_camera_ring(obj: bpy.types.Object, count: int = 8, pitch: float = 0.0,
                     context: bpy.types.Context | None = None) -> list[bpy.types.Object]:
    """``count`` real cameras around ``obj`` (frontal first) in the collection "Aware3D Cameras <object>".

    An earlier ring of the same object is replaced. The cameras are ordinary objects: move or delete them
    before texturing. Their order is kept in ``cam["aware3d_order"]``."""
    if not 1 <= count <= 64:
        raise BackendError("BadCameras", f"a camera ring needs 1 to 64 cameras, got {count}", "e.g. 8")
    ctx = context or bpy.context
    scene = ctx.scene
    name = f"{RING_COLLECTION} {obj.name}"[:63]
    coll = bpy.data.collections.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
        scene.collection.children.link(coll)
    elif coll not in scene.collection.children_recursive:
        scene.collection.children.link(coll)
    for old in list(coll.objects):
        data = old.data
        bpy.data.objects.remove(old)
        if data is not None and data.users == 0 and isinstance(data, bpy.types.Camera):
            bpy.data.cameras.remove(data)
    centre, look, dist, front, lens = _frame(obj)
    p = math.radians(pitch)
    cams = []
    for k, yaw in enumerate(ring_yaws(count)):
        d = Matrix.Rotation(math.radians(yaw), 3, "Z") @ front
        eye = centre + dist * (math.cos(p) * d + Vector((0.0, 0.0, math.sin(p))))
        label = f"{obj.name}_yaw{yaw:+04.0f}"
        data = bpy.data.cameras.new(label)
        data.lens_unit = "MILLIMETERS"
        data.sensor_fit = "AUTO"
        data.sensor_width = SENSOR_MM
        data.lens = lens
        data.clip_start = max(0.01, dist / 100.0)
        data.clip_end = max(100.0, dist * 10.0)
        cam = bpy.data.objects.new(label, data)
        coll.objects.link(cam)
        cam.location = eye
        cam.rotation_euler = (look - eye).to_track_quat("-Z", "Y").to_euler()
        cam["aware3d_order"] = k
        cams.append(cam)
    if getattr(ctx, "view_layer", None) is not None:
        ctx.view_layer.update()  # matrix_world of the new cameras
    return cams


def remove_cameras(names: Sequence[str], collection: str | None = None) -> None:
    """Delete the camera objects ``names`` (and their data), and ``collection`` once it is empty.

    Why: a ring made for a job that failed or was cancelled is clutter the user never asked for."""
    for name in names:
        cam = bpy.data.objects.get(name)
        if cam is None or cam.type != "CAMERA":
            continue
        data = cam.data
        bpy.data.objects.remove(cam)
        if data is not None and data.users == 0:
            bpy.data.cameras.remove(data)
    coll = bpy.data.collections.get(collection) if collection else None
    if coll is not None and not coll.objects and not coll.children:
        bpy.data.collections.remove(coll)


def _ordered(cameras: Sequence[bpy.types.Object]) -> list[bpy.types.Object]:
    """Ring cameras in their ring order, the rest after them by name."""
    return sorted(cameras, key=lambda c: (0, int(c["aware3d_order"]), c.name) if "aware3d_order" in c
                  else (1, 0, c.name))


def pick_cameras(obj: bpy.types.Object, cameras: Sequence[bpy.types.Object] | None, ring: int | None,
                 pitch: float | None, context: bpy.types.Context) -> list[bpy.types.Object]:
    """The given cameras, else the selected camera objects, else a new ring around ``obj`` (its cameras are
    marked ``cam["aware3d_job_ring"]``: the job removes them if it does not finish)."""
    s = context.scene.aware3d_views
    if cameras is None:
        cameras = [o for o in (getattr(context, "selected_objects", None) or []) if o.type == "CAMERA"]
        if ring is not None and ring > 0:
            cameras = []
    cams = list(cameras)
    if not cams:
        cams = make_camera_ring(obj, int(ring or s.ring_count), float(s.ring_pitch if pitch is None else pitch),
                                context)
        for c in cams:
            c["aware3d_job_ring"] = True
    bad = [c.name for c in cams if getattr(c, "type", None) != "CAMERA"]
    if bad:
        raise BackendError("BadCameras", f"not camera objects: {', '.join(bad)}", "pass camera objects")
    return _ordered(cams)


# ----------------------------------------------------------------------------------------------------------
# The request and its result
# ----------------------------------------------------------------------------------------------------------


def _active_mesh(obj: bpy.types.Object | None, context: bpy.types.Context) -> bpy.types.Object:
    if obj is None:
        obj = getattr(context, "active_object", None) or getattr(context.view_layer.objects, "active", None)
    if obj is None:
        raise BackendError("NoMesh", "no active object to texture", "select a mesh object (e.g. a head) and "
                           "make it active")
    if obj.type != "MESH":
        raise BackendError("NoMesh", f"the active object {obj.name!r} is a {obj.type.lower()}, not a mesh",
                           "make a mesh object active; cameras are picked by selecting them too")
    if len(obj.data.polygons) == 0:
        raise BackendError("NoMesh", f"{obj.name!r} has no faces", "texture a mesh with faces")
    return obj


def request_args(obj: bpy.types.Object, cams: Sequence[bpy.types.Object], context: bpy.types.Context,
                 **overrides: Any) -> tuple[dict[str, Any], Path]:
    """The ``texture`` request for ``obj`` and ``cams`` (the mesh written to a GLB) and the GLB's path."""
    s = context.scene.aware3d_views
    origin = obj.matrix_world.translation.copy()
    try:
        cameras = [texture_scene.camera_dict(c, origin, context.scene) for c in cams]
        stem = f"{safe_name(obj.name, 40, 'mesh')}_{uuid.uuid4().hex[:8]}.glb"
        path = texture_scene.write_glb(prefs.user_dir("texture") / stem, texture_scene.mesh_arrays(obj))
    except scene_import.ImportFailed as exc:
        raise BackendError("BadInput", str(exc), "fix the mesh or the cameras and try again") from None
    args: dict[str, Any] = {"cameras": cameras, "generator": s.generator.lower(), "size": int(s.size),
                            "texture_size": int(s.texture_size), "exponent": float(s.exponent),
                            "steps": int(s.steps), "seed": int(s.seed), "device": session.device(context)}
    if prefs.backend_settings(context).kind == "tcp":  # a remote backend cannot read our files: send the bytes
        data = path.read_bytes()
        path.unlink(missing_ok=True)
        if len(data) > MAX_INLINE_BYTES:
            raise BackendError("MeshTooLarge", f"the mesh is {len(data) // 1000} KB; a remote backend takes at "
                               f"most {MAX_INLINE_BYTES // 1000} KB", "decimate the mesh (about 20 000 faces)")
        args["mesh_b64"] = base64.b64encode(data).decode("ascii")
    else:
        args["mesh"] = str(path)
    args.update(overrides)
    return args, path


def show_preview(path: str | None) -> bpy.types.Image | None:
    """Load (or reload) the latest generated view into one packed image datablock shown by the panel."""
    return panel_common.show_preview(path, PREVIEW_IMAGE, "aware3d_views")


def result_text(name: str, views: int, data: dict[str, Any]) -> str:
    """The status line of a finished texture: which generator really ran (``diffusion <model>`` or
    ``projection``), and why, when Auto fell back to projection (no silent fallback)."""
    label = str(data.get("generator_label") or data.get("generator", ""))
    psnr = [p for p in data.get("psnr_seen", []) if p is not None]
    note = data.get("generator_note")
    return (f"{name}: {views} views ({label})" + (f", mean PSNR {sum(psnr) / len(psnr):.1f} dB" if psnr else "")
            + (f". {note}" if note else ""))


def auto_generator_text(state: Any) -> tuple[str, str]:
    """What "Auto" will run, before the run, and an icon: from the backend's model list (the same folders the
    backend searches), so no request is needed; "not checked" until a backend listed its models."""
    if state is None or not state.models_folder:
        return "Auto: diffusion if its view model is installed (not checked yet)", "QUESTION"
    if state.views_model:
        return f"Auto: diffusion ({Path(state.views_model).stem})", "CHECKMARK"
    return "Auto: no view model installed: projection (the mesh's own colours)", "ERROR"


class TextureFuture(api.GenerateFuture):
    """A novel-view texture in flight; ``object`` is the textured mesh object once ``done()``, ``material``
    its new material, ``data`` the backend's summary (generator, cameras, PSNR per view, timings)."""

    material_name: str | None = None
    cameras: list[str]
    _shown_preview: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return self.handle.data

    @property
    def material(self) -> bpy.types.Material | None:
        return bpy.data.materials.get(self.material_name) if self.material_name else None


def texture_object_async(obj: bpy.types.Object | None = None, cameras: Sequence[bpy.types.Object] | None = None,
                         ring: int | None = None, pitch: float | None = None, bake: bool | None = None,
                         on_done: Callable[[TextureFuture], Any] | None = None,
                         on_progress: Callable[[TextureFuture], Any] | None = None,
                         context: bpy.types.Context | None = None, **args: Any) -> TextureFuture:
    """Start texturing ``obj`` (default: the active object) from ``cameras`` (default: the selected cameras;
    with none selected, or with ``ring=N``, a new ring of N cameras); returns at once.

    ``args`` override the request (``generator='projection'``, ``size=64``, ``texture_size=2048``,
    ``exponent=3``, ``steps``, ``seed``); the rest come from the panel's settings. ``on_done(future)`` runs
    on the main thread when the material is on the object (or after an error: check ``future.error``).
    """
    ctx = context or bpy.context
    target = _active_mesh(obj, ctx)
    cams = pick_cameras(target, cameras, ring, pitch, ctx)
    made = [c.name for c in cams if c.get("aware3d_job_ring")]
    ring_coll = f"{RING_COLLECTION} {target.name}"[:63]
    try:
        req, glb = request_args(target, cams, ctx, **args)
    except BackendError:
        remove_cameras(made, ring_coll)
        raise
    use_bake = bool(ctx.scene.aware3d_views.bake if bake is None else bake)
    obj_name, total = target.name, len(cams)
    st = _state()
    if st is not None:
        st.view_text, st.result_text = f"0/{total} views", ""
    future: TextureFuture

    def done(h: JobHandle) -> None:
        try:
            if h.state != "done":
                future.error = h.error or BackendError("Cancelled", "cancelled")
                remove_cameras(made, ring_coll)  # the ring this job made, not the user's cameras
                if h.state == "error":
                    session.record_error(future.error)
                return
            show_preview(h.files.get(f"view_{total - 1:02d}"))
            o = bpy.data.objects.get(obj_name)
            if o is None or o.type != "MESH":
                raise scene_import.ImportFailed(f"the object {obj_name!r} is gone")
            mat = texture_scene.apply_projection(o, h.files, use_bake)
            o["aware3d_views"] = {"cameras": list(h.data.get("cameras", [])),
                                  "generator": str(h.data.get("generator_label") or h.data.get("generator", "")),
                                  "bake": use_bake}
            try:  # a linked head's new images go to the avatars folder (storage.store_new_images)
                storage.store_new_images(o)
            except (OSError, RuntimeError) as exc:
                print(f"Aware3D: the texture stays packed in the .blend: {exc}")
            for c in made:  # the ring stays (the material uses its cameras' names): now the user's cameras
                cam = bpy.data.objects.get(c)
                if cam is not None and "aware3d_job_ring" in cam:
                    del cam["aware3d_job_ring"]
            future.object_name, future.material_name = o.name, mat.name
            text = result_text(o.name, total, h.data)
            if st is not None:
                st.result_text = text
            session.record_result(text)
            if not bpy.app.background:
                with contextlib.suppress(RuntimeError):
                    bpy.ops.ed.undo_push(message="Aware3D: novel-view texture")
        except (scene_import.ImportFailed, OSError, KeyError, ValueError) as exc:
            h.keep_folder = True  # for a look at what the backend sent
            future.error = BackendError("ImportFailed", f"could not apply the texture: {exc}",
                                        "the job folder is kept; see the system console")
            remove_cameras(made, ring_coll)
            session.record_error(future.error)
        finally:
            glb.unlink(missing_ok=True)
            future._finish()

    def progress(h: JobHandle) -> None:
        if h.stage == "views":
            if st is not None:
                st.view_text = f"{h.step}/{h.total} views" + (f" - {h.message}" if h.message else "")
            if h.preview and h.preview != getattr(future, "_shown_preview", None):
                future._shown_preview = h.preview
                show_preview(h.preview)
        if on_progress is not None:
            on_progress(future)

    try:
        # cleanup: the job folder goes when the job ends (after done() applied the texture), whatever the
        # outcome; a failed job's stays with the "Keep failed job folders" preference.
        handle = session.submit("texture", req, on_done=done, on_progress=progress, context=ctx, cleanup=True)
    except BackendError:
        glb.unlink(missing_ok=True)
        remove_cameras(made, ring_coll)
        raise
    future = TextureFuture(handle)
    future.cameras = [c.name for c in cams]
    if on_done is not None:
        future.add_done_callback(on_done)
    return future


def texture_object(obj: bpy.types.Object | None = None, cameras: Sequence[bpy.types.Object] | None = None,
                   ring: int | None = None, timeout: float | None = None, **kwargs: Any) -> bpy.types.Object:
    """Novel-view texture, blocking: returns the textured object (raises ``BackendError`` on failure)."""
    return texture_object_async(obj, cameras, ring, **kwargs).result(timeout)


# ----------------------------------------------------------------------------------------------------------
# Operators and panel
# ----------------------------------------------------------------------------------------------------------


def _busy_texturing() -> bool:
    return session.busy_with("texture")


class AWARE3D_OT_texture_views(bpy.types.Operator):
    """Generate a view from every selected camera (or a new ring) and texture the active mesh with them"""

    bl_idname = "aware3d.texture_views"
    bl_label = "Texture from Views"
    bl_options = {"REGISTER"}  # noqa: RUF012 - the undo step is pushed when the texture arrives

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not _busy_texturing()

    def execute(self, context: bpy.types.Context) -> set[str]:
        return session.execute_job(
            self, lambda: texture_object_async(context=context),
            lambda fut: f"Aware3D: textured {fut.result().name} from {len(fut.cameras)} views")


class AWARE3D_OT_add_camera_ring(bpy.types.Operator):
    """Add a ring of cameras around the active object (frontal first), to move before texturing"""

    bl_idname = "aware3d.add_camera_ring"
    bl_label = "Add Camera Ring"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - Blender reads a set

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.aware3d_views
        try:
            obj = _active_mesh(None, context)
            cams = make_camera_ring(obj, s.ring_count, s.ring_pitch, context)
        except BackendError as exc:
            session.record_error(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for o in context.selected_objects:
            o.select_set(False)
        for c in cams:
            c.select_set(True)
        with contextlib.suppress(AttributeError, RuntimeError):
            context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Aware3D: {len(cams)} cameras around {obj.name}")
        return {"FINISHED"}


class VIEW3D_PT_aware3d_views(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Aware3D"
    bl_label = "Novel-view textures"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["novel_views"]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.aware3d_views
        st = context.window_manager.aware3d_views
        obj = getattr(context, "active_object", None)
        if obj is not None and obj.type == "MESH":
            layout.label(text=f"Mesh: {obj.name}", icon="MESH_DATA")
        else:
            layout.label(text="Make a mesh object active", icon="INFO")
        cams = [o for o in (getattr(context, "selected_objects", None) or []) if o.type == "CAMERA"]
        if cams:
            layout.label(text=f"{len(cams)} selected camera(s)", icon="CAMERA_DATA")
        else:
            layout.label(text=f"No camera selected: a ring of {s.ring_count} is made", icon="CAMERA_DATA")
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(s, "ring_count")
        col.prop(s, "ring_pitch")
        layout.operator("aware3d.add_camera_ring", icon="CON_CAMERASOLVER")
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(s, "generator")
        col.prop(s, "size")
        col.prop(s, "texture_size")
        col.prop(s, "exponent")
        if s.generator != "PROJECTION":
            col.prop(s, "steps")
            col.prop(s, "seed")
        if s.generator == "AUTO":
            text, icon = auto_generator_text(context.window_manager.aware3d)
            row = layout.row()
            row.label(text=text, icon=icon)
            if icon == "QUESTION":
                row.operator("aware3d.refresh_models", text="", icon="FILE_REFRESH")
        col.prop(s, "bake")
        panel_common.draw_preview_and_lines(layout, st, (st.view_text, st.result_text), scale=6.0)
        state = context.window_manager.aware3d
        label = f"View {state.step}/{state.total}" if state.stage == "Views" else state.stage
        panel_common.draw_job_progress(layout, context, ("texture",), label)
        layout.operator("aware3d.texture_views", icon="TEXTURE")


CLASSES = (AWARE3D_PG_views, AWARE3D_PG_views_state, AWARE3D_OT_texture_views, AWARE3D_OT_add_camera_ring,
           VIEW3D_PT_aware3d_views)


def register() -> None:
    """Register after ``panels.CLASSES`` (the panel's parent must exist)."""
    panel_common.register_panel(CLASSES, "aware3d_views", AWARE3D_PG_views, AWARE3D_PG_views_state)


def unregister() -> None:
    panel_common.unregister_panel(CLASSES, "aware3d_views")
