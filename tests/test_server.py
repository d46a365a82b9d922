# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend server: requests and events in-process, the real stdio process, TCP with a token, downloads
against a local HTTP server (interrupted, resumed, bad hash), and the add-on's client against the server.

Also home of :func:`head_model`, a tiny generator fitted in seconds to an analytic head (every seed gives the
same head), which the mesh and Blender tests use because random weights have no surface at EG3D's level.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.server import protocol as P
from backend.server.jobs import JobContext, JobResult
from backend.server.server import Connection, Server, check_bind

ROOT = Path(__file__).resolve().parents[1]
HEAD_MODEL_VERSION = 1
HEAD_NAME = "head-tiny"


# ----------------------------------------------------------------------------------------------------------
# A tiny generator that draws a head
# ----------------------------------------------------------------------------------------------------------


def _ellipsoid(p: Any, c: tuple[float, ...], r: tuple[float, ...]) -> Any:
    import torch

    ct, rt = torch.tensor(c), torch.tensor(r)
    k0 = ((p - ct) / rt).norm(dim=-1)
    k1 = ((p - ct) / rt**2).norm(dim=-1).clamp_min(1e-6)
    return k0 * (k0 - 1) / k1


def head_sdf_rgb(p: Any) -> tuple[Any, Any]:
    """Signed distance (generator units, face towards +z) and sRGB albedo of a simple head."""
    import torch

    x, y, z = p.unbind(-1)
    skull = _ellipsoid(p, (0, 0.04, -0.01), (0.19, 0.22, 0.21))
    jaw = _ellipsoid(p, (0, -0.07, 0.04), (0.14, 0.12, 0.15))
    nose = _ellipsoid(p, (0, 0.0, 0.2), (0.035, 0.06, 0.06))
    neck = torch.maximum(torch.stack([x, z + 0.02], -1).norm(dim=-1) - 0.095, y + 0.05)
    d = torch.minimum(torch.minimum(skull, jaw), torch.minimum(nose, neck))
    rgb = torch.tensor([0.85, 0.62, 0.5]).expand((*p.shape[:-1], 3)).clone()
    hair = (skull < 0.03) & ((y > 0.1) | ((z < 0.0) & (y > -0.06)))
    rgb[hair] = torch.tensor([0.2, 0.12, 0.06])
    return d, rgb


def fit_head_model(path: Path, steps: int = 600) -> Path:
    """Fit TINY's weights so its density/colour field is :func:`head_sdf_rgb` (mapping frozen to one w)."""
    import torch

    from backend.checkpoints.model_file import save_model
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP spinning on a shared 2-core machine
    try:
        torch.manual_seed(0)
        G = TriPlaneGenerator(TINY, seed=0)
        m = G.backbone.mapping
        with torch.no_grad():
            m.fc1.weight.zero_()  # every z maps to the same w: every seed is this head
            m.w_avg.copy_(m.fc1.bias)
        m.requires_grad_(False)
        opt = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps, pct_start=0.1)
        c, z = torch.zeros(1, 25), torch.zeros(1, TINY.z_dim)
        for _ in range(steps):
            planes = G.synthesize_planes(G.mapping(z, c, truncation_psi=0.7), noise_mode="const")
            u = torch.rand(3000, 3) - 0.5
            du, _ = head_sdf_rgb(u)
            near = u[du.abs() < 0.08][:1500]
            pts = torch.cat([u, near + 0.01 * torch.randn_like(near)])
            d, rgb_t = head_sdf_rgb(pts)
            out = G.query(planes, pts[None])
            sigma, rgb = out["sigma"][0, :, 0], out["rgb"][0, :, :3]
            loss = ((sigma - (10 - 150 * d).clamp(-20, 40)) ** 2).mean() / 100 + \
                ((rgb - rgb_t) ** 2).sum(-1)[d.abs() < 0.04].mean() * 10
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    save_model(path, G.state_dict(), kind="gan", config=TINY.to_dict(),
               provenance={"source": "tests: TINY fitted to an analytic head", "steps": steps})
    return path


def head_model(folder: Path) -> Path:
    """``folder/head-tiny.safetensors``, fitted once and cached under tests/artifacts/cache (gitignored)."""
    cache = ROOT / "tests" / "artifacts" / "cache" / f"{HEAD_NAME}-v{HEAD_MODEL_VERSION}.safetensors"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        fit_head_model(cache)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{HEAD_NAME}.safetensors"
    if not dest.exists():
        dest.write_bytes(cache.read_bytes())
    return dest


