# SPDX-License-Identifier: GPL-3.0-or-later
"""Aware3D for Blender: 3D-aware generative heads (EG3D / Mimic3D compatible) from a PyTorch backend.

The add-on itself imports nothing heavy (never torch, never the bundled ``backend`` package): generation runs
in a separate backend process that speaks JSON lines (see ``protocol.py`` and docs/blender.md). Submodules
are imported in :func:`register`, so that ``client`` and ``protocol`` stay importable without Blender.
Scripting: ``from bl_ext.user_default.aware3d import api`` (see ``api.py``).
"""

from __future__ import annotations


def _modules() -> tuple:  # type: ignore[type-arg]
    from . import operators, panel_gallery, panel_invert, panel_views, panels, prefs, props

    return props, prefs, operators, panels, panel_invert, panel_views, panel_gallery


def register() -> None:
    import bpy

    from . import storage

    props, prefs, operators, panels, panel_invert, panel_views, panel_gallery = _modules()
    props.register()
    bpy.utils.register_class(prefs.AWARE3D_AP_preferences)
    for cls in operators.CLASSES + panels.CLASSES:
        bpy.utils.register_class(cls)
    panel_invert.register()  # sub-panels of the main one: after it
    panel_views.register()
    panel_gallery.register()
    storage.register()


def unregister() -> None:
    import bpy

    from . import session, storage

    session.shutdown()
    storage.unregister()
    props, prefs, operators, panels, panel_invert, panel_views, panel_gallery = _modules()
    panel_gallery.unregister()
    panel_views.unregister()
    panel_invert.unregister()
    for cls in reversed(operators.CLASSES + panels.CLASSES):
        bpy.utils.unregister_class(cls)
    bpy.utils.unregister_class(prefs.AWARE3D_AP_preferences)
    props.unregister()
