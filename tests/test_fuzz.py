# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzzing the three doors a stranger can knock on: protocol lines, model files and official pickles.

Each target gets at least :data:`N_PER_TARGET` generated inputs from a fixed seed (so a failure is
reproducible: the message names the input), and every input must end in one of the outcomes a user can read:

* a protocol line → an ``error`` event of a named type (never ``InternalError``, which is what an unexpected
  exception becomes), an answer, or, for a valid job request, the point where the job would load its model
  (replaced here by a marker exception so the suite stays fast and never renders);
* a model file → a validated header and tensors, or one :class:`Aware3DError` line;
* a pickle → a snapshot, or one :class:`Aware3DError` line (``UnsafeCheckpointError`` included).

Nothing may be written outside the folders a request is allowed to write (the job folder, the models
folder), and the process's peak memory may not grow by more than 200 MB over a whole target. More inputs
for a local hunt: ``AWARE3D_FUZZ_N=20000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.errors import Aware3DError
from backend.server import protocol as P
from backend.server.jobs import Job, JobContext
from backend.server.server import Server

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_pickle_builder as builder

N_PER_TARGET = max(2000, int(os.environ.get("AWARE3D_FUZZ_N", "2000")))
RSS_GROWTH_LIMIT_MB = 200


# --------------------------------------------------------------------------------------------------------
# Memory and file-system guards
# --------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory growth over a block (Linux: the kernel's high-water mark, reset at the start)."""

    def __enter__(self) -> PeakMemory:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start_kb = _status_kb("VmRSS") or 0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.growth_mb = ((_status_kb("VmHWM") or 0) - self.start_kb) / 1024


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _outside(files: set[Path], allowed: list[Path]) -> list[Path]:
    return sorted(f for f in files if not any(f.is_relative_to(a) for a in allowed))


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


# --------------------------------------------------------------------------------------------------------
# Random values
# --------------------------------------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "", ".", "..", "../x", "../../../../../somewhere/x", "/etc/passwd", "/abs/name", "a/b", "a\\b", "..\\..\\x",
    "\x00", "name\x00.png", "con", "NUL", "aux.txt", " ", "\n", "~", "~root/x", "$HOME", "%APPDATA%",
    "x" * 300, "ü" * 40, "\u202e", "random:", "random:eg3d-ffhq512-128", "random:nope", "random:tiny",
    "file:///etc/passwd", "http://127.0.0.1:9/x", "-rf", "*", "?", "[", "0-4294967295", "0-100000000", "5-1",
    "-1", "1e309", "nan", "inf", "0x10", "0-3,7", ",,,", "2-", "-", "auto", "cpu", "cuda", "cuda:99", "mps",
    "vertex", "texture", "none", "fast", "full", "quality", "glb", "obj", "ply", "npz", "eg3d", "blender",
]
SPECIAL_NUMBERS: list[Any] = [0, 1, -1, 2, 3, 7, 64, 127, 128, 129, 512, 513, 1024, 4096, 65535, 2**31 - 1, 2**31,
                              2**32, 2**63 - 1, 2**63, -(2**63), 10**30, 0.5, -0.5, 1e-300, 1e300, -1e9, 1e9,
                              float("nan"), float("inf"), float("-inf"), -0.0]
INT64S = [x for x in SPECIAL_NUMBERS if isinstance(x, int) and -(2**63) <= x < 2**63]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind in (2, 3):
        return rng.choice(SPECIAL_NUMBERS)
    if kind == 4:
        return rng.choice(HOSTILE_STRINGS)
    if kind == 5:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(0, 20)))
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice([*HOSTILE_STRINGS, "a", "b", "ring", "pitch"]): random_json(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))}


