# SPDX-License-Identifier: GPL-3.0-or-later
"""The Aware3D backend protocol: versioned JSON lines between a client (the Blender add-on) and the server.

Why a module of its own with no imports beyond the standard library: the Blender add-on ships a byte-for-byte
copy of this file (``addon/protocol.py``, checked by the tests), and Blender must never import torch or the
backend. Both sides build and check messages with the same code, so they cannot drift apart.

Wire format
-----------
One JSON object per line, UTF-8, terminated by ``\\n``. Every message carries ``"v": PROTOCOL_VERSION``.
NaN and infinities are not JSON: a request that holds one is refused, and an event sends ``null`` instead.
Requests may be at most :data:`MAX_REQUEST_BYTES`; events (server → client) may be larger, up to
:data:`MAX_EVENT_BYTES`, because over TCP results carry file contents inline (base64).

Request: ``{"v": 1, "id": "r1", "op": "mesh", "args": {...}}``. ``id`` is chosen by the client (a string of at
most 64 characters) and is echoed by every event about that request.

Events: ``{"v": 1, "event": KIND, "id": ..., ...}`` where KIND is

* ``ack``       a job was accepted: ``position`` 0 = running now, n = n jobs ahead of it;
* ``progress``  ``stage``, ``step``, ``total``, ``eta_s`` (seconds or null), ``fraction`` (0..1 over the whole
  job, or null), ``message`` and ``preview`` (a PNG path, or null); optionally ``partial``: a first result
  that the job's ``result`` will replace (``data`` and ``files`` as in a result; over TCP also ``inline``),
  e.g. ``invert``'s head from the photo encoder before the refinement;
* ``result``    ``op``, ``data`` (a JSON object), ``files`` (role → absolute path in the job folder),
  ``job_dir``, ``elapsed_s``; over TCP also ``inline`` (role → base64 of the file);
* ``error``     ``error`` = ``{"type", "message", "hint"}``; ``id`` is null when the request could not be read;
* ``cancelled`` the job stopped because of a ``cancel`` request;
* ``heartbeat`` sent every :data:`HEARTBEAT_S` seconds (``id`` null) with ``busy`` (running job id or null)
  and ``queued``; a client that hears nothing for :data:`HEARTBEAT_TIMEOUT_S` treats the backend as dead.

``result``, ``error`` and ``cancelled`` are terminal: exactly one of them ends every request.

Operations are listed in :data:`OPS` with their arguments. *Immediate* operations are answered at once, even
while a job runs; *job* operations go through one queue and run one at a time. A job request while another
runs is queued (``ack`` with its position); when :data:`MAX_QUEUED` jobs are already waiting it is refused
with an error of type ``Busy``. Later versions add operations (e.g. ``invert``, ``views``) by extending
:data:`OPS`; a client can read the server's list from the ``hello`` result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: requests are small; anything bigger is a bug or an attack
MAX_EVENT_BYTES = 1 << 29  # 512 MiB: inline results over TCP
MAX_ID_CHARS = 64
MAX_QUEUED = 8
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 30.0

EVENTS = ("ack", "progress", "result", "error", "cancelled", "heartbeat")
TERMINAL_EVENTS = ("result", "error", "cancelled")

# Error types a client may want to tell apart (an Aware3DError from the library keeps its class name).
BAD_REQUEST = "BadRequest"
MESSAGE_TOO_LARGE = "MessageTooLarge"
UNKNOWN_OP = "UnknownOp"
PROTOCOL_MISMATCH = "ProtocolMismatch"
BUSY = "Busy"
UNAUTHORIZED = "Unauthorized"
OUT_OF_MEMORY = "OutOfMemory"
INTERNAL = "InternalError"
BACKEND_DIED = "BackendDied"  # raised by clients, never sent by the server
NETWORK = "NetworkError"
HASH_MISMATCH = "HashMismatch"
OFFLINE = "OnlineAccessDisabled"

# An argument spec: (accepted JSON types, default). A default of REQUIRED means the argument must be given.
REQUIRED: Any = object()
_NUM = (int, float)
DEVICE_ARG = ((str,), "auto")
MODEL_ARG = ((str, type(None)), None)


@dataclass(frozen=True)
class OpSpec:
    """One operation: whether it runs as a queued job, and its arguments (name → (types, default))."""

    job: bool
    args: dict[str, tuple[tuple[type, ...], Any]]
    doc: str


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(False, {"client": ((str,), ""), "protocol": ((int,), PROTOCOL_VERSION),
                            "token": ((str, type(None)), None)},
                    "handshake: server version, protocol, operations; carries the token over TCP"),
    "version": OpSpec(False, {}, "same answer as hello, without a handshake"),
    "ping": OpSpec(False, {}, "answered at once with an empty result"),
    "status": OpSpec(False, {}, "running job, queued jobs, cached models"),
    "list_models": OpSpec(False, {}, "bundled and user models"),
    "cancel": OpSpec(False, {"job": ((str, type(None)), None)},
                     "cancel one job (queued or running), or all when job is null"),
    "shutdown": OpSpec(False, {}, "cancel everything and exit"),
    "doctor": OpSpec(True, {"device": DEVICE_ARG},
                     "device, memory, versions and a tiny timed inference"),
    "load_model": OpSpec(True, {"model": MODEL_ARG, "device": DEVICE_ARG}, "load a model into the cache"),
    "free": OpSpec(True, {}, "drop cached models and free (GPU) memory"),
    "sample": OpSpec(True, {
        "model": MODEL_ARG, "device": DEVICE_ARG, "seeds": ((list, str, int), [0]),
        "truncation": (_NUM, 0.7), "yaw": (_NUM, 0.0), "pitch": (_NUM, 0.0),
        "resolution": ((int, type(None)), None), "exact": ((bool,), False)},
        "images, depth and cameras for seeds"),
    "mesh": OpSpec(True, {
        "model": MODEL_ARG, "device": DEVICE_ARG, "seed": ((int,), 0), "truncation": (_NUM, 0.7),
        "resolution": ((int,), 128), "faces": ((int,), 0), "colour_mode": ((str,), "vertex"),
        "texture_size": ((int,), 1024), "camera": ((bool,), True), "preview": ((bool,), False),
        "formats": ((list,), []), "level": ((int, float, type(None)), None)},
        "a coloured mesh for one seed, in Blender coordinates (metres), plus the generator camera"),
    "add_model": OpSpec(True, {"path": ((str,), REQUIRED), "name": ((str, type(None)), None),
                               "overwrite": ((bool,), False)},
                        "copy a .safetensors model (or convert an official .pkl) into the user models folder"),
    "download_model": OpSpec(True, {
        "url": ((str,), REQUIRED), "sha256": ((str, type(None)), None), "name": ((str, type(None)), None),
        "online_access": ((bool,), False), "overwrite": ((bool,), False), "retries": ((int,), 3)},
        "download a model with resume (HTTP Range) and an optional SHA-256 check"),
}
COLOUR_MODES = ("vertex", "texture", "none")


class ProtocolError(Exception):
    """A request that cannot be served; becomes an ``error`` event (type, message, hint)."""

    def __init__(self, type_: str, message: str, hint: str = "", request_id: str | None = None) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.hint = hint
        self.request_id = request_id

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "hint": self.hint}


# --------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------


def encode(msg: dict[str, Any]) -> bytes:
    """One message → one line of bytes (compact JSON, ASCII-safe, newline-terminated).

    NaN and infinities are not JSON: a result that holds one (a diverged loss, say) sends ``null`` in its
    place rather than failing to send at all."""
    try:
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_or_null(msg), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return (text + "\n").encode("ascii")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def decode(line: bytes | str, max_bytes: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """One line → a message dict; raises :class:`ProtocolError` for oversized, non-JSON or non-object lines."""
    raw = line.encode("utf-8") if isinstance(line, str) else line
    if len(raw.rstrip(b"\r\n")) > max_bytes:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"message of {len(raw)} bytes exceeds the limit of {max_bytes}",
                            "send smaller requests; file contents travel as paths")
    try:
        msg = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(BAD_REQUEST, f"not a JSON line ({exc})",
                            "send one JSON object per line") from None
    except RecursionError:  # json's parser recurses per nesting level: [[[[...]]]] a million deep
        raise ProtocolError(BAD_REQUEST, "the JSON line is nested too deeply",
                            "requests nest a few levels at most") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_REQUEST, f"a message must be a JSON object, got {type(msg).__name__}",
                            'e.g. {"v": 1, "id": "r1", "op": "hello", "args": {}}')
    return msg


def read_line(stream: Any, max_bytes: int) -> bytes | None:
    """Read one line from a binary stream; ``None`` at end of input.

    A line longer than ``max_bytes`` is consumed to its end and returned truncated to ``max_bytes + 1``
    bytes without its newline, so that :func:`decode` reports it as too large and the stream stays in step.
    """
    line = stream.readline(max_bytes + 1)
    if not line:
        return None
    if len(line) > max_bytes and not line.endswith(b"\n"):
        while True:  # discard the rest of the oversized line
            rest = stream.readline(1 << 16)
            if not rest or rest.endswith(b"\n"):
                break
    return line


# --------------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------------


def request(op: str, args: dict[str, Any] | None = None, request_id: str = "") -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": dict(args or {})}


def parse_request(msg: dict[str, Any], ops: dict[str, OpSpec] | None = None) -> tuple[str, str, dict[str, Any]]:
    """Check a decoded request; return ``(id, op, args)`` with defaults filled in.

    Raises :class:`ProtocolError` (with the request id when it could be read) for a wrong version, a missing
    or bad id, an unknown operation, unknown arguments and arguments of the wrong type.
    """
    ops = OPS if ops is None else ops
    rid = msg.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
        raise ProtocolError(BAD_REQUEST, f"request id must be a non-empty string of at most {MAX_ID_CHARS} "
                            f"characters, got {rid!r}", 'e.g. "id": "r1"')
    v = msg.get("v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(PROTOCOL_MISMATCH, f"protocol version {v!r} is not supported (this side speaks "
                            f"{PROTOCOL_VERSION})", "update the add-on and the backend to the same release",
                            rid)
    op = msg.get("op")
    if not isinstance(op, str) or op not in ops:
        raise ProtocolError(UNKNOWN_OP, f"unknown operation {op!r}", f"known: {', '.join(sorted(ops))}", rid)
    args = msg.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, "args must be a JSON object", 'e.g. "args": {"seed": 3}', rid)
    return rid, op, check_args(op, args, ops[op], rid)


def check_args(op: str, args: dict[str, Any], spec: OpSpec, rid: str | None = None) -> dict[str, Any]:
    unknown = sorted(set(args) - set(spec.args))
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"{op}: unknown argument(s) {', '.join(unknown)}",
                            f"{op} takes: {', '.join(sorted(spec.args)) or 'no arguments'}", rid)
    out: dict[str, Any] = {}
    for name, (types, default) in spec.args.items():
        if name not in args:
            if default is REQUIRED:
                raise ProtocolError(BAD_REQUEST, f"{op}: argument {name!r} is required", "", rid)
            out[name] = json.loads(json.dumps(default))  # a fresh copy of list defaults
            continue
        value = args[name]
        # bool is an int in Python; do not accept true for a number or 1 for a flag.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ProtocolError(BAD_REQUEST, f"{op}: argument {name!r} must be {names}, got {value!r}", "", rid)
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------------


def event(kind: str, request_id: str | None, **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "event": kind, "id": request_id, **fields}


def error_event(request_id: str | None, type_: str, message: str, hint: str = "") -> dict[str, Any]:
    return event("error", request_id, error={"type": type_, "message": message, "hint": hint})


def is_terminal(msg: dict[str, Any]) -> bool:
    return msg.get("event") in TERMINAL_EVENTS


def parse_event(msg: dict[str, Any]) -> dict[str, Any]:
    """Check an event read by a client (version and kind); raises :class:`ProtocolError`."""
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(PROTOCOL_MISMATCH, f"the backend speaks protocol {msg.get('v')!r}, this client "
                            f"{PROTOCOL_VERSION}", "update the add-on and the backend to the same release")
    if msg.get("event") not in EVENTS:
        raise ProtocolError(BAD_REQUEST, f"unknown event {msg.get('event')!r}", "")
    return msg


def format_eta(seconds: float | None) -> str:
    """'1:05' style ETA for progress displays; empty when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