@pytest.fixture(scope="session")
def head_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("head_models")
    head_model(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------
# In-process server
# ----------------------------------------------------------------------------------------------------------


class Recorder:
    """A connection that keeps the events it is sent, with a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.conn = Connection(self._write, "test")

    def _write(self, data: bytes) -> None:
        msg = json.loads(data)
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        with self.cond:
            self.events.append(msg)
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event; got {[e.get('event') for e in self.events]}")
                self.cond.wait(left)

    def terminal(self, rid: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(lambda e: e.get("id") == rid and P.is_terminal(e), timeout)

    def of(self, rid: str) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if e.get("id") == rid]


def send(server: Server, rec: Recorder, rid: str, op: str, **args: Any) -> None:
    server.handle_line(rec.conn, P.encode(P.request(op, args, rid)))


SLOW = P.OpSpec(True, {"steps": ((int,), 50), "dt": ((float, int), 0.02)}, "test: a job that takes a while")


STEPS_RUN: dict[str, int] = {}  # job id -> steps slow_job has finished (what a cancel test counts)


def slow_job(ctx: JobContext) -> JobResult:
    n = ctx.args["steps"]
    for i in range(n):
        time.sleep(ctx.args["dt"])
        STEPS_RUN[ctx.job.id] = i + 1
        ctx.progress("work", i + 1, n)
    out = ctx.job_dir / "out.txt"
    out.write_text("done")
    return JobResult(data={"steps": n}, files={"out": out})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "jobs", heartbeat_s=0.2, max_queued=2)
    s.register_op("slow", SLOW, slow_job)
    yield s
    s.finish(5)


def test_hello_and_version(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "h", "hello", client="test")
    ev = rec.terminal("h")
    assert ev["event"] == "result" and ev["data"]["protocol"] == P.PROTOCOL_VERSION
    assert set(P.OPS) <= set(ev["data"]["ops"]) and "mesh" in ev["data"]["job_ops"]
    send(server, rec, "v", "version")
    assert rec.terminal("v")["data"]["version"] == ev["data"]["version"]
    send(server, rec, "bad", "hello", protocol=99)
    assert rec.terminal("bad")["error"]["type"] == P.PROTOCOL_MISMATCH


def test_malformed_and_unknown_requests_keep_the_server_alive(server: Server) -> None:
    rec = Recorder()
    server.handle_line(rec.conn, b"{oops\n")
    server.handle_line(rec.conn, b'{"v": 1, "id": "u", "op": "teleport"}\n')
    server.handle_line(rec.conn, b'{"v": 1, "id": "a", "op": "mesh", "args": {"seeed": 1}}\n')
    server.handle_line(rec.conn, b"x" * (P.MAX_REQUEST_BYTES + 10))
    send(server, rec, "p", "ping")
    kinds = [(e["id"], e.get("error", {}).get("type")) for e in rec.events]
    assert kinds[:4] == [(None, P.BAD_REQUEST), ("u", P.UNKNOWN_OP), ("a", P.BAD_REQUEST),
                         (None, P.MESSAGE_TOO_LARGE)]
    assert rec.terminal("p")["event"] == "result"
    for e in rec.events[:4]:
        assert e["error"]["message"] and isinstance(e["error"]["hint"], str)


def test_oversized_line_on_a_stream_keeps_it_in_step(tmp_path: Path) -> None:
    s = Server(tmp_path / "jobs", heartbeat_s=60)
    out = io.BytesIO()
    inp = io.BytesIO(b'{"v":1,"id":"big","op":"ping","args":{"x":"' + b"z" * (P.MAX_REQUEST_BYTES + 5) +
                     b'"}}\n' + P.encode(P.request("ping", {}, "after")))
    assert s.serve_stream(inp, out.write) == 0  # end of input: clean exit
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["error"]["type"] == P.MESSAGE_TOO_LARGE
    assert events[1]["id"] == "after" and events[1]["event"] == "result"


def test_jobs_are_queued_then_refused_when_the_queue_is_full(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "j1", "slow", steps=20)
    rec.wait(lambda e: e["id"] == "j1" and e["event"] == "progress")
    send(server, rec, "j2", "slow", steps=1)
    send(server, rec, "j3", "slow", steps=1)
    send(server, rec, "j4", "slow", steps=1)  # max_queued=2: refused
    assert rec.of("j2")[0] == {**rec.of("j2")[0], "event": "ack", "position": 1}
    assert rec.of("j3")[0]["position"] == 2
    err = rec.terminal("j4", 5)
    assert err["event"] == "error" and err["error"]["type"] == P.BUSY and err["error"]["hint"]
    send(server, rec, "st", "status")
    status = rec.terminal("st")["data"]
    assert status["running"]["id"] == "j1" and [q["id"] for q in status["queued"]] == ["j2", "j3"]
    order = [rec.terminal(j)["id"] for j in ("j1", "j2", "j3")]
    assert order == ["j1", "j2", "j3"]
    finished = [e["id"] for e in rec.events if e["event"] == "result" and e["id"] in ("j1", "j2", "j3")]
    assert finished == ["j1", "j2", "j3"]  # one job at a time, in order
    res = rec.terminal("j1")
    assert Path(res["files"]["out"]).read_text() == "done" and res["job_dir"]


def test_progress_has_eta_and_fraction(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "j", "slow", steps=10, dt=0.05)
    rec.terminal("j")
    prog = [e for e in rec.of("j") if e["event"] == "progress"]
    assert prog[0]["stage"] == "work" and prog[-1]["step"] == prog[-1]["total"] == 10
    assert any(e["eta_s"] is not None and e["eta_s"] > 0 for e in prog)
    assert rec.of("j")[0]["event"] == "ack"


def test_cancel_running_and_queued_jobs(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "run", "slow", steps=500, dt=0.02)
    send(server, rec, "wait", "slow", steps=1)
    rec.wait(lambda e: e["id"] == "run" and e["event"] == "progress")
    send(server, rec, "c1", "cancel", job="wait")
    assert rec.terminal("wait", 2)["event"] == "cancelled"
    steps_before = STEPS_RUN["run"]
    send(server, rec, "c2", "cancel", job="run")
    assert rec.terminal("run", 5)["event"] == "cancelled"
    # Within a step: the step in flight ends (one more may finish while the cancel is being sent), then the
    # job stops at its next progress check instead of running its 500 steps.
    assert STEPS_RUN["run"] - steps_before <= 2, (steps_before, STEPS_RUN["run"])
    assert rec.terminal("c2")["data"]["cancelled"] == ["run"]
    send(server, rec, "again", "slow", steps=1)  # the worker survived
    assert rec.terminal("again")["event"] == "result"


def test_errors_are_plain_strings(server: Server) -> None:
    from backend.errors import Aware3DError

    def fails(ctx: JobContext) -> JobResult:
        raise Aware3DError("bad thing", "do this")

    def crashes(ctx: JobContext) -> JobResult:
        raise ZeroDivisionError("boom")

    server.register_op("fails", P.OpSpec(True, {}, ""), fails)
    server.register_op("crashes", P.OpSpec(True, {}, ""), crashes)
    rec = Recorder()
    send(server, rec, "f", "fails")
    send(server, rec, "c", "crashes")
    assert rec.terminal("f")["error"] == {"type": "Aware3DError", "message": "bad thing", "hint": "do this"}
    err = rec.terminal("c")["error"]
    assert err["type"] == P.INTERNAL and "ZeroDivisionError: boom" in err["message"] and err["hint"]


def test_heartbeat(server: Server) -> None:
    rec = Recorder()
    server._add(rec.conn)
    server.start_heartbeat()
    ev = rec.wait(lambda e: e["event"] == "heartbeat", 3)
    assert ev["id"] is None and "busy" in ev and "queued" in ev


def test_sample_with_random_tiny_and_cancel_within_a_chunk(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "s", "sample", model="random:tiny", seeds=[1], resolution=32, device="cpu")
    res = rec.terminal("s", 120)
    assert res["event"] == "result", res
    assert Path(res["files"]["seed0001.png"]).is_file() and Path(res["files"]["seed0001_camera.json"]).is_file()
    prog = [e for e in rec.of("s") if e["event"] == "progress" and e["stage"] == "render"]
    assert len(prog) >= 2 and prog[-1]["preview"] and prog[-1]["step"] == prog[-1]["total"]
    send(server, rec, "s2", "sample", model="random:tiny", seeds="0-40", resolution=64, device="cpu")
    rec.wait(lambda e: e["id"] == "s2" and e["event"] == "progress" and e["stage"] == "render" and e["step"] > 2)

    def seeds_done() -> int:  # every finished seed sends one progress event with its preview
        return sum(1 for e in rec.of("s2") if e["event"] == "progress" and e["preview"])

    before = seeds_done()
    send(server, rec, "c", "cancel")
    assert rec.terminal("s2", 10)["event"] == "cancelled"
    assert seeds_done() - before <= 1 and seeds_done() < 41  # the chunk in flight may end a seed, no more


def test_mesh_of_the_head_model(server: Server, head_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWARE3D_MODELS", str(head_models_dir))
    rec = Recorder()
    send(server, rec, "m", "mesh", model=HEAD_NAME, seed=5, resolution=64, faces=3000, device="cpu",
         formats=["glb"], preview=True)
    res = rec.terminal("m", 120)
    assert res["event"] == "result", res
    with np.load(res["files"]["mesh"]) as npz:
        v, f, col = npz["vertices"], npz["faces"], npz["colours"]
    assert v.dtype == np.float32 and f.dtype == np.int32 and col.shape == v.shape
    size = v.max(0) - v.min(0)
    assert 0.1 < size.max() < 0.5 and size[2] > size[1]  # metres, Z up (taller than deep)
    assert 0 < len(f) <= 3300 and res["data"]["faces"] == len(f)
    cam = json.loads(Path(res["files"]["camera"]).read_text())
    m = np.array(cam["matrix_world"])
    assert m[1, 3] < -1.0  # the camera is in front of the face (towards -Y in Blender)
    assert Path(res["files"]["glb"]).stat().st_size > 1000 and Path(res["files"]["preview"]).is_file()
    stages = {e["stage"] for e in rec.of("m") if e["event"] == "progress"}
    assert {"load", "planes", "grid", "marching_cubes", "cleanup", "colours", "write"} <= stages
    fractions = [e["fraction"] for e in rec.of("m") if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] > 0.9


def test_mesh_errors_are_clear(server: Server) -> None:
    rec = Recorder()
    errors = []
    for rid, args in (("e1", {"model": "random:tiny", "resolution": 32, "device": "cpu"}),
                      ("e2", {"model": "no-such-model"}), ("e3", {"model": "random:tiny", "colour_mode": "paint"})):
        send(server, rec, rid, "mesh", **args)
        errors.append(rec.terminal(rid, 120)["error"])
    e1, e2, e3 = errors
    assert "no surface" in e1["message"] and e1["hint"]
    assert "no-such-model" in e2["message"] and "available" in e2["hint"]
    assert "colour mode" in e3["message"]


def test_models_load_free_and_doctor(server: Server, head_models_dir: Path, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    monkeypatch.setenv("AWARE3D_MODELS", str(head_models_dir))
    rec = Recorder()
    send(server, rec, "l", "list_models")
    models = rec.terminal("l")["data"]["models"]
    assert [m["name"] for m in models if m["source"] == "user"] == [HEAD_NAME]
    send(server, rec, "a", "load_model", model=HEAD_NAME, device="cpu")
    send(server, rec, "b", "load_model", model=HEAD_NAME, device="cpu")
    assert rec.terminal("a")["data"]["cached"] is False
    assert rec.terminal("b")["data"]["cached"] is True  # models stay cached
    send(server, rec, "f", "free")
    assert rec.terminal("f")["data"]["freed_models"] == 1
    send(server, rec, "d", "doctor", device="cpu")
    d = rec.terminal("d", 120)["data"]
    assert d["device"] == "cpu" and d["torch"] and d["tiny_inference_ok"] and d["tiny_inference_s"] > 0
    assert d["memory"]["total_bytes"] > 0


def test_add_model_file(server: Server, head_models_dir: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user_models"
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    rec = Recorder()
    send(server, rec, "a", "add_model", path=str(head_models_dir / f"{HEAD_NAME}.safetensors"), name="mine")
    assert rec.terminal("a")["data"]["name"] == "mine" and (user / "mine.safetensors").is_file()
    send(server, rec, "b", "add_model", path=str(head_models_dir / f"{HEAD_NAME}.safetensors"), name="mine")
    assert "already exists" in rec.terminal("b")["error"]["message"]
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_convert import write_official  # an official-layout snapshot, written without EG3D's code
    finally:
        sys.path.pop(0)
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator

    # Official snapshots have no learned backdrop (an Aware3D addition).
    pkl = write_official(tmp_path / "network-snapshot-000100.pkl", TriPlaneGenerator(TINY.replace(background="none")))
    send(server, rec, "p", "add_model", path=str(pkl), name="official")
    res = rec.terminal("p", 120)
    assert res["event"] == "result", res
    assert res["data"]["name"] == "official" and res["data"]["kind"] == "gan"
    assert (user / "official.safetensors").is_file() and not list(user.glob("*.pkl"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    send(server, rec, "c", "add_model", path=str(junk))
    assert rec.terminal("c")["event"] == "error" and not (user / "junk.safetensors").exists()


# ----------------------------------------------------------------------------------------------------------
# Downloads against a local HTTP server
# ----------------------------------------------------------------------------------------------------------


class _Files(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_first = 0  # close the connection after this many bytes on the first N requests
    cuts_left = 0
    ranges: list[str | None] = []  # noqa: RUF012 - replaced per test (a subclass per server)

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        rng = self.headers.get("Range")
        cls.ranges.append(rng)
        data, start = cls.payload, 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cuts_left > 0:
            cls.cuts_left -= 1
            self.wfile.write(body[: cls.cut_first])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def http_files(head_models_dir: Path) -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Files", (_Files,), {"payload": (head_models_dir / f"{HEAD_NAME}.safetensors").read_bytes(),
                                        "ranges": [], "cuts_left": 0, "cut_first": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_download_resumes_after_an_interruption(server: Server, http_files: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    base, files = http_files
    user = tmp_path / "dl"
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    files.cuts_left, files.cut_first = 1, 100_000
    digest = hashlib.sha256(files.payload).hexdigest()
    rec = Recorder()
    send(server, rec, "d", "download_model", url=f"{base}/models/heads.safetensors", sha256=digest,
         online_access=True)
    res = rec.terminal("d", 60)
    assert res["event"] == "result", res
    assert files.ranges[0] is None and len(files.ranges) == 2
    offset = int(files.ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 100_000  # the second request resumed from what the first had written
    assert res["data"]["resumed"] and res["data"]["sha256"] == digest
    assert (user / "heads.safetensors").read_bytes() == files.payload
    assert not list(user.glob(".*.part"))
    prog = [e for e in rec.of("d") if e["event"] == "progress" and e["stage"] == "download"]
    assert prog and prog[-1]["step"] == prog[-1]["total"] == len(files.payload)


def test_download_resumes_in_a_later_request(server: Server, http_files: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    base, files = http_files
    user = tmp_path / "dl"
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    files.cuts_left, files.cut_first = 1, 131_072  # two whole 64 KiB chunks arrive
    rec = Recorder()
    url = f"{base}/m.safetensors"
    send(server, rec, "a", "download_model", url=url, online_access=True, retries=0)
    err = rec.terminal("a", 60)["error"]
    assert err["type"] == "NetworkError" and "resume" in err["hint"]
    assert (user / ".m.safetensors.part").stat().st_size == 131_072
    send(server, rec, "b", "download_model", url=url, online_access=True)
    res = rec.terminal("b", 60)
    assert res["data"]["resumed"] and files.ranges[-1] == "bytes=131072-"
    assert (user / "m.safetensors").read_bytes() == files.payload


def test_download_refuses_bad_hash_and_offline(server: Server, http_files: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    base, files = http_files
    user = tmp_path / "dl"
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    rec = Recorder()
    send(server, rec, "h", "download_model", url=f"{base}/x.safetensors", sha256="0" * 64, online_access=True)
    err = rec.terminal("h", 60)["error"]
    assert err["type"] == "HashMismatch"
    assert not (user / "x.safetensors").exists() and not list(user.glob(".*"))
    n = len(files.ranges)
    send(server, rec, "o", "download_model", url=f"{base}/x.safetensors")
    assert rec.terminal("o")["error"]["type"] == "OnlineAccessDisabled" and len(files.ranges) == n
    send(server, rec, "u", "download_model", url="file:///etc/passwd", online_access=True)
    assert rec.terminal("u")["event"] == "error"
    send(server, rec, "n", "download_model", url=f"{base}/notes.txt", online_access=True)
    assert "not a model file" in rec.terminal("n")["error"]["message"]


# ----------------------------------------------------------------------------------------------------------
# The real process: stdio and TCP
# ----------------------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_stdio_process_exits_cleanly_when_stdin_closes(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "backend.server", "--work-dir", str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env=_env())
    assert proc.stdin and proc.stdout
    proc.stdin.write(P.encode(P.request("hello", {}, "h")))
    proc.stdin.write(P.encode(P.request("sample", {"model": "random:tiny", "seeds": "0-50"}, "s")))
    proc.stdin.flush()
    seen = []
    while True:  # wait until the job runs, then close stdin mid-job
        msg = json.loads(proc.stdout.readline())
        seen.append(msg)
        if msg.get("id") == "s" and msg["event"] == "progress":
            break
    proc.stdin.close()
    assert proc.wait(30) == 0  # 30 s only bounds a hang: the job is cancelled, not run to its end
    rest = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert all(isinstance(m, dict) and m["v"] == 1 for m in rest)  # stdout holds protocol lines only
    assert not any(m.get("id") == "s" and m["event"] == "result" for m in rest)  # 51 seeds were not rendered
    assert seen[0]["id"] == "h" and seen[0]["event"] == "result"
    assert b"end of input" in proc.stderr.read()


def test_python_m_backend_server_and_shutdown(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "backend.server", "--work-dir", str(tmp_path)],
                          input=P.encode(P.request("version", {}, "v")) + P.encode(P.request("shutdown", {}, "q"))
                          + P.encode(P.request("ping", {}, "late")), capture_output=True, cwd=ROOT, env=_env(),
                          timeout=60)
    assert proc.returncode == 0
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["id"] for e in events if e["event"] == "result"] == ["v", "q"]  # nothing after shutdown


def test_serve_threads_sets_the_backends_torch_threads(tmp_path: Path) -> None:
    """``serve --threads N`` (what the add-on's Backend threads preference passes): every job runs on N CPU
    threads, and ``status`` says how many; 0 is refused with one line."""
    proc = subprocess.Popen([sys.executable, "-m", "backend.server", "--work-dir", str(tmp_path), "--threads", "2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=_env(OMP_NUM_THREADS="1"))
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write(P.encode(P.request("status", {}, "st")) +
                         P.encode(P.request("doctor", {"device": "cpu"}, "doc")))  # doctor: a job, on its thread
        proc.stdin.flush()
        done: dict[str, dict[str, Any]] = {}
        while len(done) < 2:
            msg = json.loads(proc.stdout.readline())
            if P.is_terminal(msg):
                done[msg["id"]] = msg
        proc.stdin.write(P.encode(P.request("shutdown", {}, "q")))
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done["st"]["event"] == "result" and done["st"]["data"]["cpu_threads"] == 2
    assert done["doc"]["event"] == "result" and done["doc"]["data"]["cpu_threads"] == 2, done["doc"]
    bad = subprocess.run([sys.executable, "-m", "backend.server", "--threads", "0"], capture_output=True, cwd=ROOT,
                         env=_env(), timeout=60, input=b"")
    lines = bad.stderr.decode().strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "--threads must be between 1 and 1024" in lines[0], lines


def test_tcp_needs_a_token_off_loopback() -> None:
    from backend.errors import Aware3DError

    with pytest.raises(Aware3DError):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "secret")
    check_bind("127.0.0.1", None)
    proc = subprocess.run([sys.executable, "-m", "backend.server", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, cwd=ROOT, env=_env(), timeout=60)
    assert proc.returncode == 2 and b"token" in proc.stderr


def test_serve_command_parses() -> None:
    import argparse

    from backend.cli import serve_cmd

    parser = argparse.ArgumentParser()
    serve_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "0", "--token", "t", "--threads", "3"])
    assert (args.host, args.port, args.token, args.threads, args.func) == ("0.0.0.0", 0, "t", 3, serve_cmd.run)


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[tuple[int, Server]]:
    s = Server(tmp_path / "jobs", heartbeat_s=0.2, token="s3cret")
    s.register_op("slow", SLOW, slow_job)
    ports: list[int] = []
    ready = threading.Event()
    t = threading.Thread(target=s.serve_tcp, args=("127.0.0.1", 0, lambda p: (ports.append(p), ready.set())),
                         daemon=True)
    t.start()
    assert ready.wait(10)
    yield ports[0], s
    s.stop()
    t.join(10)


def _tcp_lines(port: int, *msgs: dict[str, Any], until: str, timeout: float = 30) -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for m in msgs:
            sock.sendall(P.encode(m))
        f = sock.makefile("rb")
        out = []
        while True:
            line = f.readline()
            if not line:
                return out
            out.append(json.loads(line))
            if out[-1].get("id") == until and P.is_terminal(out[-1]):
                return out


def test_tcp_token_and_inline_results(tcp_server: tuple[int, Server]) -> None:
    port, _ = tcp_server
    ev = _tcp_lines(port, P.request("ping", {}, "p"), until="p")
    assert ev[0]["error"]["type"] == P.UNAUTHORIZED  # and the connection is closed
    ev = _tcp_lines(port, P.request("hello", {"token": "wrong"}, "h"), until="h")
    assert ev[0]["error"]["type"] == P.UNAUTHORIZED
    ev = _tcp_lines(port, P.request("hello", {"token": "s3cret"}, "h"), P.request("slow", {"steps": 2}, "j"),
                    until="j")
    res = ev[-1]
    assert ev[0]["data"]["protocol"] == P.PROTOCOL_VERSION and res["event"] == "result"
    import base64

    assert base64.b64decode(res["inline"]["out"]) == b"done"


# ----------------------------------------------------------------------------------------------------------
# The add-on's client (pure Python) against the real server
# ----------------------------------------------------------------------------------------------------------


def _client_module() -> Any:
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module("addon.client")  # addon/__init__ imports no bpy at import time
    finally:
        sys.path.remove(str(ROOT))


def test_addon_client_survives_a_killed_backend(tmp_path: Path) -> None:
    C = _client_module()
    cmd = C.backend_command(sys.executable, ["--work-dir", str(tmp_path / "jobs"), "--heartbeat", "0.2"])
    env = C.backend_env(ROOT, None, base=_env())
    transports = []

    def factory() -> Any:
        t = C.PipeTransport(cmd, env=env, cwd=str(ROOT), log_path=tmp_path / "backend.log")
        transports.append(t)
        return t

    client = C.BackendClient(factory, heartbeat_timeout=20)
    info = client.request("version", timeout=60)
    assert info["protocol"] == P.PROTOCOL_VERSION and client.server_info["pid"] == transports[0].pid
    h = client.submit("sample", {"model": "random:tiny", "seeds": "0-100", "resolution": 32})
    killed: list[int] = []

    def pump() -> None:
        client.poll()
        if h.stage and not killed:  # the job is running: kill the backend mid-job
            os.kill(transports[0].pid, signal.SIGKILL)
            killed.append(1)

    client.wait(h, 60, pump=pump)
    assert h.state == "error" and h.error.type == P.BACKEND_DIED and "backend.log" in h.error.hint
    assert client.transport is None and client.deaths == 1
    assert client.request("ping", timeout=60) == {}  # the next request starts a new backend
    assert client.starts == 2 and transports[1].pid != transports[0].pid
    h2 = client.submit("sample", {"model": "random:tiny", "seeds": "0-100", "resolution": 32})
    client.wait(h2, 60, pump=lambda: (client.poll(), h2.stage and h2.state != "cancelled" and client.cancel(h2)))
    assert h2.state == "cancelled"
    client.stop()
    assert transports[1].proc.wait(10) is not None


def test_addon_client_over_tcp_writes_inline_results_locally(tcp_server: tuple[int, Server], tmp_path: Path
                                                             ) -> None:
    C = _client_module()
    port, _ = tcp_server
    client = C.BackendClient(lambda: C.TcpTransport("127.0.0.1", port, tmp_path / "local"), token="s3cret")
    h = client.wait(client.submit("slow", {"steps": 3}), 30)
    assert h.state == "done", h.error
    local = Path(h.files["out"])
    assert local.read_text() == "done" and local.is_relative_to(tmp_path / "local")
    bad = C.BackendClient(lambda: C.TcpTransport("127.0.0.1", port, tmp_path / "x"), token="nope")
    with pytest.raises(C.BackendError) as e:
        bad.request("ping", timeout=30)
    assert e.value.type == P.UNAUTHORIZED
    client.stop()
