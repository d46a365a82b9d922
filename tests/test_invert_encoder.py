# SPDX-License-Identifier: GPL-3.0-or-later
"""Inversion from a photo encoder's start (backend/invert/start.py, ``--encoder``/``--refine``): the encoder's
answer is the first avatar, the refinement starts from its latent and camera, ``auto`` picks an encoder that
fits the model or says in one line why none does, and a missing, unreadable or foreign encoder is one clear
error — in the library, the CLI and the server. The encoders are tiny ones made here (tests/support)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.errors import Aware3DError
from backend.invert.geometry import orbit_labels
from backend.invert.losses import psnr
from backend.invert.pipeline import invert, preset, refine_budget
from backend.invert.render import render_views
from backend.invert.start import choose_encoder, encoder_start
from backend.registry import load_generator
from tests.support.encoder_models import DISTILLED_HEAD, distilled_head_model, identity, tiny_encoder

torch.set_num_threads(1)
FAST_CLI = ["--preset", "fast", "--steps-project", "4", "--steps-stage2", "3", "--views", "2", "--orbit", "0",
            "--mesh-res", "64", "--faces", "2000", "--threads", "1"]


@pytest.fixture(autouse=True)
def own_model_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty user and bundled model folders: ``auto`` sees only the encoders a test puts there."""
    user = tmp_path / "user_models"
    user.mkdir()
    (tmp_path / "assets" / "models").mkdir(parents=True)
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    monkeypatch.setenv("AWARE3D_ASSETS", str(tmp_path / "assets"))
    return user


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with head-tiny (a GAN) and head-tiny-distilled (a distilled model drawing the same head)."""
    from tests.test_server import head_model

    folder = tmp_path_factory.mktemp("models")
    head_model(folder)
    distilled_head_model(folder)
    return folder


def _base(loaded: Any) -> dict[str, Any]:
    from backend.invert.avatar import base_identity

    return base_identity(loaded)


def _scene() -> tuple[Any, torch.Tensor, torch.Tensor, float, float]:
    """A distilled model whose heads differ by z, one head's latent and its render at a known camera."""
    G = load_generator("random:tiny-distilled:2").generator
    z = torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(5))
    yaw, pitch = 20.0, -5.0
    ws = G.mapping(z, torch.zeros(1, G.cfg.c_dim))
    target = render_views(G, ws, orbit_labels(G.cfg, yaw, pitch), grad=False, exact=True)["image"]
    return G, z, target, yaw, pitch


def _novel_psnr(G: Any, ws: torch.Tensor, yaw: float, pitch: float, truth: Any) -> float:
    img = render_views(G, ws, orbit_labels(G.cfg, yaw, pitch), grad=False, exact=True)["image"]
    return psnr(img, truth)


# ----------------------------------------------------------------------------------------------------------
# Library
# ----------------------------------------------------------------------------------------------------------


def test_the_encoders_answer_is_the_first_avatar(tmp_path: Path) -> None:
    G, z, target, yaw, pitch = _scene()
    path = tiny_encoder(tmp_path / "oracle.safetensors", G, "random:tiny-distilled:2", latent=z, pose=(yaw, pitch))
    choice = choose_encoder(str(path), G, identity(G, "random:tiny-distilled:2"))
    start = encoder_start(choice.encoder, G, target, choice.info)
    assert abs(start.yaw - yaw) < 1e-3 and abs(start.pitch - pitch) < 1e-3
    inv = invert(G, target, refine_budget(preset("fast"), "none"), start=start)
    # No refinement: the base generator at the encoder's latent and camera, which here is the head itself.
    assert inv.G is G and torch.allclose(inv.ws, G.mapping(z, torch.zeros(1, G.cfg.c_dim)))
    assert inv.pose.source == "encoder" and inv.metrics["final"]["psnr"] > 40
    summary = inv.summary()
    assert summary["stages"] == ["encoder"] and summary["refine"] == "none"
    assert summary["start"]["encoder"]["name"] == "oracle" and summary["start"]["yaw_deg"] == pytest.approx(yaw)


