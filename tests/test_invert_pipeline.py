# SPDX-License-Identifier: GPL-3.0-or-later
"""The inversion pipeline on a tiny head-shaped generator: pose search, both modes, the avatar file (round trip,
wrong base refused), texture and latent edits, and attribute directions."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.errors import Aware3DError
from backend.invert.geometry import orbit_labels
from backend.invert.losses import psnr
from backend.invert.pipeline import InvertSettings, invert, preset
from backend.invert.pose import PoseSettings, estimate_pose
from backend.invert.project import ProjectSettings, latent_stats, project_latent
from backend.invert.render import render_views
from backend.invert.tuning import Target, TuneSettings, tune_generator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny head model of test_server (fitted once, cached), loaded."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_server import head_model
    finally:
        sys.path.pop(0)
    from backend.registry import load_generator

    path = head_model(tmp_path_factory.mktemp("models"))
    return load_generator(str(path))


def tiny_settings(**kw: Any) -> InvertSettings:
    s = preset("fast")
    s = replace(s, project=replace(s.project, steps=8, w_avg_samples=32), stage1=replace(s.stage1, steps=4),
                pseudo=replace(s.pseudo, views=3), stage2=replace(s.stage2, steps=6))
    return replace(s, **kw)


def target_image(G: Any, yaw: float, pitch: float, tattoo: bool = True) -> torch.Tensor:
    """The head rendered at (yaw, pitch), with an out-of-distribution red patch ("tattoo") on the cheek."""
    st = latent_stats(G, 32)
    ws = st.w_avg[:, None].repeat(1, G.num_ws, 1)
    img = render_views(G, ws, orbit_labels(G.cfg, yaw, pitch), grad=False, exact=True)["image"].clone()
    if tattoo:
        img[:, :, 34:42, 26:34] = torch.tensor([0.9, -0.8, -0.8])[None, :, None, None]
    return img


def test_pose_search_finds_the_rendered_pose(head: Any) -> None:
    G = head.generator
    target = target_image(G, 25.0, 5.0, tattoo=False)
    s = PoseSettings(yaw_step=5.0, pitch_step=5.0, candidates=2, probe_steps=4)
    est = estimate_pose(G, target, latent_stats(G, 32), s)
    assert est.source == "estimated" and abs(est.yaw - 25.0) <= 5.0 and abs(est.pitch - 5.0) <= 5.0, est.to_dict()
    assert len(est.candidates) == 2 and abs(est.candidates[0]["yaw_deg"] - est.candidates[1]["yaw_deg"]) >= 15


def test_full_pipeline_improves_the_input_view_and_keeps_the_base(head: Any) -> None:
    G = head.generator
    before = {k: v.clone() for k, v in G.state_dict().items()}
    target = target_image(G, 20.0, 0.0)
    seen: set[str] = set()
    s = tiny_settings(pose=(20.0, 0.0))
    s = replace(s, stage2=replace(s.stage2, steps=40))  # enough tuning to beat the pivot on any fitted head
    inv = invert(G, target, s, progress=lambda st, i, n, m: seen.add(st), keep_stage1=True)
    assert seen == {"pose", "project", "stage1", "pseudo", "stage2"}
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # the base is untouched
    assert inv.pose.source == "given" and (inv.yaw, inv.pitch) == (20.0, 0.0)  # a given pose is not refined
    assert len(inv.pseudo) == 3 and inv.input_depth is not None and inv.G_stage1 is not None
    assert inv.metrics["final"]["psnr"] > inv.metrics["pivot"]["psnr"]
    assert set(inv.timings) == {"pose", "project", "stage1", "pseudo", "stage2"}
    assert not torch.equal(next(inv.G.backbone.synthesis.parameters()), next(G.backbone.synthesis.parameters()))
    assert inv.ws.shape == (1, G.num_ws, G.cfg.w_dim)
    v = inv.pseudo[0]
    assert v.image.shape == target.shape and float(v.mask.min()) >= 0.0 and float(v.mask.max()) <= 1.0


def test_single_view_mode_and_w_space(head: Any) -> None:
    G = head.generator
    target = target_image(G, -10.0, 5.0)
    s = tiny_settings(pose=(-10.0, 5.0), mode="single-view")
    s = replace(s, project=replace(s.project, space="w"))
    inv = invert(G, target, s)
    assert not inv.pseudo and "stage1" not in inv.timings and inv.reports["stage2"].steps == 6
    assert torch.allclose(inv.ws, inv.ws[:, :1].expand_as(inv.ws))  # W: one vector for every layer


def test_projection_refines_the_camera(head: Any) -> None:
    G = head.generator
    target = target_image(G, 20.0, 0.0, tattoo=False)
    r = project_latent(G, target, 12.0, 0.0, ProjectSettings(steps=25, camera_lr=1.0, w_avg_samples=32), seed=0)
    assert abs(r.yaw - 20.0) < abs(12.0 - 20.0), r.yaw  # the joint refinement moved the pose towards the truth
    assert r.losses[-1] < r.losses[0]


def test_early_stop_and_locality(head: Any) -> None:
    G = head.generator
    target = target_image(G, 0.0, 0.0)
    ws = latent_stats(G, 32).w_avg[:, None].repeat(1, G.num_ws, 1)
    lab = orbit_labels(G.cfg, 0.0, 0.0)
    _, rep = tune_generator(G, ws, Target(target, lab), None, TuneSettings(steps=5, early_stop_psnr=5.0))
    assert rep.stopped_early and rep.steps == 0
    _, rep = tune_generator(G, ws, Target(target, lab), None, TuneSettings(steps=2, locality_weight=1.0))
    assert not rep.stopped_early and len(rep.losses) == 2 and np.isfinite(rep.losses).all()


@pytest.fixture(scope="module")
def avatar(head: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from backend.invert.avatar import base_identity
    from backend.invert.results import OutputOptions, write_outputs

    G = head.generator
    inv = invert(G, target_image(G, 15.0, 0.0), tiny_settings(pose=(15.0, 0.0)))
    out = tmp_path_factory.mktemp("avatar")
    written = write_outputs(out, inv, G, base_identity(head), OutputOptions(name="t", orbit_frames=0, mesh=False))
    return written.files["avatar"], inv


def test_avatar_round_trip(avatar: tuple[Path, Any], head: Any) -> None:
    from backend.invert.avatar import load_avatar, read_avatar

    path, inv = avatar
    assert path.name == "t.avatar.safetensors"
    data = read_avatar(path)
    assert data.header.kind == "avatar" and data.base["state_sha256"] and data.base["file_sha256"]
    assert data.deltas and not any(k.startswith("backbone.mapping") for k in data.deltas)
    assert {"stage1.depths", "stage1.fills", "input.image"} <= set(data.stage1)
    G, ws, label = load_avatar(path, "cpu")
    assert torch.equal(ws, inv.ws) and torch.allclose(label, inv.label)
    a = render_views(G, ws, label, grad=False, exact=True)["image"]
    b = render_views(inv.G, inv.ws, inv.label, grad=False, exact=True)["image"]
    assert float((a - b).abs().max()) < 1e-4


def test_avatar_in_place_of_a_seed(avatar: tuple[Path, Any]) -> None:
    """What ``aware3d sample|mesh --avatar`` will do: a Latent for render_view and the mesh field."""
    from backend.invert.avatar import avatar_latent
    from backend.mesh.field import GeneratorField
    from backend.mesh.pipeline import MeshSettings, extract_mesh
    from backend.sampling import camera_label, render_view

    G, latent, label = avatar_latent(avatar[0], "cpu")
    view = render_view(G, latent, camera_label(G.cfg, 30.0, 0.0))
    assert view.image.shape == (64, 64, 3) and latent.seed is None and label.shape == (1, 25)
    mesh = extract_mesh(GeneratorField(G, latent.planes), MeshSettings(resolution=64, target_faces=2000))
    assert mesh.num_faces > 100


def test_avatar_refuses_another_base_or_a_non_avatar(avatar: tuple[Path, Any], head: Any, tmp_path: Path) -> None:
    from backend.checkpoints.model_file import load_tensors, read_header, save_model
    from backend.invert.avatar import load_avatar

    tensors = load_tensors(head.path)
    name = next(k for k in tensors if k.startswith("decoder."))
    tensors[name] = tensors[name] + 0.01  # same architecture, other weights
    hdr = read_header(head.path)
    save_model(tmp_path / "other.safetensors", tensors, kind="gan", config=hdr.config, provenance={})
    with pytest.raises(Aware3DError, match="other weights"):
        load_avatar(avatar[0], "cpu", model=str(tmp_path / "other.safetensors"))
    with pytest.raises(Aware3DError, match=r"architecture|other weights"):
        load_avatar(avatar[0], "cpu", model="random:tiny")
    with pytest.raises(Aware3DError, match="not an avatar"):
        load_avatar(head.path, "cpu")
    with pytest.raises(Aware3DError, match="not found"):
        load_avatar(tmp_path / "none.avatar.safetensors", "cpu")


def test_texture_edit_reruns_stage2(avatar: tuple[Path, Any]) -> None:
    from backend.invert.edit import edit_texture, open_avatar

    av = open_avatar(str(avatar[0]), "cpu")
    assert len(av.inv.pseudo) == 3 and av.inv.input_depth is not None
    edited = av.inv.target.clone()
    edited[:, :, 20:30, 20:44] = torch.tensor([-0.8, -0.8, 0.9])[None, :, None, None]  # a blue band
    before = render_views(av.inv.G, av.inv.ws, av.inv.label, grad=False, exact=True)["image"]
    info = edit_texture(av, edited, steps=8)
    after = render_views(av.inv.G, av.inv.ws, av.inv.label, grad=False, exact=True)["image"]
    assert info["stage2_steps"] == 8
    assert psnr(after, edited) > psnr(before, edited)


def test_directions_fit_save_apply_and_edit(avatar: tuple[Path, Any], head: Any, tmp_path: Path) -> None:
    from backend.invert.avatar import read_avatar
    from backend.invert.directions import (
        DirectionSet,
        apply_direction,
        directions_path_for,
        find_directions,
        load_directions,
        save_directions,
    )
    from backend.invert.edit import edit_latent, open_avatar
    from train.directions import fit_direction, fit_directions

    rng = np.random.RandomState(0)
    w = rng.randn(400, 16)
    true = rng.randn(16)
    true /= np.linalg.norm(true)
    y = 3.0 * (w @ true) + 0.1 * rng.randn(400)
    vec, step, q = fit_direction(w, y)
    assert float(vec @ true) > 0.99 and q["test_r2"] > 0.95 and step == pytest.approx(1 / 3.0 * y.std(), rel=0.1)
    dirs = fit_directions(w, {"glasses": y, "flat": np.ones(400)})
    assert set(dirs) == {"glasses"}
    base = read_avatar(avatar[0]).base
    d = dirs["glasses"]
    d.vector = torch.randn(head.generator.cfg.w_dim)
    d.vector /= d.vector.norm()
    d.layers = (0, 3)
    path = directions_path_for(head.path)
    assert path is not None and path.name == "head-tiny.directions.safetensors"
    save_directions(path, DirectionSet(dirs, {"name": base["name"], "state_sha256": base["state_sha256"]}))
    ds = load_directions(path)
    assert ds.names() == ["glasses"] and ds.directions["glasses"].layers == (0, 3)
    ws = torch.zeros(1, head.generator.num_ws, head.generator.cfg.w_dim)
    moved = apply_direction(ws, ds.directions["glasses"], 2.0)
    assert torch.allclose(moved[0, 0], 2.0 * d.step * d.vector) and moved[0, 3:].abs().max() == 0
    assert find_directions(None, base).names() == ["glasses"]  # found beside the base model
    av = open_avatar(str(avatar[0]), "cpu")
    ws0 = av.inv.ws.clone()
    info = edit_latent(av, "glasses", -1.5)
    assert info["amount"] == -1.5 and torch.allclose(av.inv.ws - ws0, apply_direction(ws0, d, -1.5) - ws0)
    with pytest.raises(Aware3DError, match="no direction named"):
        edit_latent(av, "wings", 1.0)
    save_directions(tmp_path / "other.directions.safetensors", DirectionSet(dirs, {"state_sha256": "0" * 64}))
    with pytest.raises(Aware3DError, match="other weights"):
        find_directions(tmp_path / "other.directions.safetensors", base)


def test_learn_directions_end_to_end(head: Any, tmp_path: Path) -> None:
    """Sampling → feature-network scores → directions, with a tiny untrained feature network."""
    from backend.registry import load_generator
    from train.directions import fit_directions, sample_scores
    from train.eval.features import FeatureNet, targets_from_params

    params = [{"hair_length": float(i % 3), "face_width": 1.0 + 0.01 * i, "hair_rgb": [0.1 * (i % 5)] * 3,
               "glasses": ["none", "round"][i % 2], "beard": ["none", "full"][i % 2]} for i in range(6)]
    spec, _, _ = targets_from_params(params)
    torch.manual_seed(0)
    net = FeatureNet(spec).eval()
    G = load_generator("random:tiny").generator  # varied heads (the head model maps every z to one head)
    w, scores = sample_scores(G, net, 24, batch=12)
    assert w.shape == (24, G.cfg.w_dim)
    assert {"hair_colour", "hair_length", "face_width", "glasses", "beard"} <= set(scores)
    dirs = fit_directions(w, scores)
    assert dirs and all(abs(float(d.vector.norm()) - 1) < 1e-4 and d.step > 0 for d in dirs.values())
