# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's one backend session: the client, the timer poller, and the progress shown in the panel.

Non-blocking by design: requests return at once; a ``bpy.app.timers`` function (every ~0.1 s) calls
:func:`tick`, which drains the backend's events, runs callbacks (e.g. importing a finished mesh) on the main
thread and updates the WindowManager progress. Timers never fire in background mode (``blender -b``, the bpy
module), so there every call waits by pumping :func:`tick` itself. Tests call :func:`tick` directly.

Files do not pile up: a job submitted with ``cleanup`` has its folder removed when it ends, after its callbacks
imported the results (images still loaded from the folder are packed first); a failed job's folder is kept
only with the "Keep failed job folders" preference. A job is bound to the file it started in: when another
.blend is loaded meanwhile (``load_post``), its result is discarded with a notice instead of landing in the
new file.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from bpy.app.handlers import persistent

from . import prefs, scene_import, storage
from . import protocol as P
from .client import BackendClient, BackendError, JobHandle, PipeTransport, TcpTransport, backend_command, backend_env
from .props import progress_state

TICK_S = 0.1
IDLE_TICK_S = 2.0
POLL_BUDGET_S = 0.03

_client: BackendClient | None = None
_client_key: tuple[object, ...] | None = None
_shown: JobHandle | None = None  # the job the panel shows
_tasks: list[Any] = []  # extra pollables (e.g. the backend set-up), each with poll() -> bool (still busy)
last_tick_s = 0.0
_file_token = 0  # +1 whenever a .blend is loaded: a job's result belongs to the file it started in
DISCARDED = "FileChanged"  # the error type of a result discarded because another file was loaded
VIEWS_MODEL = "aware3d-views-cond"  # the conditional view model "Auto" texturing uses when it is installed


def blocking() -> bool:
    """True where timers never run (background mode): calls must wait instead."""
    return bool(bpy.app.background)


def _transport_factory(s: prefs.BackendSettings) -> Callable[[], Any]:
    def make() -> Any:
        prefs.check_settings(s)
        jobs = prefs.user_dir("jobs")
        if s.kind == "tcp":
            return TcpTransport(s.host, s.port, jobs / "remote")
        cmd = backend_command(s.python, ["--work-dir", str(jobs)], threads=s.threads)
        env = backend_env(prefs.package_root(), s.models_dir or None, pycache_dir=prefs.user_dir("pycache"))
        return PipeTransport(cmd, env=env, cwd=str(prefs.package_root()),
                             log_path=prefs.user_dir("logs") / "backend.log")

    return make


def client(context: bpy.types.Context | None = None) -> BackendClient:
    """The session's client; a new one when the backend settings changed (the old backend is ended)."""
    global _client, _client_key
    s = prefs.backend_settings(context)
    if _client is None or _client_key != s.key:
        if _client is not None:
            _client.stop("the backend settings changed")
        _client = BackendClient(_transport_factory(s), token=s.token or None)
        _client_key = s.key
    return _client


def device(context: bpy.types.Context | None = None) -> str:
    return prefs.backend_settings(context).device


def submit(op: str, args: dict[str, Any] | None = None, *, show: bool = True,
           on_done: Callable[[JobHandle], Any] | None = None,
           on_progress: Callable[[JobHandle], Any] | None = None,
           context: bpy.types.Context | None = None, cleanup: bool = False) -> JobHandle:
    """Send a request; ``show`` makes it the job the panel's progress bar follows.

    The callbacks are bound to the file open now (:func:`_bind`). ``cleanup`` removes the job's folder when
    it ends, after ``on_done`` (:func:`remove_job_folders`): for jobs whose results the add-on imports."""
    global _shown
    c = client(context)
    started = c.starts
    ensure_load_handler()
    try:
        h = c.submit(op, args, on_done=_bind(on_done, op), on_progress=_bind(on_progress, op, discard=False))
    except BackendError as exc:
        record_error(exc)
        raise
    if cleanup:
        h.add_done_callback(remove_job_folders)
    if c.starts != started and op != "list_models":
        c.submit("list_models", {}, on_done=_models_loaded)  # fill the model picker on every new backend
    if show:
        _shown = h
        state = progress_state()
        if state is not None:
            state.last_error = state.last_hint = state.last_error_type = ""
    ensure_timer()
    _update_state()
    return h


# ----------------------------------------------------------------------------------------------------------
# One file per job, and no files left behind
# ----------------------------------------------------------------------------------------------------------


