# SPDX-License-Identifier: GPL-3.0-or-later
"""Cancellation inside the long library loops: a cancel raised from the progress callback stops the loop
after at most one more step (behaviour, not wall-clock speed; benchmarks/cancel.py measures the seconds).

Why these loops: a traced server run (benchmarks/cancel.py) showed them as the long gaps between cancel
checks: xatlas (one C call of up to tens of seconds), colour queries per chunk, and the diffusion steps of
a texture view.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_server import Recorder, send

from backend.mesh.colour import query_colours
from backend.mesh.field import sphere_field
from backend.mesh.pipeline import MeshSettings, extract_mesh
from backend.mesh.texture import unwrap


class Stop(Exception):
    """What a job's cancel check raises (``Cancelled`` in the server); the libraries must let it through."""


class Canceller:
    """A progress callback that raises once ``cancel_after`` calls happened; counts the calls after that."""

    def __init__(self, cancel_after: int) -> None:
        self.cancel_after = cancel_after
        self.calls = 0
        self.after_cancel = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1
        if self.calls > self.cancel_after:
            self.after_cancel += 1
            raise Stop()


def _sphere_mesh() -> tuple[np.ndarray, np.ndarray]:
    mesh = extract_mesh(sphere_field(), MeshSettings(resolution=48, colours=False, target_faces=None))
    return mesh.vertices, mesh.faces


