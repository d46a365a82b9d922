# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators: thin wrappers over :mod:`.api` and :mod:`.session` (the logic lives there, testable).

``bpy.ops.aware3d.generate(seed=3)`` overrides only the properties it is given; the rest come from the
scene's settings. With a UI it returns at once and the head appears when the backend is done (one undo step);
in background mode it waits.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import api, prefs, session
from .client import BackendError
from .props import COLOUR_MODES, ORIGINS


def _report_error(op: bpy.types.Operator, exc: BackendError | Exception) -> set[str]:
    session.record_error(exc)
    op.report({"ERROR"}, str(exc))
    return {"CANCELLED"}


class AWARE3D_OT_generate(bpy.types.Operator):
    """Generate a head from the seed and place it at the 3D cursor"""

    bl_idname = "aware3d.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}  # noqa: RUF012 - the undo step is pushed when the head arrives

    seed: IntProperty(name="Seed", min=0, max=2**31 - 1)
    model: StringProperty(name="Model")
    truncation: FloatProperty(name="Truncation", min=0.0, max=2.0)
    resolution: IntProperty(name="Mesh resolution", min=32, max=1024)
    faces: IntProperty(name="Target faces", min=0)
    colour_mode: EnumProperty(name="Colour", items=COLOUR_MODES)
    camera: BoolProperty(name="Add camera")
    origin: EnumProperty(name="Origin", items=ORIGINS)

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        state = getattr(context.window_manager, "aware3d", None)
        return context.scene is not None and not (state is not None and state.busy and state.op == "mesh")

    def _given(self, name: str) -> object | None:
        return getattr(self, name) if self.properties.is_property_set(name) else None

    def execute(self, context: bpy.types.Context) -> set[str]:
        kwargs = {k: self._given(k) for k in ("seed", "model", "truncation", "resolution", "faces", "camera")}
        mode, origin = self._given("colour_mode"), self._given("origin")
        kwargs["colour_mode"] = mode.lower() if isinstance(mode, str) else None
        kwargs["origin"] = origin.lower() if isinstance(origin, str) else None
        try:
            if session.blocking():
                obj = api.generate(context=context, **kwargs)  # type: ignore[arg-type]
                self.report({"INFO"}, f"Aware3D: added {obj.name}")
            else:
                api.generate_async(context=context, **kwargs)  # type: ignore[arg-type]
        except (BackendError, ValueError) as exc:
            return _report_error(self, exc)
        return {"FINISHED"}


class AWARE3D_OT_cancel(bpy.types.Operator):
    """Cancel the running job (it stops within one step)"""

    bl_idname = "aware3d.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        session.cancel()
        return {"FINISHED"}


class AWARE3D_OT_free_backend(bpy.types.Operator):
    """End the backend process and free all its memory (the next request starts a new one)"""

    bl_idname = "aware3d.free_backend"
    bl_label = "Free Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        session.free()
        return {"FINISHED"}


class AWARE3D_OT_clear_error(bpy.types.Operator):
    """Dismiss the last error"""

    bl_idname = "aware3d.clear_error"
    bl_label = "Dismiss"

    def execute(self, context: bpy.types.Context) -> set[str]:
        state = context.window_manager.aware3d
        state.last_error = state.last_hint = state.last_error_type = ""
        return {"FINISHED"}


class AWARE3D_OT_refresh_models(bpy.types.Operator):
    """List the bundled models and those in the models folder"""

    bl_idname = "aware3d.refresh_models"
    bl_label = "Refresh Models"

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            if session.blocking():
                api.list_models()
            else:
                session.submit("list_models", {}, show=False, on_done=session._models_loaded, context=context)
        except BackendError as exc:
            return _report_error(self, exc)
        return {"FINISHED"}


def _after_add(h: object) -> None:
    if getattr(h, "state", "") == "done":
        session.submit("list_models", {}, show=False, on_done=session._models_loaded)


class AWARE3D_OT_add_model_file(bpy.types.Operator, ImportHelper):
    """Add a model file: .safetensors, or an official EG3D/Mimic3D .pkl (converted safely on the way)"""

    bl_idname = "aware3d.add_model_file"
    bl_label = "Add Model File"

    filter_glob: StringProperty(default="*.safetensors;*.pkl", options={"HIDDEN"})
    overwrite: BoolProperty(name="Overwrite", default=False)

    def execute(self, context: bpy.types.Context) -> set[str]:
        args = {"path": bpy.path.abspath(self.filepath), "overwrite": self.overwrite}
        try:
            if session.blocking():
                data = api.add_model(self.filepath, overwrite=self.overwrite)
                self.report({"INFO"}, f"Aware3D: added model {data.get('name')}")
            else:
                session.submit("add_model", args, on_done=_after_add, context=context)
        except BackendError as exc:
            return _report_error(self, exc)
        return {"FINISHED"}


