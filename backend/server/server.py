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

Over TCP anyone who can reach the port can connect, so the server bounds what a connection may cost before
and after it authenticates: see :class:`Server` (deadlines, the connection cap) and :class:`SocketConnection`
(a client that stops reading is dropped instead of stalling the others). There is no TLS: off loopback a
token is required, and the traffic should go through an SSH tunnel.
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
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from backend.errors import Aware3DError
from backend.server import download, ops_core, ops_gallery, ops_invert, ops_mesh, ops_sample, ops_texture
from backend.server import protocol as P
from backend.server.jobs import Handler, Job, JobQueue, error_from_exception

log = logging.getLogger("aware3d.server")

Immediate = Callable[["Server", dict[str, Any]], dict[str, Any]]

# Limits of ``serve --port`` (see :class:`Server`; the CLI flags show them in --help).
AUTH_TIMEOUT_S = 10.0  # a new connection must send its first request (hello with the token, if set) by then
IDLE_TIMEOUT_S = 600.0  # an authenticated client with no request and no job for this long is closed
MAX_CONNECTIONS = 16  # concurrent TCP clients, not yet authenticated ones included
SEND_TIMEOUT_S = 30.0  # a client that accepts no data for this long (it stopped reading) is dropped
OUTBOX_BYTES = 8 << 20  # events queued for one client (beyond the one being sent) before senders wait
SEND_CHUNK = 1 << 20  # bytes per send call: each chunk must make progress within the send timeout
TIMEOUT = "Timeout"  # error type of a connection closed because its first request did not come in time