def test_refinement_starts_from_the_encoders_latent_and_camera(tmp_path: Path) -> None:
    G, _, target, _, _ = _scene()
    path = tiny_encoder(tmp_path / "random.safetensors", G, "m", seed=3)  # random weights: some answer
    start = encoder_start(choose_encoder(str(path), G, identity(G, "m")).encoder, G, target)
    s = refine_budget(preset("fast"), "fast")
    inv = invert(G, target, replace(s, project=replace(s.project, steps=0, w_avg_samples=32)), start=start)
    assert torch.equal(inv.ws, start.ws) and (inv.yaw, inv.pitch) == (start.yaw, start.pitch)
    # fast: no pose search (the encoder's camera), no stage 1 (the untuned generator gives the pseudo views).
    assert list(inv.timings) == ["encoder", "project", "pseudo", "stage2"] and len(inv.pseudo) == 4
    assert inv.reports["stage2"].steps == 10 and "stage1" not in inv.reports
    full = refine_budget(preset("fast"), "full")
    assert full.stage1.steps == preset("fast").stage1.steps and full.refine == "full"
    with pytest.raises(ValueError, match="needs an encoder start"):
        invert(G, target, s)


def test_the_encoders_camera_is_kept_unless_its_refinement_is_asked_for(tmp_path: Path) -> None:
    # The photometric camera fit moved the encoder's pitch away from the truth on held-out heads
    # (docs/invert.md), so the pivot keeps the encoder's camera; --refine-pose still refines it.
    G, _, target, _, _ = _scene()
    path = tiny_encoder(tmp_path / "random.safetensors", G, "m", seed=3)
    start = encoder_start(choose_encoder(str(path), G, identity(G, "m")).encoder, G, target)
    s = refine_budget(preset("fast"), "fast")
    s = replace(s, project=replace(s.project, steps=3, w_avg_samples=32, rampup=0.0),
                stage2=replace(s.stage2, steps=1), pseudo=replace(s.pseudo, views=1))
    kept = invert(G, target, s, start=start)
    assert (kept.yaw, kept.pitch) == (start.yaw, start.pitch) and kept.pose.source == "encoder"
    assert not torch.equal(kept.ws, start.ws)  # the latent is still refined
    moved = invert(G, target, replace(s, refine_given_pose=True), start=start)
    assert (moved.yaw, moved.pitch) != (start.yaw, start.pitch)


def test_a_good_encoder_start_beats_the_average_head_at_the_same_budget(tmp_path: Path) -> None:
    G, z, target, yaw, pitch = _scene()
    path = tiny_encoder(tmp_path / "oracle.safetensors", G, "m", latent=z, pose=(yaw, pitch))
    start = encoder_start(choose_encoder(str(path), G, identity(G, "m")).encoder, G, target)
    s = refine_budget(preset("fast"), "fast")
    s = replace(s, project=replace(s.project, steps=10, w_avg_samples=64), stage2=replace(s.stage2, steps=4))
    truth = render_views(G, G.mapping(z, torch.zeros(1, G.cfg.c_dim)), orbit_labels(G.cfg, yaw + 30, pitch),
                         grad=False, exact=True)["image"]
    from_encoder = invert(G, target, s, start=start)
    from_average = invert(G, target, replace(s, refine="full", pose=(yaw, pitch)))
    a = _novel_psnr(from_encoder.G, from_encoder.ws, from_encoder.yaw + 30, from_encoder.pitch, truth)
    b = _novel_psnr(from_average.G, from_average.ws, yaw + 30, pitch, truth)
    assert a > b + 3, (a, b)


