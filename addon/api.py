# SPDX-License-Identifier: GPL-3.0-or-later
"""The scripting API: generate heads (blocking or asynchronously) and manage the backend from Python.

    import importlib
    api = importlib.import_module("bl_ext.user_default.aware3d.api")
    head = api.generate(seed=3, faces=20000)                 # blocks, returns the new object
    fut = api.generate_async(seed=4, on_done=lambda f: print(f.object))
    fut.progress                                             # {'stage': 'grid', 'fraction': 0.4, ...}
    fut.cancel()

Arguments left out come from the scene's Aware3D settings (the panel). Blocking calls keep doing the timer's
work while they wait, so they also work in background mode; the asynchronous variant returns at once and its
callback runs on Blender's main thread when the head is in the scene.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import bpy

from . import scene_import, session, storage
from .client import BackendError, JobHandle

__all__ = ["BackendError", "GenerateFuture", "add_model", "avatar_path", "cancel", "doctor", "download_model",
           "free", "generate", "generate_async", "list_models", "make_camera_ring", "pack_head", "request",
           "texture_object", "texture_object_async", "unpack_head"]

COLOUR_MODES = ("vertex", "texture", "none")
ORIGINS = ("base", "centre")


class GenerateFuture:
    """A generation in flight. ``object`` is the new head once ``done()`` and no ``error``."""

    def __init__(self, handle: JobHandle) -> None:
        self.handle = handle
        self.object_name: str | None = None
        self.error: BackendError | None = None
        self.seconds: float | None = None
        self._callbacks: list[Callable[[GenerateFuture], Any]] = []
        self._finished = False

    def done(self) -> bool:
        return self._finished

    @property
    def cancelled(self) -> bool:
        return self.handle.state == "cancelled"

    @property
    def progress(self) -> dict[str, Any]:
        h = self.handle
        return {"state": h.state, "stage": h.stage, "step": h.step, "total": h.total,
                "fraction": h.progress_fraction(), "eta_s": h.eta_s, "message": h.message}

    @property
    def object(self) -> bpy.types.Object | None:
        return bpy.data.objects.get(self.object_name) if self.object_name else None

    def add_done_callback(self, fn: Callable[[GenerateFuture], Any]) -> None:
        if self._finished:
            fn(self)
        else:
            self._callbacks.append(fn)

    def cancel(self) -> None:
        session.cancel(self.handle)

    def result(self, timeout: float | None = None) -> bpy.types.Object:
        """Wait (pumping the poller) and return the new object; raises BackendError on error or cancel."""
        session.wait(self.handle, timeout)
        if self.error is not None:
            raise self.error
        obj = self.object
        if obj is None:
            raise BackendError("AddonError", "the head was generated but is no longer in the file", "")
        return obj

    def _finish(self) -> None:
        self._finished = True
        for fn in self._callbacks:
            fn(self)
        self._callbacks.clear()


def _colour_mode(value: str) -> str:
    mode = value.lower()
    if mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {value!r}")
    return mode


def _placement(s: Any, origin: str | None, scale: float | None, head_height: float | None
               ) -> dict[str, Any]:
    """``import_head``'s origin and scale arguments: the call's, else the panel's (checked here, before any
    work, so a typo fails at once)."""
    mode = (origin if origin is not None else s.origin).lower()
    if mode not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    if head_height is None and scale is None:
        if s.scale_mode == "HEIGHT":
            head_height = s.head_height
        elif s.scale_mode == "FACTOR":
            scale = s.scale_factor
    for label, value in (("head_height", head_height), ("scale", scale)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} must be positive, got {value}")
    return {"origin": mode.upper(), "scale": float(scale or 1.0),
            "head_height": None if head_height is None else float(head_height)}


def generate_async(seed: int | None = None, model: str | None = None, truncation: float | None = None,
                   resolution: int | None = None, faces: int | None = None, colour_mode: str | None = None,
                   camera: bool | None = None, texture_size: int | None = None, location: Any = None,
                   name: str | None = None, level: float | None = None, origin: str | None = None,
                   scale: float | None = None, head_height: float | None = None,
                   on_done: Callable[[GenerateFuture], Any] | None = None,
                   on_progress: Callable[[GenerateFuture], Any] | None = None,
                   context: bpy.types.Context | None = None) -> GenerateFuture:
    """Start generating a head; returns a :class:`GenerateFuture` at once.

    The head appears at ``location`` (default: the 3D cursor when called) in the active collection, with a
    material and, if ``camera``, a camera at the generator's pose. ``on_done(future)`` runs on the main
    thread after the object is in the scene (or after an error: check ``future.error``). ``level`` is the
    density of the surface (default: the model's own, which Aware3D models record; EG3D's is 10). ``origin``:
    'base' (the lowest point, so the head stands on ``location``) or 'centre' (the generator's centre);
    ``head_height`` (metres) or ``scale`` (a factor) sizes the head (default: the panel's; metric).
    """
    ctx = context or bpy.context
    scene = ctx.scene
    s = scene.aware3d
    if seed is None:
        if s.randomise:
            s.seed = random.randrange(0, 2**31 - 1)
        seed = s.seed
    if seed < 0 or seed >= 2**32:
        raise ValueError(f"seed must be between 0 and 2^32-1, got {seed}")
    model = s.model if model is None else model
    mode = _colour_mode(colour_mode if colour_mode is not None else s.colour_mode)
    with_camera = s.add_camera if camera is None else bool(camera)
    placement = _placement(s, origin, scale, head_height)
    loc = tuple(scene.cursor.location) if location is None else tuple(location)
    collection = getattr(ctx, "collection", None) or scene.collection
    coll_name, scene_name = collection.name, scene.name
    args = {"model": model or None, "seed": int(seed),
            "truncation": float(s.truncation if truncation is None else truncation),
            "resolution": int(s.resolution if resolution is None else resolution),
            "faces": int(s.faces if faces is None else faces), "colour_mode": mode,
            "texture_size": int(s.texture_size if texture_size is None else texture_size),
            "camera": with_camera, "device": session.device(ctx)}
    if level is not None:
        args["level"] = float(level)
    obj_name = name or f"Aware3D_{seed}"
    future: GenerateFuture

    def done(h: JobHandle) -> None:
        try:
            if h.state == "done":
                _apply(h, future, obj_name, loc, coll_name, scene_name, with_camera, placement)
            else:
                future.error = h.error or BackendError("Cancelled", "cancelled")
                if h.state == "error":
                    session.record_error(future.error)
        finally:
            future._finish()

    def progress(h: JobHandle) -> None:
        if on_progress is not None:
            on_progress(future)

    handle = session.submit("mesh", args, on_done=done, on_progress=progress, context=ctx, cleanup=True)
    future = GenerateFuture(handle)
    if on_done is not None:
        future.add_done_callback(on_done)
    return future


def import_result(h: JobHandle, future: GenerateFuture, name: str, location: tuple[float, ...], coll_name: str,
                  scene_name: str, meta: dict[str, Any], with_camera: bool,
                  placement: dict[str, Any] | None = None) -> bpy.types.Object | None:
    """Import a finished job's head into the scene and collection it was started from (looked up by name: they
    may have been renamed or deleted meanwhile); on failure record the error on ``future`` and return None.
    ``placement``: ``import_head``'s origin/scale arguments (default: the generator's centre and size)."""
    scene = bpy.data.scenes.get(scene_name) or bpy.context.scene
    collection = bpy.data.collections.get(coll_name) or scene.collection
    try:
        obj = scene_import.import_head(h.files, name, location, collection, meta, with_camera,
                                       **(placement or {}))
    except (scene_import.ImportFailed, OSError, KeyError, ValueError) as exc:
        h.keep_folder = True
        future.error = BackendError("ImportFailed", f"could not import the result: {exc}",
                                    "the job folder is kept; see the system console")
        session.record_error(future.error)
        return None
    future.object_name = obj.name
    return obj


def _apply(h: JobHandle, future: GenerateFuture, name: str, location: tuple[float, ...], coll_name: str,
           scene_name: str, with_camera: bool, placement: dict[str, Any]) -> None:
    meta = {k: v for k, v in h.data.items() if k in ("model", "config", "seed", "truncation", "colour_mode")}
    meta["origin"] = placement["origin"]
    obj = import_result(h, future, name, location, coll_name, scene_name, meta, with_camera, placement)
    if obj is None:
        return
    scene = bpy.data.scenes.get(scene_name) or bpy.context.scene
    future.seconds = h.data.get("seconds") and sum(h.data["seconds"].values())
    session.record_result(f"{obj.name}: {h.data.get('vertices', 0)} vertices, "
                          f"{h.data.get('faces', 0)} faces ({h.data.get('model', '')})")
    _select(obj, scene)  # the job folder goes after this callback (session.submit's cleanup)
    if not bpy.app.background:
        with contextlib.suppress(RuntimeError):  # no undo stack (e.g. during file load)
            bpy.ops.ed.undo_push(message="Aware3D: generate head")


def _select(obj: bpy.types.Object, scene: bpy.types.Scene) -> None:
    try:
        layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
        for o in layer.objects.selected:
            o.select_set(False)
        obj.select_set(True)
        layer.objects.active = obj
    except (AttributeError, RuntimeError, IndexError):
        pass


def generate(seed: int | None = None, model: str | None = None, truncation: float | None = None,
             resolution: int | None = None, faces: int | None = None, colour_mode: str | None = None,
             camera: bool | None = None, texture_size: int | None = None, location: Any = None,
             name: str | None = None, level: float | None = None, origin: str | None = None,
             scale: float | None = None, head_height: float | None = None, timeout: float | None = None,
             context: bpy.types.Context | None = None) -> bpy.types.Object:
    """Generate a head and return the new object (blocks; raises :class:`BackendError` on failure)."""
    future = generate_async(seed=seed, model=model, truncation=truncation, resolution=resolution, faces=faces,
                            colour_mode=colour_mode, camera=camera, texture_size=texture_size,
                            location=location, name=name, level=level, origin=origin, scale=scale,
                            head_height=head_height, context=context)
    return future.result(timeout)


def request(op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
    """Any protocol operation, blocking: returns the result's ``data`` (see docs/blender.md)."""
    h = session.wait(session.submit(op, args, show=False), timeout)
    if h.error is not None:
        raise h.error
    return h.data


