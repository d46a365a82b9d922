# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend server: JSON lines on stdin/stdout (the Blender add-on's child process) or on TCP.

Why a separate process: torch, CUDA and gigabytes of weights never enter Blender's process, a crash or an
out-of-memory kill costs only the backend, and ending the process is the one dependable way to free GPU
memory. The protocol itself is in :mod:`backend.server.protocol`; the operations are in the ``ops_*``
modules and :mod:`backend.server.download`; new operations (later: ``invert``, ``views``) are added with
:meth:`Server.register_op`.

In stdio mode the protocol owns the original stdout file descriptor and fd 1 is pointed at stderr, so that a
stray ``print`` (ours or a library's, even from C) can never corrupt the event stream. End of input on
stdin means the client is gone: running work is cancelled and the process exits with status 0.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from backend.errors import Aware3DError
from backend.server import download, ops_core, ops_invert, ops_mesh, ops_sample, ops_texture
from backend.server import protocol as P
from backend.server.jobs import Handler, Job, JobQueue, error_from_exception

log = logging.getLogger("aware3d.server")

Immediate = Callable[["Server", dict[str, Any]], dict[str, Any]]


class Connection:
    """One client. ``send`` is thread-safe (worker, heartbeat and reader threads all write)."""

    def __init__(self, write: Callable[[bytes], Any], name: str, inline_results: bool = False,
                 needs_auth: bool = False, close: Callable[[], Any] | None = None) -> None:
        self._write = write
        self._close = close
        self._lock = threading.Lock()
        self.name = name
        self.inline_results = inline_results
        self.authenticated = not needs_auth
        self.closed = False

    def send(self, msg: dict[str, Any]) -> None:
        data = P.encode(msg)
        with self._lock:
            if self.closed:
                return
            try:
                self._write(data)
            except (BrokenPipeError, ConnectionError, OSError, ValueError):
                self.closed = True  # the client went away; its jobs are cancelled by the reader

    def close(self) -> None:
        self.closed = True
        if self._close is not None:
            with contextlib.suppress(OSError):
                self._close()


class Server:
    def __init__(self, work_dir: Path | None = None, heartbeat_s: float = P.HEARTBEAT_S,
                 max_queued: int = P.MAX_QUEUED, token: str | None = None) -> None:
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="aware3d-jobs-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat_s = heartbeat_s
        self.token = token or None
        self.ops: dict[str, P.OpSpec] = {}
        self.immediate: dict[str, Immediate] = {}
        self.handlers: dict[str, Handler] = {}
        self.models = ops_core.ModelCache()
        self.jobs = JobQueue(self.handlers, self.work_dir, server=self, max_queued=max_queued)
        self.connections: set[Connection] = set()
        self._conn_lock = threading.Lock()
        self.stopped = threading.Event()
        for name, fn in {"hello": ops_core.op_hello, "version": ops_core.op_hello, "ping": ops_core.op_ping,
                         "status": ops_core.op_status, "list_models": ops_core.op_list_models,
                         "cancel": _op_cancel, "shutdown": _op_shutdown}.items():
            self.register_op(name, P.OPS[name], fn)
        for name, job in {"doctor": ops_core.op_doctor, "load_model": ops_core.op_load_model,
                          "free": ops_core.op_free, "sample": ops_sample.op_sample, "mesh": ops_mesh.op_mesh,
                          "add_model": download.op_add_model,
                          "download_model": download.op_download_model}.items():
            self.register_op(name, P.OPS[name], job)
        ops_invert.register(self)
        ops_texture.register(self)

    def register_op(self, name: str, spec: P.OpSpec, fn: Any) -> None:
        """Add an operation: ``fn(server, args) -> data`` when immediate, ``fn(ctx) -> JobResult`` for jobs."""
        self.ops[name] = spec
        (self.handlers if spec.job else self.immediate)[name] = fn

    # Requests ------------------------------------------------------------------------------------------

    def handle_line(self, conn: Connection, line: bytes) -> None:
        """Serve one request line; every outcome is an event on ``conn`` (never an exception)."""
        rid: str | None = None
        try:
            msg = P.decode(line)
            rid = msg.get("id") if isinstance(msg.get("id"), str) else None
            rid, op, args = P.parse_request(msg, self.ops)
            if not conn.authenticated:
                self._authenticate(conn, rid, op, args)
            spec = self.ops[op]
            if spec.job:
                job = Job(rid, op, args, conn)
                self.jobs.submit(job, on_accept=lambda pos: conn.send(
                    P.event("ack", rid, op=op, position=pos)))
                return
            data = self.immediate[op](self, args)
            conn.send(P.event("result", rid, op=op, data=data, files={}, job_dir=None, elapsed_s=0.0))
            if op == "shutdown":
                self.stop()
        except P.ProtocolError as exc:
            conn.send(P.error_event(exc.request_id or rid, exc.type, exc.message, exc.hint))
            if exc.type == P.UNAUTHORIZED:
                conn.close()
        except Exception as exc:  # an immediate op failed: report it, keep serving
            conn.send(error_from_exception(rid, exc))

    def _authenticate(self, conn: Connection, rid: str, op: str, args: dict[str, Any]) -> None:
        token = args.get("token") if op == "hello" else None
        if not (isinstance(token, str) and self.token and hmac.compare_digest(token.encode(), self.token.encode())):
            log.warning("refused connection %s: %s", conn.name, "bad token" if op == "hello" else "no hello")
            raise P.ProtocolError(P.UNAUTHORIZED, "this backend needs a token: send hello with the right token "
                                  "first", "set the token in the add-on's preferences (remote backend)", rid)
        conn.authenticated = True

    # Lifecycle -----------------------------------------------------------------------------------------

    def _add(self, conn: Connection) -> None:
        with self._conn_lock:
            self.connections.add(conn)

    def _remove(self, conn: Connection) -> None:
        with self._conn_lock:
            self.connections.discard(conn)
        self.jobs.cancel(None, sink=conn)  # a client that left does not keep the backend busy

    def _heartbeat(self) -> None:
        while not self.stopped.wait(self.heartbeat_s):
            msg = P.event("heartbeat", None, t=round(time.time(), 3), busy=self.jobs.running_id,
                          queued=self.jobs.queued)
            with self._conn_lock:
                conns = list(self.connections)
            for c in conns:
                if c.authenticated:
                    c.send(msg)

    def start_heartbeat(self) -> None:
        threading.Thread(target=self._heartbeat, name="aware3d-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def finish(self, timeout: float = 10.0) -> None:
        """Cancel running work and wait (bounded) for the worker to reach its next step."""
        self.stopped.set()
        self.jobs.stop(timeout)

    # Transports ----------------------------------------------------------------------------------------

    def serve_stream(self, inp: BinaryIO, write: Callable[[bytes], Any]) -> int:
        """Serve one client on a pair of binary streams until end of input or ``shutdown``."""
        conn = Connection(write, "stdio")
        self._add(conn)
        self.start_heartbeat()
        try:
            while not self.stopped.is_set():
                line = P.read_line(inp, P.MAX_REQUEST_BYTES)
                if line is None:
                    log.info("end of input: the client is gone, exiting")
                    break
                if line.strip():
                    self.handle_line(conn, line)
        finally:
            self._remove(conn)
            self.finish()
        return 0

    def serve_tcp(self, host: str, port: int, ready: Callable[[int], Any] | None = None) -> int:
        """Accept clients on ``host:port``; each gets its own reader thread; results are sent inline."""
        check_bind(host, self.token)
        srv = socket.create_server((host, port))
        srv.settimeout(0.5)
        bound = srv.getsockname()[1]
        log.info("listening on %s:%d%s", host, bound, " (token required)" if self.token else "")
        print(f"aware3d server listening on {host}:{bound}", file=sys.stderr, flush=True)
        if ready is not None:
            ready(bound)
        self.start_heartbeat()
        try:
            while not self.stopped.is_set():
                try:
                    sock, addr = srv.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._serve_socket, args=(sock, addr), daemon=True,
                                 name=f"aware3d-client-{addr[1]}").start()
        finally:
            srv.close()
            self.finish()
        return 0

    def _serve_socket(self, sock: socket.socket, addr: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock.sendall, f"{addr[0]}:{addr[1]}", inline_results=True,
                          needs_auth=self.token is not None, close=lambda: sock.shutdown(socket.SHUT_RDWR))
        self._add(conn)
        log.info("client %s connected", conn.name)
        try:
            with sock.makefile("rb") as inp:
                while not self.stopped.is_set() and not conn.closed:
                    line = P.read_line(inp, P.MAX_REQUEST_BYTES)
                    if line is None:
                        break
                    if line.strip():
                        self.handle_line(conn, line)
        except OSError:
            pass
        finally:
            log.info("client %s disconnected", conn.name)
            self._remove(conn)
            sock.close()


def _op_cancel(server: Server, args: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": server.jobs.cancel(args["job"])}


def _op_shutdown(server: Server, args: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": server.jobs.cancel(None)}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_bind(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise Aware3DError(f"binding to {host!r} exposes the backend to other machines, so a token is required",
                           "add --token SECRET (and give the same token to the add-on), or use 127.0.0.1")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="aware3d-server %(levelname)s: %(message)s")


def stdio_streams() -> tuple[BinaryIO, Callable[[bytes], Any]]:
    """Take over fd 1 for the protocol and send everything else written to stdout to stderr."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    def write(data: bytes) -> None:
        proto.write(data)

    return sys.stdin.buffer, write


def run(host: str | None = None, port: int | None = None, token: str | None = None,
        work_dir: Path | None = None, heartbeat_s: float = P.HEARTBEAT_S) -> int:
    """Entry point of ``python -m backend.server`` and ``aware3d serve``."""
    setup_logging()
    if token is None:
        token = os.environ.get("AWARE3D_TOKEN") or None
    if port is None:
        inp, write = stdio_streams()
        server = Server(work_dir, heartbeat_s=heartbeat_s, token=None)
        log.info("serving protocol %d on stdio (pid %d, jobs in %s)", P.PROTOCOL_VERSION, os.getpid(),
                 server.work_dir)
        return server.serve_stream(inp, write)
    check_bind(host or "127.0.0.1", token)
    server = Server(work_dir, heartbeat_s=heartbeat_s, token=token)
    return server.serve_tcp(host or "127.0.0.1", port)