def test_unwrap_in_a_child_process_matches_and_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    verts, faces = _sphere_mesh()
    calls: list[tuple[int, int]] = []
    same = unwrap(verts, faces, lambda i, n: calls.append((i, n)))
    ref = unwrap(verts, faces)
    for a, b in zip(same, ref, strict=True):
        assert np.array_equal(a, b)  # the child process runs the same call on the same arrays
    assert calls[-1] == (1, 1)
    children: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        children.append(popen(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    stop = Canceller(0)
    with pytest.raises(Stop):
        unwrap(verts, faces, stop)
    assert stop.after_cancel == 1  # raised at the first poll
    assert len(children) == 1 and children[0].returncode == -signal.SIGKILL  # the xatlas child was killed


def test_colour_queries_stop_after_the_chunk_that_saw_the_cancel() -> None:
    field = sphere_field()
    pts = np.random.default_rng(0).uniform(-0.4, 0.4, (20_000, 3)).astype(np.float32)
    done: list[int] = []
    out = query_colours(field, pts, budget_bytes=1, on_progress=lambda i, n: done.append(i))
    assert done[-1] == len(pts) and len(done) == -(-len(pts) // 4096)
    assert np.array_equal(out, query_colours(field, pts, budget_bytes=1))  # reporting changes nothing
    stop = Canceller(2)
    with pytest.raises(Stop):
        query_colours(field, pts, budget_bytes=1, on_progress=stop)
    assert stop.calls == 3 and stop.after_cancel == 1


@pytest.mark.parametrize("stage", ["colours", "texture"])
def test_mesh_pipeline_reports_inside_colours_and_texture(stage: str) -> None:
    seen: list[tuple[str, float]] = []
    calls_after = [0]

    def progress(st: str, frac: float) -> None:
        seen.append((st, frac))
        if st == stage and frac > 0.0:  # the first report from inside the stage's loop
            calls_after[0] += 1
            raise Stop()

    settings = MeshSettings(resolution=48, target_faces=None, texture=True, texture_size=64,
                            memory_budget=1)
    with pytest.raises(Stop):
        extract_mesh(sphere_field(), settings, progress=progress)
    assert calls_after[0] == 1 and seen[-1][0] == stage


def test_diffusion_view_stops_within_one_step() -> None:
    from backend.diffusion.config import PRESETS
    from backend.diffusion.unet import UNet
    from backend.views import rgbd
    from backend.views.generate import ViewModels

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = UNet(PRESETS["tiny"].replace(kind="cond")).eval()
    gen = ViewModels(net, None, steps=6).as_generator(0)
    size = net.cfg.resolution
    cam = rgbd.orbit(0, 0, size)
    z = np.full((size, size), 2.7, np.float32)
    known = np.zeros((size, size), bool)
    cond = rgbd.Condition(np.zeros((size, size, 3), np.float32), z, known, known.copy(), z.copy(), cam)
    steps: list[int] = []
    gen(cond, progress=lambda i, n: steps.append(i))
    assert steps == [1, 2, 3, 4, 5, 6]
    stop = Canceller(2)
    with pytest.raises(Stop):
        gen(cond, progress=stop)
    assert stop.calls == 3 and stop.after_cancel == 1


def test_texture_mesh_checks_per_generator_step() -> None:
    from support.spheres import sphere_mesh

    from backend.texture.pipeline import texture_mesh
    from backend.views.rgbd import RGBDView, orbit

    steps_run = [0]

    def generate(c, progress=None):  # type: ignore[no-untyped-def]
        for i in range(10):
            steps_run[0] += 1
            if progress is not None:
                progress(i + 1, 10)
        return RGBDView(np.full(c.rgb.shape, 0.5, np.float32), c.z.copy(), c.camera)

    cams = [orbit(y, 0, 32) for y in (0, 40, -40)]
    calls: list[tuple[int, str]] = []

    def progress(done: int, total: int, message: str, preview: object) -> None:
        calls.append((done, message))
        if "step 4/10" in message and done == 1:  # the second view, at its fourth step
            raise Stop()

    with pytest.raises(Stop):
        texture_mesh(sphere_mesh(2), cams, generate, size=32, texture_size=64, progress=progress)
    assert steps_run[0] == 10 + 4  # the first view whole, the second stopped at the step that saw the cancel


def test_cancel_during_model_load_returns_before_the_load_and_the_load_still_fills_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job cancelled while weights load ends at once; the load goes on in the background, fills the cache
    once (a second request waits on the same in-flight load), and the next request is warm."""
    import backend.registry as registry
    from backend.server.server import Server

    real = registry.load_generator
    started, release = threading.Event(), threading.Event()
    loads = [0]

    def slow_loader(spec: str | None, device: object = None) -> object:
        loads[0] += 1
        started.set()
        assert release.wait(60), "the test never released the loader"
        return real(spec, device)

    monkeypatch.setattr(registry, "load_generator", slow_loader)
    server = Server(tmp_path / "jobs", heartbeat_s=60)
    rec = Recorder()
    try:
        send(server, rec, "a", "load_model", model="random:tiny", device="cpu")
        assert started.wait(60)
        send(server, rec, "a-c", "cancel", job="a")
        assert rec.terminal("a", 30)["event"] == "cancelled"
        assert not release.is_set() and server.models.loading() == 1  # cancelled while the loader still ran
        send(server, rec, "b", "load_model", model="random:tiny", device="cpu")  # joins the in-flight load
        rec.wait(lambda e: e.get("id") == "b" and e.get("event") == "progress", 30)
        release.set()
        res_b = rec.terminal("b", 60)
        assert res_b["event"] == "result" and res_b["data"]["cached"] is False
        send(server, rec, "c", "load_model", model="random:tiny", device="cpu")
        res_c = rec.terminal("c", 60)
        assert res_c["event"] == "result" and res_c["data"]["cached"] is True
        assert loads[0] == 1 and server.models.loading() == 0
    finally:
        release.set()
        server.finish(10)


def test_atlas_rasterisation_reports_per_chunk_and_chunking_changes_nothing() -> None:
    """The UV atlas (seconds at 2048²) reports per rasteriser chunk; any fragment budget gives the same
    fragments (ties go to the larger face in every chunk), and texel geometry is the same with a callback."""
    from backend.mesh.raster import rasterize
    from backend.mesh.texture import texel_geometry

    verts, faces = _sphere_mesh()
    vmap, tfaces, uvs = unwrap(verts, faces)
    xy = torch.from_numpy(uvs.astype(np.float64) * 128)
    ones = torch.ones(len(uvs), dtype=torch.float64)
    ref = rasterize(xy, ones, torch.from_numpy(tfaces), 128, 128)
    done: list[tuple[int, int]] = []
    small = rasterize(xy, ones, torch.from_numpy(tfaces), 128, 128, fragment_budget=500,
                      on_progress=lambda i, n: done.append((i, n)))
    assert len(done) > 10 and done[-1][0] == done[-1][1]
    for a, b in ((ref.face, small.face), (ref.bary, small.bary), (ref.depth, small.depth)):
        assert torch.equal(a, b)
    normals = np.tile(np.array([[0.0, 0.0, 1.0]]), (len(uvs), 1))
    plain = texel_geometry(verts[vmap], tfaces, normals, uvs, 128)
    fracs: list[int] = []
    reported = texel_geometry(verts[vmap], tfaces, normals, uvs, 128, lambda i, n: fracs.append(i))
    assert fracs[-1] == 1000 and fracs == sorted(fracs)
    for k in ("covered", "face", "bary", "position", "normal", "fill_rows", "fill_cols"):
        assert np.array_equal(getattr(plain, k), getattr(reported, k)), k
    stop = Canceller(1)
    with pytest.raises(Stop):
        rasterize(xy, ones, torch.from_numpy(tfaces), 128, 128, fragment_budget=500, on_progress=stop)
    assert stop.calls == 2 and stop.after_cancel == 1


def test_face_search_checks_between_its_sub_steps() -> None:
    """The face crop (seconds on a loaded CPU: detector passes, verifications, landmark fits) calls its
    ``check`` between sub-steps; raising from it stops the search, and checking changes nothing."""
    from backend.invert.demo_photo import write_photo
    from backend.invert.face import detect_faces, face_extra_missing
    from backend.invert.image import load_photo

    if face_extra_missing():
        pytest.skip("the face extra is not installed")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        photo = load_photo(write_photo(Path(tmp) / "photo.jpg"))
    calls = [0]

    def count() -> None:
        calls[0] += 1

    plain, checked = detect_faces(photo), detect_faces(photo, check=count)
    assert calls[0] >= 3 and [f.box for f in plain.faces] == [f.box for f in checked.faces]
    for a, b in zip(plain.faces, checked.faces, strict=True):
        assert np.array_equal(a.landmarks, b.landmarks)
    stop = Canceller(1)
    with pytest.raises(Stop):
        detect_faces(photo, check=stop)
    assert stop.calls == 2 and stop.after_cancel == 1


def test_coarse_to_fine_grid_checks_before_its_band_loop() -> None:
    """At 512³ the coarse grid and the nearest-node fill were seconds without a check: a cancel raised from
    the grid's progress there stops the grid before any fine band chunk, and checking changes nothing."""
    from backend.mesh.coarse_to_fine import sample_grid_coarse_to_fine
    from backend.mesh.grid import GridSpec

    field = sphere_field()
    spec = GridSpec(64, float(field.box_size))
    ref, _ = sample_grid_coarse_to_fine(field, spec, 0.0, 1, budget_bytes=1 << 16)
    calls: list[tuple[int, int]] = []
    same, _ = sample_grid_coarse_to_fine(field, spec, 0.0, 1, budget_bytes=1 << 16,
                                         progress=lambda i, n: calls.append((i, n)))
    assert torch.equal(ref, same)
    before_band = [c for c in calls if c == (0, 1)]
    assert len(before_band) >= 4  # coarse chunks, the fill's passes and slabs
    stop = Canceller(1)
    with pytest.raises(Stop):
        sample_grid_coarse_to_fine(field, spec, 0.0, 1, budget_bytes=1 << 16, progress=stop)
    assert stop.calls == 2 and stop.after_cancel == 1


def test_uninterruptible_mesh_calls_return_at_the_first_check_after_a_cancel() -> None:
    """Marching cubes and decimation run beside their checks: a cancel returns without waiting for the call,
    which finishes in the background; without a cancel the result and the call's own errors come through."""
    from backend.mesh.pipeline import interruptible

    release, finished = threading.Event(), threading.Event()

    def long_call() -> str:
        release.wait(30)  # a library call that has not finished when the cancel comes
        finished.set()
        return "mesh"

    stop = Canceller(2)
    with pytest.raises(Stop):
        interruptible(long_call, stop, poll_s=0.01)
    assert stop.calls == 3 and stop.after_cancel == 1 and not finished.is_set()  # returned before the call
    release.set()
    assert finished.wait(30)  # which then ends on its own
    assert interruptible(lambda: "mesh", Canceller(100), poll_s=0.01) == "mesh"
    with pytest.raises(ZeroDivisionError):
        interruptible(lambda: 1 / 0, Canceller(100), poll_s=0.01)


@pytest.mark.parametrize("stage", ["marching_cubes", "cleanup"])
def test_mesh_pipeline_checks_during_marching_cubes_and_decimation(stage: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's own calls: made slow here, the cancel lands while they run (before the stage ends)."""
    import backend.mesh.pipeline as pipeline

    gates = {"marching_cubes": threading.Event(), "decimate": threading.Event()}
    ended: list[str] = []

    def slow(fn: Any) -> Any:
        def call(*args: Any) -> Any:
            gates[fn.__name__].wait(30)
            ended.append(fn.__name__)
            return fn(*args)
        return call

    monkeypatch.setattr(pipeline, "marching_cubes", slow(pipeline.marching_cubes))
    monkeypatch.setattr(pipeline.cleanup, "decimate", slow(pipeline.cleanup.decimate))
    if stage == "cleanup":
        gates["marching_cubes"].set()  # marching cubes runs through; decimation waits
    calls: list[tuple[str, float]] = []

    def progress(s: str, frac: float) -> None:
        calls.append((s, frac))
        if s == stage and len([c for c in calls if c[0] == s]) >= (2 if s == "marching_cubes" else 4):
            raise Stop()  # marching cubes: its start, then a check while it runs; cleanup: 0, 0.25, 0.5, check

    with pytest.raises(Stop):
        extract_mesh(sphere_field(), MeshSettings(resolution=64, colours=False, target_faces=2000), progress)
    for gate in gates.values():
        gate.set()
    assert calls[-1] == (stage, 0.0 if stage == "marching_cubes" else 0.5)  # raised during the call
    assert (stage != "cleanup" or ended == ["marching_cubes"])  # decimation had not returned
