# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Aware3D" tab in the 3D Viewport's sidebar.

Layout: the main panel (status, progress, errors) with sub-panels Model and Generate. Later issues add the
"Photo to 3D" and "Novel-view textures" sub-panels with ``bl_parent_id = "VIEW3D_PT_aware3d"`` and a
``bl_order`` from :data:`ORDER` (gaps left for them), so nothing here has to change.
"""

from __future__ import annotations

import bpy

ORDER = {"model": 0, "generate": 10, "photo": 20, "novel_views": 30, "backend": 90}


class _Aware3DPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Aware3D"


class VIEW3D_PT_aware3d(_Aware3DPanel, bpy.types.Panel):
    bl_label = "Aware3D"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        state = getattr(context.window_manager, "aware3d", None)
        if state is None:
            return
        if state.busy:
            text = state.stage or "Working…"
            if state.total and state.stage:
                text += f" {state.step}/{state.total}"
            if state.eta:
                text += f" · ETA {state.eta}"
            row = layout.row(align=True)
            row.progress(factor=state.fraction, type="BAR", text=text)
            row.operator("aware3d.cancel", text="", icon="CANCEL")
            if state.message:
                layout.label(text=state.message)
        elif state.last_result:
            layout.label(text=state.last_result, icon="CHECKMARK")
        if state.last_error:
            box = layout.box()
            row = box.row()
            row.label(text=state.last_error, icon="ERROR")
            row.operator("aware3d.clear_error", text="", icon="X")
            if state.last_hint:
                box.label(text=state.last_hint, icon="INFO")


class VIEW3D_PT_aware3d_model(_Aware3DPanel, bpy.types.Panel):
    bl_label = "Model"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["model"]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.aware3d
        state = context.window_manager.aware3d
        row = layout.row(align=True)
        row.prop_search(settings, "model", state, "models", text="", icon="OUTLINER_OB_ARMATURE",
                        results_are_suggestions=True)
        row.operator("aware3d.refresh_models", text="", icon="FILE_REFRESH")
        if not settings.model:
            layout.label(text="Empty: the default model", icon="INFO")
        row = layout.row(align=True)
        row.operator("aware3d.add_model_file", text="Add File", icon="FILE_NEW")
        row.operator("aware3d.add_model_url", text="Add URL", icon="URL")


class VIEW3D_PT_aware3d_generate(_Aware3DPanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["generate"]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.aware3d
        layout.use_property_split = True
        layout.use_property_decorate = False
        row = layout.row(align=True)
        row.prop(s, "seed")
        row.prop(s, "randomise", text="", icon="FILE_REFRESH")
        layout.prop(s, "truncation")
        layout.prop(s, "resolution")
        layout.prop(s, "faces")
        layout.prop(s, "colour_mode")
        if s.colour_mode == "TEXTURE":
            layout.prop(s, "texture_size")
        layout.prop(s, "add_camera")
        layout.prop(s, "origin")
        layout.prop(s, "scale_mode")
        if s.scale_mode == "HEIGHT":
            layout.prop(s, "head_height")
        elif s.scale_mode == "FACTOR":
            layout.prop(s, "scale_factor")
        layout.separator()
        layout.operator("aware3d.generate", icon="USER")


class VIEW3D_PT_aware3d_backend(_Aware3DPanel, bpy.types.Panel):
    bl_label = "Backend"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["backend"]
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012 - Blender reads a set

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        state = context.window_manager.aware3d
        layout.label(text=state.status)
        row = layout.row(align=True)
        row.operator("aware3d.doctor", icon="CHECKMARK")
        row.operator("aware3d.free_backend", icon="X")


CLASSES = (VIEW3D_PT_aware3d, VIEW3D_PT_aware3d_model, VIEW3D_PT_aware3d_generate, VIEW3D_PT_aware3d_backend)