@persistent
def _on_load_post(*_args: Any) -> None:
    """A .blend was loaded (File > Open, Revert, New): results of running jobs no longer belong here."""
    global _file_token
    _file_token += 1


def ensure_load_handler() -> None:
    if _on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_on_load_post)


def remove_load_handler() -> None:
    with contextlib.suppress(ValueError):
        bpy.app.handlers.load_post.remove(_on_load_post)


def _bind(fn: Callable[[JobHandle], Any] | None, op: str, discard: bool = True
          ) -> Callable[[JobHandle], Any] | None:
    """``fn`` for the file open now: after another file was loaded, a progress callback is skipped and a done
    callback sees the job as failed with a ``FileChanged`` notice (also in the status line), so nothing of
    the old file's job lands in the new file. Why a token and not ``bpy.data.filepath``: Save As changes the
    path but keeps the data; Revert keeps the path but replaces the data."""
    if fn is None:
        return None
    token = _file_token

    def bound(h: JobHandle) -> Any:
        if token == _file_token:
            return fn(h)
        if not discard:
            return None
        if h.state == "done":
            h.state = "error"
            h.error = BackendError(DISCARDED, f"the {op} result was discarded: another .blend was loaded while "
                                              "it ran", "run it again in this file")
            record_error(h.error)
            print(f"Aware3D: {h.error}")
        return fn(h)

    return bound


def job_folders(h: JobHandle) -> list[Path]:
    """The folders a job may have written here: the result's ``job_dir``, else the backend's folder for the
    job's id (a failed or cancelled job names none), and the local folder of a remote job's files."""
    root = prefs.user_dir("jobs")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in h.id).strip(".") or "job"
    named = (h.result or {}).get("job_dir")
    return [*([Path(named)] if named else []), root / safe, root / "remote" / safe]


def remove_job_folders(h: JobHandle) -> None:
    """Remove a finished job's folders (run after its importing callbacks). Kept: a failed job's with the
    "Keep failed job folders" preference, and one whose import failed (``h.keep_folder``)."""
    if getattr(h, "keep_folder", False):
        return
    failed = h.state == "error" and (h.error is None or h.error.type != DISCARDED)
    if failed and prefs.keep_failed_jobs():
        return
    root = prefs.user_dir("jobs")
    for folder in job_folders(h):
        if folder.is_dir():
            scene_import.release_folder(folder)
            scene_import.remove_job_folder(str(folder), root)


def keep_avatar(path: str) -> tuple[str, str]:
    """Move an avatar file out of its job folder (which is removed) to the avatars folder: next to the .blend,
    the chosen folder, or the extension's user folder for an unsaved file. Returns (new path, where, in
    words); a missing file is left as it is (path, ""). How the head then keeps it (linked or packed into the
    .blend) is :func:`storage.store_new_head`'s business."""
    src = Path(path)
    if not path or not src.is_file():
        return path, ""
    folder, where = prefs.avatars_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = storage.unique_path(folder, src.name)
    shutil.move(str(src), dest)
    return str(dest), where


def wait(handle: JobHandle, timeout: float | None = None) -> JobHandle:
    """Block until the job ends, pumping :func:`tick` (the main thread keeps doing the timer's work)."""
    c = _client
    if c is None:
        return handle
    return c.wait(handle, timeout, pump=tick)


def cancel(handle: JobHandle | None = None) -> None:
    if _client is not None:
        _client.cancel(handle if handle is not None else _shown)


def free() -> None:
    """End the backend process (all its memory goes back to the system); the next request starts one."""
    global _client, _client_key
    if _client is not None:
        _client.stop("the backend was freed")
        _client = None
        _client_key = None
    _update_state()


def add_task(task: Any) -> None:
    _tasks.append(task)
    ensure_timer()


# ----------------------------------------------------------------------------------------------------------
# Polling
# ----------------------------------------------------------------------------------------------------------


def tick() -> float | None:
    """Drain backend events and refresh the UI. Returns the timer interval, or None when idle."""
    global last_tick_s
    t0 = time.perf_counter()
    if _client is not None:
        _client.poll(budget_s=POLL_BUDGET_S)
        while _client is not None and _client.callback_errors:
            exc = _client.callback_errors.popleft()
            record_error(exc if isinstance(exc, BackendError) else
                         BackendError("AddonError", f"{type(exc).__name__}: {exc}", "see the system console"))
            print(f"Aware3D: error in a callback: {exc!r}")
    for task in list(_tasks):
        if not task.poll():
            _tasks.remove(task)
    _update_state()
    _redraw()
    last_tick_s = time.perf_counter() - t0
    if busy():
        return TICK_S
    # Idle with a backend up: look now and then, so a backend that died shows in the panel.
    return IDLE_TICK_S if _client is not None and _client.transport is not None else None


