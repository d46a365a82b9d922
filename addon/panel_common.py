"""What the Photo to 3D and Novel-view texture sub-panels share.

Each keeps its settings on the scene and its live state (preview image, result lines) on the window manager
under its own attribute; the helpers here take that attribute's name, so the two panels differ only in what
they draw and send.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bpy
from bpy.props import PointerProperty


def safe_name(name: str, limit: int, fallback: str) -> str:
    """``name`` as a file-name stem: letters, digits, - and _ only, at most ``limit`` characters."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:limit] or fallback


def panel_state(attr: str) -> Any:
    """The window manager's ``attr`` property group (None before registration or without a window manager)."""
    wm = bpy.context.window_manager if hasattr(bpy.context, "window_manager") else None
    if wm is None and len(bpy.data.window_managers):
        wm = bpy.data.window_managers[0]
    return getattr(wm, attr, None)


def show_preview(path: str | None, image_name: str, state_attr: str) -> bpy.types.Image | None:
    """Load (or reload) ``path`` into the one packed image datablock ``image_name`` that a panel shows."""
    if not path or not Path(path).is_file():
        return None
    img = bpy.data.images.get(image_name)
    if img is not None:
        bpy.data.images.remove(img)
    img = bpy.data.images.load(path, check_existing=False)
    img.name = image_name
    img.pack()
    with contextlib.suppress(Exception):  # no previews in background mode
        img.preview_ensure()
    st = panel_state(state_attr)
    if st is not None:
        st.preview_image = img.name
    return img


def draw_preview_and_lines(layout: bpy.types.UILayout, st: Any, lines: Sequence[str], scale: float) -> None:
    """The panel's preview image (when loaded) and its non-empty result lines."""
    img = bpy.data.images.get(st.preview_image) if st.preview_image else None
    if img is not None and img.preview is not None:
        layout.template_icon(icon_value=img.preview.icon_id, scale=scale)
    for text in lines:
        if text:
            layout.label(text=text)


def draw_job_progress(layout: bpy.types.UILayout, context: bpy.types.Context, ops: Sequence[str],
                      label: str) -> None:
    """A progress bar with a cancel button while one of this panel's jobs (``ops``) runs."""
    state = context.window_manager.aware3d
    if state.busy and state.op in ops:
        row = layout.row(align=True)
        row.progress(factor=state.fraction, type="BAR", text=label + (f" · ETA {state.eta}" if state.eta else ""))
        row.operator("aware3d.cancel", text="", icon="CANCEL")


def register_panel(classes: Sequence[type], attr: str, settings: type, state: type) -> None:
    """Register ``classes`` and attach ``settings`` to the scene and ``state`` to the window manager as ``attr``."""
    for cls in classes:
        bpy.utils.register_class(cls)
    setattr(bpy.types.Scene, attr, PointerProperty(type=settings))
    setattr(bpy.types.WindowManager, attr, PointerProperty(type=state))


def unregister_panel(classes: Sequence[type], attr: str) -> None:
    for owner in (bpy.types.WindowManager, bpy.types.Scene):
        if hasattr(owner, attr):
            delattr(owner, attr)
    for cls in reversed(classes):
        with contextlib.suppress(RuntimeError):
            bpy.utils.unregister_class(cls)