def _value_for(rng: random.Random, types: tuple[type, ...], default: Any, real: list[str] = ()) -> Any:
    """Mostly well-typed hostile values (so requests get past the type check into the ops), some not;
    ``real``: valid values for this argument (a real photo, a real mesh) that let a request go deeper."""
    if rng.random() < 0.15:
        return random_json(rng)
    if real and str in types and rng.random() < 0.6:
        return rng.choice(real)
    t = rng.choice(types)
    if t is bool:
        return rng.choice([True, False])
    if t is int:
        return rng.choice([x for x in SPECIAL_NUMBERS if isinstance(x, int)])
    if t is float:
        return rng.choice(SPECIAL_NUMBERS)
    if t is str:
        return rng.choice(HOSTILE_STRINGS)
    if t is list:
        return [random_json(rng, 2) if rng.random() < 0.3 else rng.choice(SPECIAL_NUMBERS + HOSTILE_STRINGS)
                for _ in range(rng.randrange(0, 6))]
    if t is dict:
        return {k: rng.choice(SPECIAL_NUMBERS) for k in rng.sample(["ring", "pitch", "yaw", "radius", "x"], 2)}
    return None


# --------------------------------------------------------------------------------------------------------
# Target 1: protocol lines
# --------------------------------------------------------------------------------------------------------


class ReachedModel(Exception):
    """A job got past every check to the point of loading its model: a legitimate outcome."""


class Recorder:
    inline_results = False

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.authenticated = True
        self.closed = False
        self.name = "fuzz"

    def send(self, msg: dict[str, Any]) -> None:
        P.encode(msg)  # every event must be encodable (no NaN, no bytes)
        self.events.append(msg)

    def close(self) -> None:
        self.closed = True