def busy() -> bool:
    return bool((_client is not None and _client.pending) or _tasks)


def _timer() -> float | None:
    try:
        return tick()
    except Exception as exc:  # never let the timer die silently
        print(f"Aware3D: poller error: {exc!r}")
        return TICK_S


def ensure_timer() -> None:
    if blocking():
        return
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=TICK_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)


def _redraw() -> None:
    wm = bpy.context.window_manager if hasattr(bpy.context, "window_manager") else None
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _stage_label(stage: str) -> str:
    return stage.replace("_", " ").capitalize()


def _update_state() -> None:
    state = progress_state()
    if state is None:
        return
    h = _shown
    if _client is None:
        state.status = "Backend not running"
    elif _client.running:
        info = _client.server_info
        state.status = (f"Backend {info.get('version', '')} running (pid {info.get('pid', '?')})" if info
                        else "Backend starting…")
    else:
        state.status = "Backend stopped (starts on the next request)"
    for task in _tasks:
        state.busy, state.op, state.stage = True, "setup", task.stage
        state.fraction, state.eta, state.message = task.fraction, "", task.message
        return
    if h is None or h.done():
        state.busy = False
        state.fraction = 1.0 if h is not None and h.state == "done" else 0.0
        state.eta = ""
        return
    state.busy = True
    state.op = h.op
    if h.state == "queued":
        state.stage = f"Queued ({h.position} ahead)"
    elif h.state == "pending":
        state.stage = "Starting the backend…" if not (_client and _client.server_info) else "Waiting…"
    else:
        state.stage = _stage_label(h.stage)
    state.step, state.total = h.step, h.total
    state.fraction = max(0.0, min(1.0, h.progress_fraction()))
    state.eta = P.format_eta(h.eta_s)
    state.message = h.message


def record_error(exc: BackendError | Exception) -> None:
    """Show an error (and its hint) in the panel until the next request."""
    state = progress_state()
    if state is None:
        return
    if isinstance(exc, BackendError):
        state.last_error, state.last_hint, state.last_error_type = exc.message, exc.hint, exc.type
    else:
        state.last_error, state.last_hint, state.last_error_type = str(exc), "", type(exc).__name__


def record_result(text: str) -> None:
    state = progress_state()
    if state is not None:
        state.last_result = text


def _models_loaded(h: JobHandle) -> None:
    if h.state == "done":
        set_models(h.data)


def set_models(data: dict[str, Any]) -> None:
    state = progress_state()
    if state is None:
        return
    state.models.clear()
    seen = set()
    for m in data.get("models", []):
        if m.get("kind") not in ("gan", "official-pkl") or m["name"] in seen:
            continue
        seen.add(m["name"])
        item = state.models.add()
        item.name, item.source, item.config = m["name"], m.get("source", ""), str(m.get("config", ""))
        item.path, item.kind = m.get("path", ""), m.get("kind", "")
    state.models_folder = str(data.get("user_dir", ""))
    # What "Auto" texturing will use, said before a run: the backend looks for this file name in the same two
    # folders it lists (backend.views.generate.resolve_view_model), user models first.
    state.views_model = next((str(m.get("path") or m["name"]) for m in data.get("models", [])
                              if m.get("name") == VIEWS_MODEL), "")


def shutdown() -> None:
    """On unregister: end the backend and the timer."""
    global _shown
    stop_timer()
    remove_load_handler()
    with contextlib.suppress(Exception):
        free()
    _tasks.clear()
    _shown = None


def busy_with(*ops: str) -> bool:
    """True while a job of one of ``ops`` runs (operators grey themselves out instead of queueing twice)."""
    state = getattr(bpy.context.window_manager, "aware3d", None)
    return bool(state is not None and state.busy and state.op in ops)


def execute_job(op: Any, start: Callable[[], Any], done_message: Callable[[Any], str]) -> set[str]:
    """An operator's ``execute`` for an async api call: start it, wait and report when running blocking
    (background Blender, tests), turn a BackendError into the operator's error report."""
    try:
        fut = start()
        if blocking():
            fut.result()
            op.report({"INFO"}, done_message(fut))
    except BackendError as exc:
        record_error(exc)
        op.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    return {"FINISHED"}
