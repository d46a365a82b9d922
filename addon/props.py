# SPDX-License-Identifier: GPL-3.0-or-later
"""Properties: generation settings on the Scene, progress and backend state on the WindowManager.

Why the split: settings are the user's choices and belong in the .blend; progress, errors and the model list
are run-time state that must not dirty or be saved into the file, so they live on the WindowManager.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

COLOUR_MODES = [
    ("VERTEX", "Vertex colours", "Colours stored per vertex (fast, no UVs)"),
    ("TEXTURE", "Texture", "A baked texture on an automatic UV map"),
    ("NONE", "None", "Geometry only"),
]


ORIGINS = [
    ("BASE", "Base of the neck", "The origin at the mesh's lowest point, centred on the head: the head stands "
                                 "on the 3D cursor"),
    ("CENTRE", "Generator centre", "The origin at the generator's centre (the head floats around it)"),
]
SCALE_MODES = [
    ("METRIC", "Generator size", "The generator's metric size (a head about 0.2 m wide)"),
    ("HEIGHT", "Head height", "Scale so the mesh (head and neck) is this tall, in metres"),
    ("FACTOR", "Factor", "Multiply the generator's size by a factor"),
]


class AWARE3D_PG_settings(bpy.types.PropertyGroup):
    """What Generate uses (per scene, saved with the file)."""

    model: StringProperty(name="Model", default="",
                          description="Model name (empty: the default model); pick from the list or type a "
                                      "name, a path or random:CONFIG")
    seed: IntProperty(name="Seed", default=0, min=0, max=2**31 - 1, description="Latent seed: same seed, same head")
    randomise: BoolProperty(name="Randomise", default=False, description="Pick a new random seed on every Generate")
    truncation: FloatProperty(name="Truncation", default=0.7, min=0.0, max=2.0, soft_max=1.2,
                              description="Truncation psi: lower is more average and cleaner, higher more varied")
    resolution: IntProperty(name="Mesh resolution", default=128, min=32, max=1024, soft_max=512,
                            description="Density grid size per axis for marching cubes (higher: more detail, "
                                        "slower)")
    faces: IntProperty(name="Target faces", default=30000, min=0, max=2_000_000, soft_max=200_000,
                       description="Decimate to about this many triangles (0 keeps every face)")
    colour_mode: EnumProperty(name="Colour", items=COLOUR_MODES, default="VERTEX")
    texture_size: IntProperty(name="Texture size", default=1024, min=64, max=8192)
    add_camera: BoolProperty(name="Add camera", default=True,
                             description="Also add a camera at the generator's pose (parented to the head)")
    origin: EnumProperty(name="Origin", items=ORIGINS, default="BASE")
    scale_mode: EnumProperty(name="Scale", items=SCALE_MODES, default="METRIC")
    head_height: FloatProperty(name="Head height", default=0.25, min=0.001, soft_max=5.0, unit="LENGTH",
                               description="Real-world height of the mesh (head and neck), in metres")
    scale_factor: FloatProperty(name="Scale factor", default=1.0, min=0.001, soft_max=100.0,
                                description="The generator's size times this")


class AWARE3D_PG_model(bpy.types.PropertyGroup):
    """One entry of the model picker (``name`` is the model name the backend resolves)."""

    source: StringProperty()
    config: StringProperty()
    path: StringProperty()
    kind: StringProperty()


class AWARE3D_PG_progress(bpy.types.PropertyGroup):
    """Run-time state shown in the panel (on the WindowManager, never saved)."""

    busy: BoolProperty(default=False)
    op: StringProperty(default="")
    stage: StringProperty(default="")
    step: IntProperty(default=0)
    total: IntProperty(default=0)
    fraction: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    eta: StringProperty(default="")
    message: StringProperty(default="")
    status: StringProperty(default="Backend not started")
    last_result: StringProperty(default="")
    last_error: StringProperty(default="")
    last_hint: StringProperty(default="")
    last_error_type: StringProperty(default="")
    models: CollectionProperty(type=AWARE3D_PG_model)
    models_folder: StringProperty(default="")  # "" until the backend listed its models
    views_model: StringProperty(default="")  # the view model "Auto" texturing finds ("" none), from that list


CLASSES = (AWARE3D_PG_settings, AWARE3D_PG_model, AWARE3D_PG_progress)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.aware3d = PointerProperty(type=AWARE3D_PG_settings)
    bpy.types.WindowManager.aware3d = PointerProperty(type=AWARE3D_PG_progress)


def unregister() -> None:
    del bpy.types.WindowManager.aware3d
    del bpy.types.Scene.aware3d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


def window_manager() -> bpy.types.WindowManager | None:
    wms = bpy.data.window_managers
    return wms[0] if len(wms) else None


def progress_state() -> AWARE3D_PG_progress | None:
    wm = window_manager()
    return getattr(wm, "aware3d", None) if wm is not None else None