class AWARE3D_OT_add_model_url(bpy.types.Operator):
    """Download a model (resumable, SHA-256 checked). Needs Blender's online access"""

    bl_idname = "aware3d.add_model_url"
    bl_label = "Add Model from URL"

    url: StringProperty(name="URL")
    sha256: StringProperty(name="SHA-256", description="Expected hash (recommended)")
    name: StringProperty(name="File name", description="Optional; default: from the URL")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not bpy.app.online_access:
            cls.poll_message_set("Enable online access: Preferences > System > Network")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self, width=500)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self.url:
            self.report({"ERROR"}, "Give a URL")
            return {"CANCELLED"}
        args = {"url": self.url, "sha256": self.sha256 or None, "name": self.name or None, "online_access": True}
        try:
            if session.blocking():
                api.download_model(self.url, self.sha256 or None, self.name or None)
            else:
                session.submit("download_model", args, on_done=_after_add, context=context)
        except BackendError as exc:
            return _report_error(self, exc)
        return {"FINISHED"}


class AWARE3D_OT_doctor(bpy.types.Operator):
    """Check the backend: versions, device, memory and a tiny timed inference"""

    bl_idname = "aware3d.doctor"
    bl_label = "Check Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        def done(h: object) -> None:
            data = getattr(h, "data", {})
            if getattr(h, "state", "") == "done":
                mem = data.get("memory", {})
                free = mem.get("free_bytes")
                session.record_result(
                    f"torch {data.get('torch')} on {data.get('device')}"
                    + (f", {free / 2**30:.1f} GiB free" if free else "")
                    + f", tiny inference {data.get('tiny_inference_s', 0):.2f} s")

        try:
            h = session.submit("doctor", {"device": session.device(context)}, on_done=done, context=context)
            if session.blocking():
                session.wait(h)
        except BackendError as exc:
            return _report_error(self, exc)
        return {"FINISHED"}


class AWARE3D_OT_setup_backend(bpy.types.Operator):
    """Create the backend environment in the extension's user folder and install pinned PyTorch (online)"""

    bl_idname = "aware3d.setup_backend"
    bl_label = "Set up Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not bpy.app.online_access:
            cls.poll_message_set("Enable online access: Preferences > System > Network")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        from . import setup_env

        p = prefs.preferences(context)
        channel = p.torch_channel if p is not None else "cpu"
        try:
            task = setup_env.start(channel)
        except setup_env.SetupError as exc:
            return _report_error(self, BackendError("SetupFailed", str(exc), exc.hint))
        session.free()
        session.add_task(task)
        if session.blocking():
            while task.poll():
                pass
        return {"FINISHED"}


class _HeadFilesOperator(bpy.types.Operator):
    """Shared by Pack / Unpack: the active object's files, one undo step, the result in the status line."""

    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 - Blender reads a set

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = getattr(context, "active_object", None)
        return obj is not None and obj.library is None  # a linked library's object cannot be changed here

    def switch(self, obj: bpy.types.Object) -> str:
        raise NotImplementedError

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            text = self.switch(context.active_object)
        except (BackendError, OSError, RuntimeError) as exc:
            return _report_error(self, exc)
        session.record_result(text)
        self.report({"INFO"}, f"Aware3D: {text}")
        return {"FINISHED"}


class AWARE3D_OT_pack_head(_HeadFilesOperator):
    """Put the active head's avatar and texture images into the .blend (one file to send)"""

    bl_idname = "aware3d.pack_head"
    bl_label = "Pack into .blend"

    def switch(self, obj: bpy.types.Object) -> str:
        return api.pack_head(obj)


class AWARE3D_OT_unpack_head(_HeadFilesOperator):
    """Write the active head's avatar and texture images to the avatars folder and link them (a smaller
    .blend; copy the folder with it)"""

    bl_idname = "aware3d.unpack_head"
    bl_label = "Unpack to Files"

    def switch(self, obj: bpy.types.Object) -> str:
        return api.unpack_head(obj)


CLASSES = (AWARE3D_OT_generate, AWARE3D_OT_cancel, AWARE3D_OT_free_backend, AWARE3D_OT_clear_error,
           AWARE3D_OT_refresh_models, AWARE3D_OT_add_model_file, AWARE3D_OT_add_model_url, AWARE3D_OT_doctor,
           AWARE3D_OT_setup_backend, AWARE3D_OT_pack_head, AWARE3D_OT_unpack_head)