def list_models(timeout: float | None = 60) -> list[dict[str, Any]]:
    """Bundled and user models (also refreshes the panel's picker)."""
    data = request("list_models", timeout)
    session.set_models(data)
    return list(data.get("models", []))


def doctor(device: str | None = None, timeout: float | None = 300) -> dict[str, Any]:
    """Versions, device, memory and a tiny timed inference, from the backend."""
    return request("doctor", timeout, device=device or session.device())


def add_model(path: str, name: str | None = None, overwrite: bool = False,
              timeout: float | None = None) -> dict[str, Any]:
    """Copy a .safetensors model (or convert an official EG3D/Mimic3D .pkl) into the models folder."""
    data = request("add_model", timeout, path=bpy.path.abspath(path), name=name, overwrite=overwrite)
    list_models()
    return data


def download_model(url: str, sha256: str | None = None, name: str | None = None, overwrite: bool = False,
                   timeout: float | None = None) -> dict[str, Any]:
    """Download a model (resumable, hash-checked); only with Blender's online access enabled."""
    if not bpy.app.online_access:
        raise BackendError("OnlineAccessDisabled", "downloading needs online access",
                           "Preferences > System > Network > Allow Online Access")
    data = request("download_model", timeout, url=url, sha256=sha256 or None, name=name, overwrite=overwrite,
                   online_access=True)
    list_models()
    return data


