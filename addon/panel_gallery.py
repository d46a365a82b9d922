# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Gallery" sub-panel: a page of seed thumbnails to pick a head by looking before making its mesh.

Flow: set the start seed, the page size and the truncation, press **Show Page** (or Previous / Next): the
backend's ``thumbnails`` job renders one fast frontal image per seed (about a second for 8 when the model is
warm; see docs/blender.md) and the grid fills when it ends. Each thumbnail has a button that runs the existing
**Generate** operator (``aware3d.generate``) with that thumbnail's seed and truncation, so the mesh is the head
the thumbnail shows.

The thumbnails live in a ``bpy.utils.previews`` collection (never saved in the .blend) loaded from copies in
the extension's user folder (``gallery/``), because the job folder is removed when the job ends; the previous
page's copies are removed when a new page arrives. Like the rest of the add-on it never imports torch.

Registration: :func:`register` after ``panels.CLASSES`` (the panel's parent is ``VIEW3D_PT_aware3d``).
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import api, panel_common, prefs, session
from .client import BackendError, JobHandle
from .panels import ORDER

OP = "thumbnails"
SEED_MAX = 2**31 - 1  # the generate operator's seed property is a signed 32-bit int
IMAGES = [("FINAL", "Final image", "The model's output image (super-resolution included when it is cheap)"),
          ("RAW", "Raw render", "The volume render at the neural rendering resolution: fastest, blurrier")]


class AWARE3D_PG_gallery(bpy.types.PropertyGroup):
    """Gallery settings (per scene, saved with the file)."""

    start: IntProperty(name="Start seed", default=0, min=0, max=SEED_MAX,
                       description="The first seed of page 1")
    page: IntProperty(name="Page", default=0, min=0, description="Page shown (0 is the first)")
    count: IntProperty(name="Per page", default=8, min=1, max=64, description="Thumbnails per page")
    columns: IntProperty(name="Columns", default=4, min=1, max=8, description="Thumbnails per row")
    truncation: FloatProperty(name="Truncation", default=0.7, min=0.0, max=2.0,
                              description="Truncation psi of the thumbnails and of the heads made from them")
    image: EnumProperty(name="Image", items=IMAGES, default="FINAL")
    scale: FloatProperty(name="Thumbnail size", default=4.0, min=1.0, max=20.0,
                         description="How large each thumbnail is drawn")


class AWARE3D_PG_gallery_state(bpy.types.PropertyGroup):
    """Run-time state shown in the panel (on the WindowManager, never saved)."""

    page_text: StringProperty(default="")
    seeds: StringProperty(default="", description="Seeds of the page shown, comma-separated")


@dataclass(frozen=True)
class Thumb:
    """One thumbnail of the page shown: what "generate this one" needs, and its preview's key."""

    seed: int
    truncation: float
    key: str
    path: str


_previews: Any = None  # the bpy.utils.previews collection
_page: list[Thumb] = []
_folder: Path | None = None  # copies of the page's PNGs


def _state() -> Any:
    return panel_common.panel_state("aware3d_gallery")


def thumbnails() -> list[Thumb]:
    """The page shown (scripting and tests)."""
    return list(_page)


def preview(thumb: Thumb) -> Any:
    """The ``ImagePreview`` of a thumbnail (or None before a page arrived)."""
    return None if _previews is None else _previews.get(thumb.key)


def page_seeds(start: int, page: int, count: int) -> list[int]:
    """The seeds a page holds (the backend's rule: ``start + page·count …``)."""
    first = start + page * count
    return list(range(first, first + count))


# ----------------------------------------------------------------------------------------------------------
# The request and its result
# ----------------------------------------------------------------------------------------------------------


def request_args(context: bpy.types.Context, **overrides: Any) -> dict[str, Any]:
    """The ``thumbnails`` request from the panel's settings (the model is the Generate panel's)."""
    g = context.scene.aware3d_gallery
    args: dict[str, Any] = {"model": context.scene.aware3d.model or None, "start": int(g.start),
                            "page": int(g.page), "count": int(g.count), "truncation": float(g.truncation),
                            "image": g.image.lower(), "device": session.device(context)}
    args.update(overrides)
    last = page_seeds(args["start"], args["page"], args["count"])[-1]
    if last > SEED_MAX:
        raise BackendError("BadRequest", f"page {args['page'] + 1} ends at seed {last}, past {SEED_MAX}",
                           "go to an earlier page or lower the start seed")
    return args


def _clear_page() -> None:
    global _folder
    _page.clear()
    if _previews is not None:
        _previews.clear()
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
        _folder = None


def show_page(data: dict[str, Any], files: dict[str, str]) -> list[Thumb]:
    """Replace the page shown with a ``thumbnails`` result: copy its PNGs out of the job folder (removed when
    the job ends) and load them as previews."""
    global _folder
    _clear_page()
    _folder = prefs.user_dir("gallery") / uuid.uuid4().hex[:12]
    _folder.mkdir(parents=True, exist_ok=True)
    for t in data.get("thumbnails", []):
        src = Path(files[t["file"]])
        dest = _folder / src.name
        shutil.copyfile(src, dest)
        thumb = Thumb(int(t["seed"]), float(t["truncation"]), f"seed{t['seed']}", str(dest))
        if _previews is not None:
            _previews.load(thumb.key, thumb.path, "IMAGE")
        _page.append(thumb)
    st = _state()
    if st is not None:
        seeds = [t.seed for t in _page]
        st.seeds = ",".join(map(str, seeds))
        st.page_text = (f"Page {int(data.get('page', 0)) + 1}: seeds {seeds[0]}–{seeds[-1]}, truncation "
                        f"{float(data.get('truncation', 0)):.2f}" if seeds else "")
    return thumbnails()


class GalleryFuture(api.GenerateFuture):
    """A gallery page in flight; ``thumbs`` is the page once ``done()``."""

    thumbs: list[Thumb]

    def result(self, timeout: float | None = None) -> list[Thumb]:  # type: ignore[override]
        session.wait(self.handle, timeout)
        if self.error is not None:
            raise self.error
        return self.thumbs


def load_page_async(context: bpy.types.Context | None = None,
                    on_done: Callable[[GalleryFuture], Any] | None = None, **args: Any) -> GalleryFuture:
    """Start rendering a page (the panel's settings, ``args`` override the request); returns at once."""
    ctx = context or bpy.context
    req = request_args(ctx, **args)
    future: GalleryFuture

    def done(h: JobHandle) -> None:
        try:
            if h.state != "done":
                future.error = h.error or BackendError("Cancelled", "cancelled")
                if h.state == "error":
                    session.record_error(future.error)
                return
            future.thumbs = show_page(h.data, h.files)
            session.record_result(f"Gallery: {len(future.thumbs)} seeds")
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            future.error = BackendError("ImportFailed", f"could not show the gallery page: {exc}",
                                        "see the system console")
            session.record_error(future.error)
        finally:
            future._finish()

    handle = session.submit(OP, req, on_done=done, context=ctx, cleanup=True)
    future = GalleryFuture(handle)
    future.thumbs = []
    if on_done is not None:
        future.add_done_callback(on_done)  # type: ignore[arg-type]
    return future


def load_page(timeout: float | None = None, **kwargs: Any) -> list[Thumb]:
    """A gallery page, blocking: returns its thumbnails (raises ``BackendError`` on failure)."""
    return load_page_async(**kwargs).result(timeout)


# ----------------------------------------------------------------------------------------------------------
# Operators and panel
# ----------------------------------------------------------------------------------------------------------

STEPS = [("SHOW", "Show", "Render the page set in the panel"), ("NEXT", "Next", "The next page"),
         ("PREVIOUS", "Previous", "The previous page")]


class AWARE3D_OT_gallery_page(bpy.types.Operator):
    """Render a page of seed thumbnails (fast frontal renders) to pick a head from"""

    bl_idname = "aware3d.gallery_page"
    bl_label = "Show Page"
    bl_options = {"REGISTER"}  # noqa: RUF012 - Blender reads a set

    step: EnumProperty(name="Step", items=STEPS, default="SHOW")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not session.busy_with(OP)

    def execute(self, context: bpy.types.Context) -> set[str]:
        g = context.scene.aware3d_gallery
        if self.step == "NEXT":
            g.page += 1
        elif self.step == "PREVIOUS":
            g.page = max(0, g.page - 1)
        return session.execute_job(self, lambda: load_page_async(context=context),
                                   lambda fut: f"Aware3D: gallery page of {len(fut.thumbs)} seeds")


def _draw_grid(layout: bpy.types.UILayout, g: Any) -> None:
    """The thumbnails in rows of ``g.columns``, each with a button that generates its seed."""
    grid = layout.grid_flow(row_major=True, columns=int(g.columns), even_columns=True, even_rows=True,
                            align=True)
    for t in _page:
        col = grid.column(align=True)
        p = preview(t)
        if p is not None:
            col.template_icon(icon_value=p.icon_id, scale=float(g.scale))
        op = col.operator("aware3d.generate", text=str(t.seed), icon="MESH_MONKEY")
        op.seed = t.seed
        op.truncation = t.truncation


class VIEW3D_PT_aware3d_gallery(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Aware3D"
    bl_label = "Gallery"
    bl_parent_id = "VIEW3D_PT_aware3d"
    bl_order = ORDER["generate"] + 5
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012 - Blender reads a set

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        g = context.scene.aware3d_gallery
        st = context.window_manager.aware3d_gallery
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        for name in ("start", "count", "truncation", "image", "columns", "scale"):
            col.prop(g, name)
        row = layout.row(align=True)
        prev = row.row(align=True)
        prev.enabled = g.page > 0
        prev.operator("aware3d.gallery_page", text="", icon="TRIA_LEFT").step = "PREVIOUS"
        seeds = page_seeds(g.start, g.page, g.count)
        row.operator("aware3d.gallery_page", text=f"Page {g.page + 1} ({seeds[0]}–{seeds[-1]})",
                     icon="IMAGE_DATA").step = "SHOW"
        row.operator("aware3d.gallery_page", text="", icon="TRIA_RIGHT").step = "NEXT"
        panel_common.draw_job_progress(layout, context, (OP,), "Thumbnails")
        if st.page_text:
            layout.label(text=st.page_text)
        _draw_grid(layout, g)


CLASSES = (AWARE3D_PG_gallery, AWARE3D_PG_gallery_state, AWARE3D_OT_gallery_page, VIEW3D_PT_aware3d_gallery)


def register() -> None:
    """Register after ``panels.CLASSES`` (the panel's parent must exist)."""
    global _previews
    import bpy.utils.previews

    panel_common.register_panel(CLASSES, "aware3d_gallery", AWARE3D_PG_gallery, AWARE3D_PG_gallery_state)
    _previews = bpy.utils.previews.new()


def unregister() -> None:
    global _previews
    import bpy.utils.previews

    _clear_page()
    if _previews is not None:
        with contextlib.suppress(KeyError, RuntimeError):
            bpy.utils.previews.remove(_previews)
        _previews = None
    panel_common.unregister_panel(CLASSES, "aware3d_gallery")