def test_auto_takes_an_encoder_that_fits_and_says_why_when_none_does(models: Path, own_model_folders: Path
                                                                     ) -> None:
    gan = load_generator(str(models / "head-tiny.safetensors"))
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    choice = choose_encoder("auto", gan.generator, _base(gan))
    assert choice.encoder is None and choice.notice.startswith("no photo encoder for head-tiny: none is installed")
    tiny_encoder(own_model_folders / "enc-distilled.safetensors", dist.generator, dist.name)
    choice = choose_encoder("auto", gan.generator, _base(gan))  # made for the distilled model: not this one
    assert choice.encoder is None and "none of 1 fits it (enc-distilled.safetensors:" in choice.notice
    choice = choose_encoder("auto", dist.generator, _base(dist))
    assert choice.encoder is not None and choice.info["name"] == "enc-distilled" and not choice.notice
    assert choose_encoder("none", dist.generator, _base(dist)).encoder is None
    assert choose_encoder("enc-distilled", dist.generator, _base(dist)).info["name"] == "enc-distilled"
    # An encoder of the synthetic heads' latent, made with another distilled snapshot, fits this one too (the
    # shipped encoder and every distilled model), and still no GAN.
    other = load_generator("random:tiny-distilled:7")
    (own_model_folders / "enc-distilled.safetensors").unlink()
    tiny_encoder(own_model_folders / "enc-heads.safetensors", other.generator, other.name, trained_on="heads")
    assert choose_encoder("auto", dist.generator, _base(dist)).info["name"] == "enc-heads"
    assert choose_encoder("auto", gan.generator, _base(gan)).encoder is None


def test_a_missing_unreadable_or_foreign_encoder_is_one_clear_error(models: Path, own_model_folders: Path,
                                                                   tmp_path: Path) -> None:
    gan = load_generator(str(models / "head-tiny.safetensors"))
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    foreign = tiny_encoder(tmp_path / "foreign.safetensors", dist.generator, dist.name)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    cases = [(tmp_path / "missing.safetensors", "encoder file not found"),
             ("no-such-encoder", "no encoder named 'no-such-encoder'"),
             (junk, "junk.safetensors is not a readable .safetensors file"),
             (models / "head-tiny.safetensors", "head-tiny.safetensors is a gan model, not a photo encoder"),
             (foreign, "")]  # the encoder's own check names the model it was made for
    for spec, message in cases:
        with pytest.raises(Aware3DError) as err:
            choose_encoder(str(spec), gan.generator, _base(gan))
        assert message in err.value.message and err.value.hint, (spec, err.value.one_line())
        assert "\n" not in err.value.one_line()


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backend.invert.demo_photo import write_photo

    return write_photo(tmp_path_factory.mktemp("photo") / "person.jpg")