def _real_inputs(folder: Path) -> dict[str, list[str]]:
    """Files a request may legitimately name: a photo, a mesh (.glb and .npz), a model file."""
    import numpy as np

    from backend.invert.demo_photo import write_photo
    from backend.mesh.data import Mesh
    from backend.mesh.export import write_glb

    photo = write_photo(folder / "photo.png", 160, 120)
    v = np.array([[0, 0, 0], [0.2, 0, 0], [0, 0.2, 0], [0, 0, 0.2]], np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    write_glb(folder / "head.glb", Mesh(v, f, colours=np.full((4, 3), 0.5, np.float32)))
    np.savez(folder / "mesh.npz", vertices=v, faces=f)
    photo_b64 = base64.b64encode(photo.read_bytes()).decode("ascii")
    return {"image": [str(photo)], "image_b64": [photo_b64], "mesh": [str(folder / "head.glb"),
                                                                      str(folder / "mesh.npz")],
            "mesh_b64": [base64.b64encode((folder / "head.glb").read_bytes()).decode("ascii")],
            "path": [str(folder / "photo.png"), str(_tiny_model(folder))]}


def _protocol_lines(rng: random.Random, ops: dict[str, P.OpSpec], n: int,
                    real: dict[str, list[str]]) -> Iterator[bytes]:
    names = sorted(ops)
    for i in range(n):
        kind = rng.random()
        if kind < 0.05:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\n"
            continue
        if kind < 0.10:
            depth = rng.choice([10, 100, 1000, 10_000, 100_000])
            opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
            body = opener * depth + "1" + closer * depth
            yield (body if rng.random() < 0.5 else
                   json.dumps({"v": 1, "id": f"d{i}", "op": "sample", "args": {}})[:-1] + ',"x":' + body + "}"
                   ).encode() + b"\n"
            continue
        if kind < 0.15:
            yield json.dumps(random_json(rng)).encode() + b"\n"
            continue
        op = rng.choice(names)
        spec = ops[op]
        args: dict[str, Any] = {}
        for name, (types, default) in spec.args.items():
            if (name in real and rng.random() < 0.5) or rng.random() < 0.25:  # few: the rest stay valid
                args[name] = _value_for(rng, types, default, real.get(name, []))
        if rng.random() < 0.05:
            args[rng.choice(HOSTILE_STRINGS)] = random_json(rng)
        msg: dict[str, Any] = {"v": 1, "id": f"f{i}", "op": op, "args": args}
        if rng.random() < 0.05:
            msg[rng.choice(["v", "id", "op", "args"])] = random_json(rng)
        text = json.dumps(msg, allow_nan=True)
        if rng.random() < 0.05:  # a cut line
            text = text[: rng.randrange(len(text) + 1)]
        yield text.encode("utf-8", "surrogatepass") + b"\n"


def _run_job(server: Server, conn: Recorder, rid: str, op: str, args: dict[str, Any], job_root: Path) -> str:
    """Run a job handler in this thread, as the worker would; returns the outcome's name."""
    job = Job(rid, op, args, conn)
    job_dir = job_root / rid
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        server.handlers[op](JobContext(job, job_dir, server))
    except ReachedModel:
        return "model"
    except (Aware3DError, P.ProtocolError):
        return "refused"
    except OSError as exc:  # the worker reports these in one line too, but only as "cannot write or read"
        raise AssertionError(f"an unexplained OSError reached the worker: {exc}") from None
    return "done"


def test_fuzz_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.registry
    import backend.texture.generators

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise ReachedModel()

    for home in ("cwd", "home", "models", "jobs", "inputs"):
        (tmp_path / home).mkdir()
    real = _real_inputs(tmp_path / "inputs")
    before = _files_under(tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWARE3D_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(backend.registry, "load_generator", reached)
    monkeypatch.setattr(backend.texture.generators, "load_generator", reached)
    import backend.server.download as download
    monkeypatch.setattr(download, "_open", reached)  # never the network

    server = Server(tmp_path / "jobs", heartbeat_s=3600)
    server.models.get = reached  # type: ignore[method-assign]
    rng = random.Random(15)
    outcomes: dict[str, int] = {}
    runs: dict[str, int] = {}
    failures: list[str] = []
    with PeakMemory() as mem:
        for line in _protocol_lines(rng, server.ops, N_PER_TARGET, real):
            conn = Recorder()
            try:
                msg = P.decode(line)
                rid, op, args = P.parse_request(msg, server.ops)
            except P.ProtocolError:
                outcome = "bad line"
            except Exception as exc:  # any other exception is the bug being hunted
                failures.append(f"decode/parse raised {type(exc).__name__}: {exc} for {_short(line)}")
                continue
            else:
                runs[op] = runs.get(op, 0) + 1
                if server.ops[op].job and not server.ops[op].args and runs[op] > 3:
                    outcome = op  # `free` and its like take no arguments: a few runs say all there is
                elif server.ops[op].job:
                    try:
                        outcome = _run_job(server, conn, rid, op, args, tmp_path / "jobs")
                    except Exception as exc:
                        failures.append(f"{op} raised {type(exc).__name__}: {_short(str(exc), 200)} for "
                                        f"{_short(args)}")
                        continue
                    name = args.get("name")
                    if outcome in ("model", "done") and isinstance(name, str) and ("/" in name or "\\" in name or
                                                                         name.startswith(".")):
                        failures.append(f"{op} accepted the unsafe name {name!r}")
                else:
                    server.handle_line(conn, line)  # immediate ops answer at once
                    outcome = conn.events[-1]["event"] if conn.events else "silent"
                    errors = [e for e in conn.events if e.get("event") == "error"]
                    if any(e["error"]["type"] == P.INTERNAL for e in errors):
                        failures.append(f"{op}: {errors[-1]['error']} for {_short(line)}")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    server.finish(1.0)
    outside = _outside(_files_under(tmp_path) - before, [tmp_path / "jobs", tmp_path / "models"])
    assert not failures, f"{len(failures)} of {N_PER_TARGET} inputs ended in a traceback:\n" + "\n".join(failures[:15])
    assert not outside, f"written outside the job and models folders: {outside[:10]}"
    assert mem.growth_mb < RSS_GROWTH_LIMIT_MB, f"peak memory grew by {mem.growth_mb:.0f} MB"
    # the generator reaches every kind of outcome, so the suite is not only testing the JSON parser
    assert outcomes.get("bad line", 0) > N_PER_TARGET // 10 and outcomes.get("refused", 0) > 50, outcomes
    assert outcomes.get("model", 0) > 20, outcomes


# --------------------------------------------------------------------------------------------------------
# Target 2: model files
# --------------------------------------------------------------------------------------------------------


def _tiny_model(folder: Path) -> Path:
    """A small but complete GAN model file (random weights)."""
    from backend.checkpoints.model_file import save_model
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator

    torch.manual_seed(0)
    G = TriPlaneGenerator(TINY)
    path = folder / "tiny.safetensors"
    save_model(path, G.state_dict(), "gan", TINY.to_dict(), {"source": "fuzz"})
    return path


def _header_span(data: bytes) -> tuple[int, int]:
    n = int.from_bytes(data[:8], "little")
    return 8, 8 + n


def _mutate_header(rng: random.Random, data: bytes) -> bytes:
    """Rewrite one field of the JSON header (the Aware3D metadata or a tensor entry) to a hostile value."""
    lo, hi = _header_span(data)
    header = json.loads(data[lo:hi])
    meta = header.get("__metadata__", {})
    choice = rng.random()
    if choice < 0.5 and "aware3d" in meta:
        a3 = json.loads(meta["aware3d"])
        target = a3["config"] if rng.random() < 0.8 else a3
        if isinstance(target, dict) and target:
            key = rng.choice(sorted(target))
            target[key] = random_json(rng) if rng.random() < 0.5 else rng.choice(SPECIAL_NUMBERS + HOSTILE_STRINGS)
        meta["aware3d"] = json.dumps(a3, allow_nan=True)
    elif choice < 0.6:
        depth = rng.choice([100, 10_000, 100_000])
        meta["aware3d"] = "[" * depth + "]" * depth
    elif choice < 0.7:
        meta[rng.choice(["aware3d", "aware3d.key_order"])] = rng.choice(HOSTILE_STRINGS)
    else:
        key = rng.choice([k for k in header if k != "__metadata__"])
        entry = header[key]
        field = rng.choice(["dtype", "shape", "data_offsets"])
        entry[field] = (rng.choice(["F16", "F64", "I8", "BOOL", "U8", "X", 3]) if field == "dtype" else
                        [rng.choice(INT64S) for _ in range(rng.randrange(0, 4))])
    header["__metadata__"] = meta
    body = json.dumps(header, allow_nan=True).encode()
    body += b" " * (-len(body) % 8)
    return len(body).to_bytes(8, "little") + body + data[hi:]


def mutate_bytes(rng: random.Random, data: bytes, header: tuple[int, int] | None = None) -> bytes:
    """A truncation, bit flips (in the header region or anywhere), a zeroed or duplicated block."""
    kind = rng.random()
    if kind < 0.25:
        return data[: rng.randrange(len(data))]
    buf = bytearray(data)
    if kind < 0.75:
        lo, hi = header if header and rng.random() < 0.5 else (0, len(buf))
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            i = rng.randrange(lo, hi)
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    i = rng.randrange(len(buf))
    n = rng.randrange(1, 64)
    if kind < 0.85:
        buf[i:i + n] = bytes(n)
    elif kind < 0.95:
        buf[i:i] = buf[i:i + n]
    else:
        buf[i:i + 8] = rng.choice(INT64S).to_bytes(8, "little", signed=True)
    return bytes(buf)


def fuzz_files(path: Path, make: Callable[[], bytes], read: Callable[[int, bytes], Any]) -> tuple[int, int]:
    """Write N_PER_TARGET generated files to ``path`` and read each: it is accepted, or refused with one
    :class:`Aware3DError` line; anything else fails the test (with the input's number and checksum), and so
    does peak memory growing by more than the limit. Returns (accepted, refused)."""
    accepted = refused = 0
    failures: list[str] = []
    with PeakMemory() as mem:
        for i in range(N_PER_TARGET):
            data = make()
            path.write_bytes(data)
            try:
                read(i, data)
                accepted += 1
            except Aware3DError as exc:
                assert "\n" not in exc.one_line()
                refused += 1
            except Exception as exc:
                failures.append(f"input {i}: {type(exc).__name__}: {_short(str(exc), 200)} "
                                f"(crc32 {zlib.crc32(data):08x}, {len(data)} bytes)")
    assert not failures, f"{len(failures)} of {N_PER_TARGET} files ended in a traceback:\n" + "\n".join(failures[:15])
    assert mem.growth_mb < RSS_GROWTH_LIMIT_MB, f"peak memory grew by {mem.growth_mb:.0f} MB"
    return accepted, refused


def test_fuzz_model_files(tmp_path: Path) -> None:
    from backend.checkpoints.model_file import validate_model_file
    from backend.registry import load_generator

    original = _tiny_model(tmp_path).read_bytes()
    assert validate_model_file(tmp_path / "tiny.safetensors").kind == "gan"
    rng = random.Random(16)
    path = tmp_path / "m.safetensors"

    def read(i: int, data: bytes) -> None:
        validate_model_file(path)
        if i % 10 == 0:  # a valid file also loads (building the model is the slow part)
            load_generator(str(path), "cpu")

    valid, refused = fuzz_files(path, lambda: (_mutate_header(rng, original) if rng.random() < 0.4 else
                                               mutate_bytes(rng, original, _header_span(original))), read)
    assert valid > 50 and refused > N_PER_TARGET // 4, (valid, refused)
    assert _files_under(tmp_path) == {tmp_path / "tiny.safetensors", path}


# --------------------------------------------------------------------------------------------------------
# Target 3: official pickles
# --------------------------------------------------------------------------------------------------------

PICKLE_OPCODES = [b"c", b"\x93", b"R", b"b", b"o", b"i", b"\x81", b"\x92", b"(", b"t", b"}", b"]", b"e", b"s",
                  b"u", b"q\x00", b"h\x00", b"N", b"\x88", b"0", b"2", b"\x94", b"."]


def _pickle_corpus(tmp_path: Path) -> list[bytes]:
    """Official-layout snapshots in both tensor encodings and pickle protocols 2 and 4. G and D are small
    stand-ins (the reader treats them as it treats G_ema, which is complete): a third of the bytes to parse
    per input, so 2,000 inputs stay within the suite's time."""
    G = builder.make_tiny_triplane_generator(seed=5)
    return [builder.dumps_snapshot(G, G=builder.AugmentPipe(), D=builder.AugmentPipe(), tensor_encoding=enc,
                                   protocol=proto)
            for enc, proto in (("torch", 2), ("legacy", 4))]


def _mutate_pickle(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.2:  # insert or replace an opcode
        i = rng.randrange(len(data))
        op = rng.choice(PICKLE_OPCODES)
        return data[:i] + op + data[i + (len(op) if rng.random() < 0.5 else 0):]
    if rng.random() < 0.1:  # splice two places of the stream together
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        return data[:i] + data[j:]
    return mutate_bytes(rng, data)


def test_fuzz_official_pickles(tmp_path: Path) -> None:
    from backend.checkpoints.official_pickle import read_snapshot

    corpus = _pickle_corpus(tmp_path)
    rng = random.Random(17)
    path = tmp_path / "snap.pkl"
    _, refused = fuzz_files(path, lambda: _mutate_pickle(rng, rng.choice(corpus)),
                            lambda i, data: read_snapshot(path))
    assert refused > N_PER_TARGET // 4, refused
    assert _files_under(tmp_path) == {path}