def texture_object_async(obj: bpy.types.Object | None = None, cameras: Any = None, ring: int | None = None,
                         **kwargs: Any) -> Any:
    """Novel-view texture for ``obj`` (default: the active mesh) from ``cameras`` (default: the selected
    camera objects; none selected, or ``ring=N``: a new ring of N cameras); returns a future at once.

    Keyword arguments: ``pitch`` (of a new ring), ``bake`` (use the one baked texture instead of the camera
    blend), ``generator`` ('auto', 'diffusion', 'projection'), ``size``, ``texture_size``, ``exponent``,
    ``steps``, ``seed``, ``on_done``, ``on_progress``, ``context``; the rest come from the panel. The future's
    ``object``, ``material``, ``data`` and ``cameras`` describe the result (see docs/blender.md).
    """
    from . import panel_views

    return panel_views.texture_object_async(obj, cameras, ring, **kwargs)


def texture_object(obj: bpy.types.Object | None = None, cameras: Any = None, ring: int | None = None,
                   timeout: float | None = None, **kwargs: Any) -> bpy.types.Object:
    """:func:`texture_object_async`, blocking: returns the textured object (raises BackendError on failure)."""
    return texture_object_async(obj, cameras, ring, **kwargs).result(timeout)


def make_camera_ring(obj: bpy.types.Object, count: int = 8, pitch: float = 0.0) -> list[bpy.types.Object]:
    """``count`` cameras around ``obj`` (frontal first) in a collection of their own, to move before texturing."""
    from . import panel_views

    return panel_views.make_camera_ring(obj, count, pitch)


def _head(obj: bpy.types.Object | None) -> bpy.types.Object:
    obj = obj if obj is not None else getattr(bpy.context, "active_object", None)
    if obj is None:
        raise BackendError("NoObject", "no head given and no active object", "pass a head or make it active")
    return obj


def avatar_path(obj: bpy.types.Object | None = None) -> str:
    """The avatar file of ``obj`` (default: the active object), absolute, for a command that reads it
    (``aware3d sample --avatar PATH``): the linked file, or the packed copy written back to the avatars folder
    and checked (size, SHA-256). Raises :class:`BackendError` when it is neither on disk nor packed."""
    return str(storage.avatar_path(_head(obj)))


def pack_head(obj: bpy.types.Object | None = None) -> str:
    """Put the head's avatar (a Text datablock) and texture images into the .blend; returns what was done."""
    return storage.pack_head(_head(obj))


def unpack_head(obj: bpy.types.Object | None = None) -> str:
    """Make the head's avatar and texture images files in the avatars folder, linked relative to the .blend
    (written back from the .blend where needed); returns what was done."""
    return storage.unpack_head(_head(obj))


def cancel() -> None:
    """Cancel the job the panel shows (it stops within one step)."""
    session.cancel()


def free() -> None:
    """End the backend process and free all its memory; the next call starts a new one."""
    session.free()