class Connection:
    """One client. ``send`` is thread-safe (worker, heartbeat and reader threads all write).

    It also keeps what the server's limits look at: when the client last asked for something, how many
    requests it has sent, and the ids of its jobs that were accepted (``ack``), so that a client waiting for
    a long queued job is not taken for an idle one.
    """

    def __init__(self, write: Callable[[bytes], Any], name: str, inline_results: bool = False,
                 needs_auth: bool = False, close: Callable[[], Any] | None = None) -> None:
        self._write = write
        self._close = close
        self._lock = threading.Lock()
        self.name = name
        self.inline_results = inline_results
        self.authenticated = not needs_auth
        self.closed = False
        self.connected_at = time.monotonic()
        self.last_active = self.connected_at
        self.requests = 0
        self.open_jobs: set[str] = set()

    def send(self, msg: dict[str, Any], droppable: bool = False) -> None:
        """Write one event. ``droppable``: the event may be skipped when the client is behind (heartbeats)."""
        data = P.encode(msg)
        with self._lock:
            if self.closed:
                return
            try:
                self._write(data)
            except (BrokenPipeError, ConnectionError, OSError, ValueError):
                self.closed = True  # the client went away; its jobs are cancelled by the reader

    def note_request(self) -> None:
        """A request line arrived: the client is active (heartbeats going out do not count)."""
        self.requests += 1
        self.last_active = time.monotonic()

    @property
    def greeted(self) -> bool:
        """Past the authentication deadline's reach: a request arrived, and the token was right if one is set."""
        return self.requests > 0 and self.authenticated

    @property
    def ended(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        if self._close is not None:
            with contextlib.suppress(OSError):
                self._close()


class SocketConnection(Connection):
    """A TCP client whose events go through an outbox that its own writer thread drains.

    Why: the job worker and the heartbeat thread serve every client; if they wrote to sockets themselves, one
    client that stops reading (a full socket buffer) would stall results and heartbeats for all the others.
    Here ``send`` only queues (heartbeats are skipped while the client is behind; other events wait only when
    :data:`OUTBOX_BYTES` are already queued), and the writer sends in chunks, each of which must make progress
    within ``send_timeout_s``. A whole event may take as long as it needs (results of hundreds of MB on a slow
    link are fine); a client that accepts nothing for ``send_timeout_s`` is dropped, and its jobs cancelled.
    """

    def __init__(self, sock: socket.socket, name: str, needs_auth: bool, send_timeout_s: float,
                 poll_s: float) -> None:
        super().__init__(sock.sendall, name, inline_results=True, needs_auth=needs_auth)
        self.sock = sock
        self.send_timeout_s = send_timeout_s
        self._cond = threading.Condition()
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._poll_s = poll_s
        self.closing = False  # close() was asked: the writer sends what is queued, then ends the connection
        self.dropped_reason: str | None = None
        sock.settimeout(poll_s)  # every recv/send wakes at least this often to check deadlines and flags
        self.writer = threading.Thread(target=self._write_loop, daemon=True, name=f"aware3d-writer-{name}")

    def start(self) -> None:
        self.writer.start()

    @property
    def ended(self) -> bool:
        return self.closed or self.closing

    def send(self, msg: dict[str, Any], droppable: bool = False) -> None:
        data = P.encode(msg)
        with self._cond:
            if self.ended or (droppable and self._outbox):
                return
            while self._queued_bytes >= OUTBOX_BYTES and not self.ended:
                self._cond.wait(self._poll_s)  # the writer makes progress or drops the client, in bounded time
            if self.ended:
                return
            self._outbox.append(data)
            self._queued_bytes += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        """End the connection after the events already queued (e.g. an error line) have been sent."""
        with self._cond:
            self.closing = True
            self._cond.notify_all()

    def abort(self) -> None:
        """End the connection now, dropping what is queued; wakes the reader and the writer."""
        with self._cond:
            self.closed = True
            self._outbox.clear()
            self._queued_bytes = 0
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _write_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._outbox and not self.ended:
                        self._cond.wait()
                    if self.closed or not self._outbox:
                        return  # aborted, or closing with everything sent
                    data = self._outbox.popleft()
                    self._queued_bytes -= len(data)
                    self._cond.notify_all()
                self._send_all(data)
        except TimeoutError:
            self.dropped_reason = f"it accepted no data for {self.send_timeout_s:g} s"
            log.warning("dropped client %s: %s (--send-timeout); its jobs are cancelled", self.name,
                        self.dropped_reason)
        except OSError:
            pass  # the client went away; the reader sees it too
        finally:
            self.abort()

    def _send_all(self, data: bytes) -> None:
        """``sendall`` with a deadline on progress, not on the whole event (see the class docstring)."""
        view = memoryview(data)
        last = time.monotonic()
        while view:
            if self.closed:
                raise ConnectionAbortedError("connection aborted")
            try:
                n = self.sock.send(view[:SEND_CHUNK])
            except TimeoutError:
                if time.monotonic() - last >= self.send_timeout_s:
                    raise
                continue
            view = view[n:]
            last = time.monotonic()


class _LineSplitter:
    """Request lines out of received bytes, as :func:`protocol.read_line` reads them from a stream.

    Why not ``sock.makefile``: the reader must wake up on its own (recv timeouts) to enforce the deadlines,
    and a buffered file object is left in an undefined state by a timeout. A line longer than ``max_bytes``
    comes out truncated to ``max_bytes + 1`` bytes (so that decoding reports it as too large) and the rest of
    it is discarded; memory stays bounded by ``max_bytes`` plus one received chunk.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        while True:
            i = self._buf.find(b"\n", self._scanned)
            if self._discarding:
                if i < 0:
                    self._buf.clear()
                    self._scanned = 0
                    return lines
                del self._buf[:i + 1]
                self._scanned = 0
                self._discarding = False
                continue
            if i < 0:
                self._scanned = len(self._buf)
                if len(self._buf) > self.max_bytes:
                    lines.append(bytes(self._buf[:self.max_bytes + 1]))
                    self._buf.clear()
                    self._scanned = 0
                    self._discarding = True
                return lines
            if i > self.max_bytes:
                lines.append(bytes(self._buf[:self.max_bytes + 1]))
                del self._buf[:i + 1]
            else:
                lines.append(bytes(self._buf[:i + 1]))
                del self._buf[:i + 1]
            self._scanned = 0


class Server:
    """The operations, the job queue and the clients; served on a stream pair or on TCP.

    The TCP limits exist because a listening socket is reachable by anyone who can reach the port (and
    without a token, by every local user): ``auth_timeout_s`` closes connections that do not send their first
    request (hello with the token, when one is set) in time, ``idle_timeout_s`` (0: never) closes
    authenticated clients that neither send requests nor wait for jobs, ``max_connections`` caps concurrent
    clients (pre-authentication ones included; the excess gets one ``Busy`` error line and no thread), and
    ``send_timeout_s`` drops a client that stops reading (see :class:`SocketConnection`).
    """

    def __init__(self, work_dir: Path | None = None, heartbeat_s: float = P.HEARTBEAT_S,
                 max_queued: int = P.MAX_QUEUED, token: str | None = None,
                 auth_timeout_s: float = AUTH_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        check_limits(auth_timeout_s, idle_timeout_s, max_connections, send_timeout_s)
        self.auth_timeout_s = auth_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.send_timeout_s = send_timeout_s
        # How often a client's threads wake to check deadlines: fine enough for the tests' short limits.
        self._poll_s = max(0.02, min(0.5, auth_timeout_s / 4, send_timeout_s / 4,
                                     idle_timeout_s / 4 if idle_timeout_s else 0.5))
        self._refusals = 0  # refused connections not yet logged (the warning is rate-limited)
        self._refusal_logged = 0.0
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
        ops_gallery.register(self)

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

                def accepted(pos: int) -> None:
                    conn.open_jobs.add(rid)  # the client waits for it: not idle
                    conn.send(P.event("ack", rid, op=op, position=pos))

                self.jobs.submit(job, on_accept=accepted)
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
                    c.send(msg, droppable=True)  # never waits on a client that is behind

    def start_heartbeat(self) -> None:
        threading.Thread(target=self._heartbeat, name="aware3d-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def finish(self, timeout: float = 10.0) -> None:
        """Cancel running work and wait (bounded) for the worker to reach its next step and for model loads
        still in flight."""
        self.stopped.set()
        self.jobs.stop(timeout)
        self.models.wait_loading(timeout)  # a cancelled job's model load still runs in its own thread

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
        """Accept clients on ``host:port``; each gets a reader and a writer thread; results are sent inline.

        Connections beyond ``max_connections`` are refused here, in the accepting thread, without a thread
        of their own, so a flood of connections costs a bounded number of threads.
        """
        check_bind(host, self.token)
        srv = socket.create_server((host, port))
        srv.settimeout(0.5)
        bound = srv.getsockname()[1]
        log.info("listening on %s:%d%s (at most %d clients)", host, bound,
                 " (token required)" if self.token else "", self.max_connections)
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
                except OSError as exc:  # e.g. out of file descriptors: wait, and keep serving the others
                    log.warning("accept failed: %s", exc)
                    self.stopped.wait(0.1)
                    continue
                name = f"{addr[0]}:{addr[1]}"
                with self._conn_lock:
                    full = len(self.connections) >= self.max_connections
                    if not full:
                        conn = SocketConnection(sock, name, self.token is not None, self.send_timeout_s,
                                                self._poll_s)
                        self.connections.add(conn)  # counted at once, before its threads start
                if full:
                    self._refuse(sock, name)
                    continue
                conn.start()
                threading.Thread(target=self._serve_socket, args=(conn,), daemon=True,
                                 name=f"aware3d-client-{addr[1]}").start()
        finally:
            srv.close()
            self.finish()
        return 0

    def _refuse(self, sock: socket.socket, name: str) -> None:
        """One ``Busy`` error line, then close; never blocks (a fresh socket's send buffer is empty)."""
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.recv(1 << 16)  # what the client already sent, so that closing does not reset the line
            sock.send(P.encode(P.error_event(
                None, P.BUSY, f"too many connections ({self.max_connections})",
                "close another client of this backend, or start it with a higher --max-connections")))
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self._refusals += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:  # a flood must not flood the log too
            log.warning("refused connection %s: too many connections (%d)%s", name, self.max_connections,
                        f" ({self._refusals - 1} more refused since the last message)" if self._refusals > 1
                        else "")
            self._refusals, self._refusal_logged = 0, now

    def _expired(self, conn: Connection) -> str | None:
        """Why ``conn`` must be closed now (authentication deadline, idle timeout), or None."""
        now = time.monotonic()
        if not conn.greeted:
            if now - conn.connected_at >= self.auth_timeout_s:
                what = "hello with the right token" if self.token else "request"
                return f"no {what} within {self.auth_timeout_s:g} s"
            return None
        if not self.idle_timeout_s:
            return None
        if conn.open_jobs:
            status = self.jobs.status()
            live = {j["id"] for j in status["queued"]} | ({status["running"]["id"]} if status["running"] else set())
            conn.open_jobs &= live
            if conn.open_jobs:
                return None
            conn.last_active = max(conn.last_active, now)  # its last job just ended: the idle time starts now
        if now - conn.last_active >= self.idle_timeout_s:
            return f"idle for {self.idle_timeout_s:g} s"
        return None

    def _serve_socket(self, conn: SocketConnection) -> None:
        sock = conn.sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("client %s connected", conn.name)
        lines = _LineSplitter(P.MAX_REQUEST_BYTES)
        try:
            while not self.stopped.is_set() and not conn.ended:
                reason = self._expired(conn)  # checked on every pass: a trickle of bytes does not reset it
                if reason is not None:
                    if conn.greeted:
                        log.info("closing client %s: %s", conn.name, reason)
                    else:
                        log.warning("refused connection %s: %s", conn.name, reason)
                        conn.send(P.error_event(None, P.UNAUTHORIZED if self.token else TIMEOUT, reason,
                                                "send hello (with the token, if the backend has one) first"))
                    conn.close()
                    break
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    break
                for line in lines.feed(data):
                    if conn.ended:
                        break
                    if line.strip():
                        conn.note_request()
                        self.handle_line(conn, line)
        except OSError:
            pass
        finally:
            if not conn.closing:
                conn.abort()  # the client left (or the server stops): drop what is queued
            conn.writer.join(self.send_timeout_s + 1.0)  # closing: the writer sends the last lines first
            conn.abort()
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


def check_limits(auth_timeout_s: float, idle_timeout_s: float, max_connections: int,
                 send_timeout_s: float) -> None:
    """Refuse limits that would make the server useless (or unlimited where a limit is the point)."""
    if not auth_timeout_s > 0 or not send_timeout_s > 0:
        raise Aware3DError(f"the authentication and send timeouts must be positive, got {auth_timeout_s!r} and "
                           f"{send_timeout_s!r}", "e.g. --auth-timeout 10 --send-timeout 30")
    if not idle_timeout_s >= 0:
        raise Aware3DError(f"the idle timeout must be 0 (never) or positive, got {idle_timeout_s!r}",
                           "e.g. --idle-timeout 600")
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise Aware3DError(f"the connection cap must be a whole number of at least 1, got {max_connections!r}",
                           "e.g. --max-connections 16")


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
        work_dir: Path | None = None, heartbeat_s: float = P.HEARTBEAT_S, auth_timeout_s: float = AUTH_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
        send_timeout_s: float = SEND_TIMEOUT_S) -> int:
    """Entry point of ``python -m backend.server`` and ``aware3d serve`` (the limits apply to TCP only)."""
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
    server = Server(work_dir, heartbeat_s=heartbeat_s, token=token, auth_timeout_s=auth_timeout_s,
                    idle_timeout_s=idle_timeout_s, max_connections=max_connections, send_timeout_s=send_timeout_s)
    return server.serve_tcp(host or "127.0.0.1", port)