def aware3d(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from backend.cli import main

    code = main.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_encoder_alone_then_fast_refinement(models: Path, photo: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    enc = tiny_encoder(tmp_path / "enc.safetensors", dist.generator, dist.name, pose=(10.0, 0.0))
    model = str(models / f"{DISTILLED_HEAD}.safetensors")
    out = tmp_path / "none"
    code, _, err = aware3d(["invert", str(photo), "--model", model, "--encoder", str(enc), "--refine", "none",
                            "--out", str(out), *FAST_CLI], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["stages"] == ["encoder"] and report["refine"] == "none"
    assert report["start"]["encoder"]["path"] == str(enc) and report["pose"]["source"] == "encoder"
    assert report["pose"]["yaw_deg"] == pytest.approx(10.0) and report["mesh"]["faces"] > 100
    assert (out / "person.avatar.safetensors").is_file() and "first avatar from enc" in err
    assert "pseudo_views.png" not in report["files"].values()

    out = tmp_path / "fast"
    code, _, err = aware3d(["invert", str(photo), "--model", model, "--encoder", str(enc), "--refine", "fast",
                            "--out", str(out), "--no-mesh", *FAST_CLI], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["stages"] == ["encoder", "project", "pseudo", "stage2"] and report["refine"] == "fast"
    assert report["pose"]["source"] == "encoder" and report["pose"]["yaw_deg"] == pytest.approx(10.0)  # kept
    assert set(report["input_view"]) == {"encoder", "pivot", "final"}
    assert report["settings"]["refine"] == "fast" and report["settings"]["project"]["steps"] == 4  # explicit wins


def test_cli_auto_without_a_fitting_encoder_runs_todays_pipeline_with_a_note(
        models: Path, photo: Path, tmp_path: Path, own_model_folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    tiny_encoder(own_model_folders / "enc-distilled.safetensors", dist.generator, dist.name)
    out = tmp_path / "out"
    # An explicit --refine none (a one-pass avatar) cannot be followed without an encoder: the same note says so.
    code, _, err = aware3d(["invert", str(photo), "--model", str(models / "head-tiny.safetensors"), "--out",
                            str(out), "--no-mesh", "--steps-stage1", "2", "--refine", "none", *FAST_CLI], capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: no photo encoder")]
    assert len(notes) == 1 and "head-tiny" in notes[0] and "enc-distilled.safetensors" in notes[0], err
    assert notes[0].endswith("--refine none ignored (it refines an encoder's start)"), notes[0]
    report = json.loads((out / "report.json").read_text())
    assert report["start"] == {"encoder": None} and report["refine"] == "full"
    assert report["stages"] == ["pose", "project", "stage1", "pseudo", "stage2"]


def test_the_note_names_an_ignored_refinement_only_when_one_was_asked_for() -> None:
    from backend.invert.refine import refine_ignored_note as _refine_ignored_note

    assert _refine_ignored_note("no photo encoder for m: none is installed", None) == \
        "no photo encoder for m: none is installed"
    assert _refine_ignored_note("n", "full") == "n"  # full is what runs without an encoder
    assert _refine_ignored_note("n", "fast") == "n; --refine fast ignored (it refines an encoder's start)"


@pytest.mark.parametrize("refine", ["none", "fast"])
def test_cli_encoder_none_with_an_encoder_refinement_is_one_line_and_exit_2(
        refine: str, models: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = aware3d(["invert", str(photo), "--model", str(models / "head-tiny.safetensors"), "--encoder",
                            "none", "--refine", refine, "--out", str(tmp_path / "o"), *FAST_CLI], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("aware3d: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"--refine {refine} refines a photo encoder's start" in lines[0] and "--encoder none" in lines[0]
    assert "drop --refine" in lines[0]  # the hint names the way out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["missing", "gan", "foreign"])
def test_cli_bad_encoder_is_one_line_and_exit_2(kind: str, models: Path, photo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    spec = {"missing": str(tmp_path / "nope.safetensors"), "gan": str(models / "head-tiny.safetensors"),
            "foreign": str(tiny_encoder(tmp_path / "foreign.safetensors", dist.generator, dist.name))}[kind]
    code, _, err = aware3d(["invert", str(photo), "--model", str(models / "head-tiny.safetensors"), "--encoder",
                            spec, "--out", str(tmp_path / "o"), *FAST_CLI], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("aware3d: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert {"missing": "encoder file not found", "gan": "not a photo encoder", "foreign": ""}[kind] in lines[0]
    assert not (tmp_path / "o" / "report.json").exists()


# ----------------------------------------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    from backend.server.server import Server

    s = Server(tmp_path / "jobs", heartbeat_s=5.0)
    yield s
    s.finish(10)


def _server_helpers() -> tuple[Any, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_server import Recorder, send
    finally:
        sys.path.pop(0)
    return Recorder, send


SERVER_FAST = {"preset": "fast", "steps_project": 4, "steps_stage2": 3, "views": 2, "resolution": 64,
               "faces": 2000}


def test_server_sends_the_encoders_head_first_then_the_refined_one(server: Any, models: Path, photo: Path,
                                                                     tmp_path: Path) -> None:
    Recorder, send = _server_helpers()
    dist = load_generator(str(models / f"{DISTILLED_HEAD}.safetensors"))
    enc = tiny_encoder(tmp_path / "enc.safetensors", dist.generator, dist.name, pose=(-8.0, 3.0))
    model = str(models / f"{DISTILLED_HEAD}.safetensors")
    rec = Recorder()
    send(server, rec, "p", "invert_preview", image=str(photo), model=model, estimate_pose=True, encoder=str(enc))
    ev = rec.terminal("p", 180)
    assert ev["event"] == "result", ev
    assert ev["data"]["pose"]["source"] == "encoder" and ev["data"]["pose"]["yaw_deg"] == pytest.approx(-8.0)

    send(server, rec, "i", "invert", image=str(photo), model=model, encoder=str(enc), refine="fast", **SERVER_FAST)
    ev = rec.terminal("i", 300)
    assert ev["event"] == "result", ev
    events = rec.of("i")
    firsts = [i for i, e in enumerate(events) if e["event"] == "progress" and e.get("partial")]
    tuning = [i for i, e in enumerate(events) if e["event"] == "progress" and e.get("stage") == "stage2"]
    assert len(firsts) == 1 and tuning and firsts[0] < tuning[0]  # the first head comes before the refinement
    first = events[firsts[0]]["partial"]
    assert first["data"]["stage"] == "encoder" and first["data"]["pose"]["source"] == "encoder"
    for role in ("mesh", "camera", "preview", "avatar"):
        assert Path(first["files"][role]).is_file(), role
    with np.load(first["files"]["mesh"]) as npz:
        assert len(npz["faces"]) > 100
    d = ev["data"]
    assert d["refine"] == "fast" and d["stages"] == ["encoder", "project", "pseudo", "stage2"]
    assert d["start"]["encoder"]["name"] == "enc" and Path(ev["files"]["mesh"]).is_file()
    assert d["avatar"] != first["data"]["avatar"]

    send(server, rec, "n", "invert", image=str(photo), model=model, encoder=str(enc), refine="none", **SERVER_FAST)
    ev = rec.terminal("n", 300)
    assert ev["event"] == "result" and ev["data"]["stages"] == ["encoder"], ev
    assert not [e for e in rec.of("n") if e.get("partial")]  # nothing to replace: the result is that head


def test_server_refuses_a_bad_encoder_or_refinement(server: Any, models: Path, photo: Path, tmp_path: Path) -> None:
    Recorder, send = _server_helpers()
    rec = Recorder()
    send(server, rec, "a", "invert", image=str(photo), model=str(models / "head-tiny.safetensors"),
         encoder=str(tmp_path / "nope.safetensors"), **SERVER_FAST)
    err = rec.terminal("a", 120)
    assert err["event"] == "error" and "encoder file not found" in err["error"]["message"], err
    send(server, rec, "b", "invert", image=str(photo), refine="slow", **SERVER_FAST)
    err = rec.terminal("b", 60)
    assert err["event"] == "error" and "unknown refinement 'slow'" in err["error"]["message"], err


def test_a_partial_result_travels_inline_to_a_remote_client(tmp_path: Path) -> None:
    """Over TCP the add-on cannot read the backend's files: a partial result's files come inline, as a
    result's do, and the client writes them to its own folder."""
    import addon.client as C
    from backend.server.jobs import Job, JobContext, JobResult

    class Sink:
        inline_results = True

        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        def send(self, msg: dict[str, Any]) -> None:
            self.sent.append(json.loads(json.dumps(msg)))

    sink = Sink()
    mesh = tmp_path / "remote" / "first" / "mesh.npz"
    mesh.parent.mkdir(parents=True)
    mesh.write_bytes(b"mesh bytes")
    ctx = JobContext(Job("r1", "invert", {}, sink), tmp_path / "remote")
    ctx.progress("encoder", 1, 1, "first head", partial=JobResult({"stage": "encoder"}, {"mesh": mesh}))
    transport = object.__new__(C.TcpTransport)
    transport.local_dir = tmp_path / "local"
    msg = transport._unpack(sink.sent[-1])
    local = Path(msg["partial"]["files"]["mesh"])
    assert "inline" not in msg and local.read_bytes() == b"mesh bytes"
    assert local.parent == transport.local_dir / "r1" / "partial"
    handle = C.JobHandle("r1", "invert", {})
    handle._progress(msg)
    assert handle.partials == 1 and handle.partial["data"] == {"stage": "encoder"}
