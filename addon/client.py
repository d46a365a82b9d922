# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend client: a child process (or a TCP connection), reader threads, and job handles.

Pure Python (no ``bpy``), so it is testable outside Blender. Threads only read and decode; every callback
runs inside :meth:`BackendClient.poll`, which Blender calls from its main thread (a timer or a blocking wait).

Why these choices (Dream Textures' lessons): torch never enters Blender's process; errors arrive as plain
type/message/hint strings, never as pickles; a dead or silent backend is noticed (process exit, end of
stream, or no heartbeat for ``heartbeat_timeout`` seconds) and every pending job fails with a clear
``BackendDied`` error, after which the next request simply starts a new backend.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import queue
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import protocol as P

_EOF = {"event": "__eof__"}
STARTUP_TIMEOUT_S = 180.0
MISSING_DEPENDENCY = "MissingDependency"  # the client's error type for an interpreter without the requirements
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_OWN_PACKAGES = ("backend", "cuda", "protocol")  # missing these is a packaging bug, not the interpreter's


def missing_module(lines: Sequence[str]) -> str | None:
    """The top-level module a dead backend's log says it could not import (the last one named), if any.

    Why from the log: the interpreter is the user's choice and may lack numpy or torch; the backend dies on
    its first import, and the traceback's last line names the module, so no extra start-up check is needed."""
    for line in reversed(lines):
        m = _NO_MODULE.search(line)
        if m and m.group(1).split(".")[0] not in _OWN_PACKAGES:
            return m.group(1).split(".")[0]
    return None


def missing_dependency_error(module: str, python: str) -> BackendError:
    """The one-line error for an interpreter that lacks the backend's requirements."""
    return BackendError(MISSING_DEPENDENCY,
                        f"this Python lacks {module} (the backend needs numpy/torch and its requirements): {python}",
                        "press Set up backend or choose another interpreter (Preferences > Add-ons > Aware3D)")


class BackendError(Exception):
    """An error event (or a client-side failure) with the protocol's type, message and hint."""

    def __init__(self, type_: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.hint = hint

    @classmethod
    def from_event(cls, err: dict[str, Any]) -> BackendError:
        return cls(str(err.get("type", "Error")), str(err.get("message", "")), str(err.get("hint", "")))

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# ----------------------------------------------------------------------------------------------------------
# Job handles
# ----------------------------------------------------------------------------------------------------------


class JobHandle:
    """A request in flight: progress, then a result, an error or a cancellation (a small future).

    Callbacks get the handle and run on the thread that calls :meth:`BackendClient.poll` (Blender's main
    thread), so they may touch ``bpy``.
    """

    def __init__(self, request_id: str, op: str, args: dict[str, Any]) -> None:
        self.id = request_id
        self.op = op
        self.args = args
        self.state = "pending"  # pending → queued/running → done | error | cancelled
        self.position: int | None = None
        self.stage = ""
        self.step = 0
        self.total = 0
        self.eta_s: float | None = None
        self.fraction: float | None = None
        self.message = ""
        self.preview: str | None = None
        self.partial: dict[str, Any] | None = None  # the latest first result ({"data", "files"}) a job sent
        self.partials = 0  # how many arrived (a callback imports each once)
        self.result: dict[str, Any] | None = None
        self.error: BackendError | None = None
        self.keep_folder = False  # set by a callback that could not import the files: keep them to look at
        self.started = time.monotonic()
        self.finished: float | None = None
        self._done_callbacks: list[Callable[[JobHandle], Any]] = []
        self._progress_callbacks: list[Callable[[JobHandle], Any]] = []

    def done(self) -> bool:
        return self.state in ("done", "error", "cancelled")

    @property
    def data(self) -> dict[str, Any]:
        return (self.result or {}).get("data", {})

    @property
    def files(self) -> dict[str, str]:
        return (self.result or {}).get("files", {})

    def progress_fraction(self) -> float:
        if self.fraction is not None:
            return float(self.fraction)
        return self.step / self.total if self.total else 0.0

    def add_done_callback(self, fn: Callable[[JobHandle], Any]) -> None:
        if self.done():
            fn(self)
        else:
            self._done_callbacks.append(fn)

    def add_progress_callback(self, fn: Callable[[JobHandle], Any]) -> None:
        self._progress_callbacks.append(fn)

    def _progress(self, ev: dict[str, Any]) -> None:
        self.state = "running"
        self.stage = str(ev.get("stage", ""))
        self.step, self.total = int(ev.get("step", 0)), int(ev.get("total", 0))
        self.eta_s, self.fraction = ev.get("eta_s"), ev.get("fraction")
        self.message = str(ev.get("message") or "")
        if ev.get("preview"):
            self.preview = str(ev["preview"])
        if isinstance(ev.get("partial"), dict):
            self.partial = ev["partial"]
            self.partials += 1
        for fn in self._progress_callbacks:
            fn(self)

    def _finish(self, state: str, result: dict[str, Any] | None = None, error: BackendError | None = None
                ) -> list[BaseException]:
        if self.done():
            return []
        self.state, self.result, self.error, self.finished = state, result, error, time.monotonic()
        errors: list[BaseException] = []
        for fn in self._done_callbacks:
            try:
                fn(self)
            except Exception as exc:  # a failing callback must not break the poller
                errors.append(exc)
        self._done_callbacks.clear()
        return errors

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.op} {self.state}>"


# ----------------------------------------------------------------------------------------------------------
# Transports
# ----------------------------------------------------------------------------------------------------------


class Transport:
    """A connection to one backend: ``send`` lines, decoded events arrive on ``events``."""

    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = False
        self.last_seen = time.monotonic()  # updated by the reader for every line, heartbeats included

    def send(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def close(self, kill: bool = True) -> None:
        raise NotImplementedError

    def describe_death(self) -> str:
        return "the connection to the backend closed"

    def missing_dependency(self) -> BackendError | None:
        """An error naming a dependency the backend's interpreter lacks, when that is why it died."""
        return None

    def _read(self, stream: Any, convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        try:
            while True:
                line = P.read_line(stream, P.MAX_EVENT_BYTES)
                if line is None:
                    break
                if not line.strip():
                    continue
                self.last_seen = time.monotonic()
                try:
                    msg = P.decode(line, P.MAX_EVENT_BYTES)
                    if msg.get("event") == "heartbeat" and msg.get("v") == P.PROTOCOL_VERSION:
                        continue  # liveness is last_seen; an idle Blender must not pile heartbeats up
                    if convert is not None:
                        msg = convert(msg)
                except (P.ProtocolError, OSError, ValueError) as exc:
                    msg = {"event": "__garbage__", "text": str(exc)}
                self.events.put(msg)
        except (OSError, ValueError):
            pass
        finally:
            self.events.put(_EOF)


class PipeTransport(Transport):
    """The backend as a child process speaking on stdin/stdout; stderr goes to a log file."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.cmd = list(cmd)
        self.log_path = Path(log_path) if log_path else None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            if self.log_path.exists():  # one log per backend; the previous one is kept beside it
                with contextlib.suppress(OSError):
                    os.replace(self.log_path, self.log_path.with_suffix(".prev.log"))
            log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        else:
            log = subprocess.DEVNULL
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env=env, cwd=cwd, bufsize=0, creationflags=flags)
        except OSError as exc:
            raise BackendError(P.BACKEND_DIED, f"could not start the backend ({exc})",
                               "check the backend Python interpreter in the add-on preferences") from None
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                         name="aware3d-backend-reader").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict[str, Any]) -> None:
        data = P.encode(msg)
        with self._lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.closed = True

    def alive(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def close(self, kill: bool = True) -> None:
        """End the process: close stdin (it exits cleanly), and kill it if asked or if it lingers."""
        self.closed = True
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        if kill:
            with contextlib.suppress(OSError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=0.5 if kill else 5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self.proc.kill()

    def log_tail(self, lines: int = 5) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
        return [ln for ln in text.splitlines() if ln.strip()][-lines:]

    def describe_death(self) -> str:
        code = self.proc.poll()
        if code is None:
            why = "the backend process stopped answering"
        elif code < 0:
            why = f"the backend process was killed (signal {-code}; out of memory or ended from outside)"
        else:
            why = f"the backend process exited (code {code})"
        tail = [ln for ln in self.log_tail(20) if " INFO: " not in ln][-3:]  # errors, not chatter
        return why + (": " + " | ".join(tail) if tail else "")

    def missing_dependency(self) -> BackendError | None:
        code = self.proc.poll()
        if code is None or code <= 0:  # running, ended cleanly or killed: not an import failure
            return None
        module = missing_module(self.log_tail(20))
        return missing_dependency_error(module, self.cmd[0]) if module else None


class TcpTransport(Transport):
    """A backend on the network (``aware3d serve --port``); results arrive inline and are written locally."""

    def __init__(self, host: str, port: int, local_dir: str | os.PathLike[str], timeout: float = 10.0) -> None:
        super().__init__()
        self.address = f"{host}:{port}"
        self.local_dir = Path(local_dir)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise BackendError(P.BACKEND_DIED, f"could not connect to the backend at {self.address} ({exc})",
                               "check that 'aware3d serve' runs there, and the address and port") from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()
        self._file = self.sock.makefile("rb")
        threading.Thread(target=self._read, args=(self._file, self._unpack), daemon=True,
                         name="aware3d-backend-reader").start()

    def _unpack(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Write inline result files (of a result, or of a progress event's ``partial`` result) into a local
        job folder (on the reader thread, off Blender's)."""
        inline = msg.pop("inline", None)
        kind = msg.get("event")
        if not inline or kind not in ("result", "progress"):
            return msg
        folder = self.local_dir / "".join(c if c.isalnum() or c in "-_" else "_" for c in str(msg["id"]))
        if kind == "progress":
            if not isinstance(msg.get("partial"), dict):
                return msg
            folder, holder = folder / "partial", msg["partial"]
        else:
            holder = msg
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for role, remote in (holder.get("files") or {}).items():
            if role in inline:
                local = folder / Path(str(remote).replace("\\", "/")).name
                local.write_bytes(base64.b64decode(inline[role]))
                files[role] = str(local)
        holder["files"] = files
        if kind == "result":
            msg["job_dir"] = str(folder)
        return msg

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            try:
                self.sock.sendall(P.encode(msg))
            except OSError:
                self.closed = True

    def alive(self) -> bool:
        return not self.closed

    def close(self, kill: bool = True) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def describe_death(self) -> str:
        return f"the connection to the backend at {self.address} closed"


# ----------------------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------------------


class BackendClient:
    """Requests and events for one backend at a time; starts a new one on demand after a death or free."""

    def __init__(self, factory: Callable[[], Transport], token: str | None = None,
                 heartbeat_timeout: float = P.HEARTBEAT_TIMEOUT_S, client_name: str = "aware3d-addon",
                 startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
        self.factory = factory
        self.token = token
        self.heartbeat_timeout = heartbeat_timeout
        self.startup_timeout = startup_timeout
        self.client_name = client_name
        self.transport: Transport | None = None
        self.server_info: dict[str, Any] = {}
        self.pending: dict[str, JobHandle] = {}
        self.deaths = 0
        self.starts = 0
        self.callback_errors: deque[BaseException] = deque(maxlen=20)
        self._ids = itertools.count(1)
        # Ids unique across Blender sessions: two Blenders may share one jobs folder.
        self._prefix = f"b{os.getpid():x}{secrets.token_hex(2)}-"

    # Connection ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.transport is not None and self.transport.alive()

    def _ensure(self) -> Transport:
        if self.transport is not None and self.transport.alive():
            return self.transport
        if self.transport is not None:
            self._declare_dead()
        self.server_info = {}
        self.transport = self.factory()
        self.starts += 1
        hello = self._new_handle("hello", {"client": self.client_name, "protocol": P.PROTOCOL_VERSION,
                                           "token": self.token})
        hello.add_done_callback(self._on_hello)
        self.transport.send(P.request("hello", hello.args, hello.id))
        return self.transport

    def _on_hello(self, h: JobHandle) -> None:
        if h.state == "done":
            self.server_info = h.data
        elif h.error is not None:
            self.fail_all(h.error)
            self._close_transport()

    def _new_handle(self, op: str, args: dict[str, Any]) -> JobHandle:
        h = JobHandle(f"{self._prefix}{next(self._ids)}", op, args)
        self.pending[h.id] = h
        return h

    def submit(self, op: str, args: dict[str, Any] | None = None,
               on_done: Callable[[JobHandle], Any] | None = None,
               on_progress: Callable[[JobHandle], Any] | None = None) -> JobHandle:
        """Send a request (starting the backend first if needed); returns its handle at once."""
        args = dict(args or {})
        if op in P.OPS:
            P.check_args(op, args, P.OPS[op])  # fail fast, in the caller, on a typo
        transport = self._ensure()
        h = self._new_handle(op, args)
        if on_done is not None:
            h.add_done_callback(on_done)
        if on_progress is not None:
            h.add_progress_callback(on_progress)
        transport.send(P.request(op, args, h.id))
        return h

    def cancel(self, handle: JobHandle | None = None) -> None:
        """Ask the backend to cancel one job (or all); the job ends with a ``cancelled`` event."""
        if self.transport is None or not self.transport.alive():
            return
        job = None if handle is None else handle.id
        h = self._new_handle("cancel", {"job": job})
        self.transport.send(P.request("cancel", h.args, h.id))

    def stop(self, reason: str = "the backend was stopped") -> None:
        """End the backend now (frees all its memory); pending jobs end as cancelled."""
        for h in list(self.pending.values()):
            self.callback_errors.extend(h._finish("cancelled", error=BackendError("Cancelled", reason)))
        self.pending.clear()
        self._close_transport()

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close(kill=True)
            self.transport = None

    # Events --------------------------------------------------------------------------------------------

    def poll(self, max_events: int = 10_000, budget_s: float = 0.05) -> int:
        """Handle waiting events (bounded in time so Blender stays responsive); check the backend's health.

        Returns the number of events handled.
        """
        if self.transport is None:
            return 0
        t0 = time.monotonic()
        n = 0
        transport = self.transport
        while n < max_events and time.monotonic() - t0 < budget_s:
            try:
                msg = transport.events.get_nowait()
            except queue.Empty:
                break
            n += 1
            if msg is _EOF:
                self._declare_dead()
                return n
            self._dispatch(msg)
            if self.transport is not transport:  # a callback stopped the backend
                return n
        if self.transport is not None and not self.transport.alive() and self.transport.events.empty():
            self._declare_dead()
        elif self.transport is not None:
            # Before the hello answer the backend may still be importing torch: allow it longer.
            limit = self.heartbeat_timeout if self.server_info else self.startup_timeout
            if time.monotonic() - self.transport.last_seen > limit:
                self._declare_dead(f"no sign of life from the backend for {limit:.0f} s")
        return n

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("event")
        if kind == "__garbage__":
            return
        try:
            P.parse_event(msg)
        except P.ProtocolError as exc:
            self.fail_all(BackendError(exc.type, exc.message, exc.hint))
            self._close_transport()
            return
        if kind == "heartbeat":
            return
        h = self.pending.get(msg.get("id") or "")
        if h is None:
            if kind == "error" and msg.get("id") is None:  # a line the server could not read: a client bug
                self.callback_errors.append(BackendError.from_event(msg.get("error", {})))
            return
        if kind == "ack":
            h.state, h.position = ("running" if msg.get("position") == 0 else "queued"), msg.get("position")
        elif kind == "progress":
            try:
                h._progress(msg)
            except Exception as exc:
                self.callback_errors.append(exc)
        elif kind in P.TERMINAL_EVENTS:
            del self.pending[h.id]
            if kind == "result":
                errs = h._finish("done", result=msg)
            elif kind == "error":
                errs = h._finish("error", error=self._explain(BackendError.from_event(msg.get("error", {}))))
            else:
                errs = h._finish("cancelled", error=BackendError("Cancelled", "cancelled"))
            self.callback_errors.extend(errs)

    def _explain(self, error: BackendError) -> BackendError:
        """A job that failed because the backend's interpreter lacks a module (e.g. torch imported on first
        use) gets the missing-dependency error instead of an internal error."""
        module = missing_module([error.message])
        if module is None:
            return error
        python = getattr(self.transport, "cmd", ["the remote backend's Python"])[0]
        return missing_dependency_error(module, python)

    def _declare_dead(self, why: str | None = None) -> None:
        transport = self.transport
        self.transport = None
        if transport is None:
            return
        why = why or transport.describe_death()
        transport.close(kill=True)
        self.deaths += 1
        missing = transport.missing_dependency()
        if missing is not None:
            self.fail_all(missing)
            return
        hint = "the next request starts a new backend"
        log_path = getattr(transport, "log_path", None)
        if log_path:
            hint += f"; the backend log is {log_path}"
        self.fail_all(BackendError(P.BACKEND_DIED, why, hint))

    def fail_all(self, error: BackendError) -> None:
        for h in list(self.pending.values()):
            self.callback_errors.extend(h._finish("error", error=error))
        self.pending.clear()

    # Blocking use --------------------------------------------------------------------------------------

    def wait(self, handle: JobHandle, timeout: float | None = None, interval: float = 0.02,
             pump: Callable[[], Any] | None = None) -> JobHandle:
        """Block until ``handle`` ends, polling (or calling ``pump``, which must poll) meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not handle.done():
            (pump or self.poll)()
            if handle.done():
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{handle.op} did not finish within {timeout} s")
            time.sleep(interval)
        return handle

    def request(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Blocking call: the result's ``data``; raises :class:`BackendError` on error or cancel."""
        h = self.wait(self.submit(op, args), timeout)
        if h.error is not None:
            raise h.error
        return h.data


def backend_command(python: str, extra: Sequence[str] = (), threads: int = 0) -> list[str]:
    """The command line that starts the bundled backend server on stdio with ``python``; ``threads`` > 0 sets
    its PyTorch CPU threads (``--threads``; 0: PyTorch's choice, one per core)."""
    return [python, "-u", "-m", "backend.server", *extra, *(["--threads", str(threads)] if threads > 0 else [])]


def backend_env(package_root: str | os.PathLike[str], models_dir: str | None = None,
                base: dict[str, str] | None = None, pycache_dir: str | os.PathLike[str] | None = None
                ) -> dict[str, str]:
    """Environment for the child: the extension folder (which holds the ``backend`` package) first on
    ``PYTHONPATH``, so the backend matches this add-on's version; optionally the models folder; bytecode
    caches kept out of the extension's folder (``pycache_dir``), which must stay untouched."""
    env = dict(os.environ if base is None else base)
    root = str(package_root)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another interpreter
    if models_dir:
        env["AWARE3D_MODELS"] = str(models_dir)
    if pycache_dir:
        env["PYTHONPYCACHEPREFIX"] = str(pycache_dir)
    return env
