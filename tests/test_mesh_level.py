# SPDX-License-Identifier: GPL-3.0-or-later
"""A model's own mesh level: meshes use it when the user names none, and aware3d-train mesh-level measures it
against the true heads and stores it in the model file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.mesh.field import GeneratorField, sphere_field
from backend.mesh.pipeline import MeshSettings, extract_mesh

DISTILLED = Path(__file__).resolve().parents[1] / "assets" / "training" / "distill64" / "latest.safetensors"
SETTINGS = MeshSettings(resolution=64, target_faces=None, smooth_iterations=0, coarse_to_fine=False)


def test_a_mesh_without_a_level_is_made_at_the_fields_own_surface() -> None:
    field = sphere_field(0.3, level=30.0)  # density 30 - 200 * sdf: the sphere is at density 30
    own = extract_mesh(field, SETTINGS)
    assert own.stats["settings"]["level"] == 30.0
    assert np.median(np.linalg.norm(own.vertices, axis=1)) == pytest.approx(0.3, abs=0.01)
    # An explicit level still wins: density 10 lies 20 / 200 = 0.1 outside the sphere.
    at10 = extract_mesh(field, dataclasses.replace(SETTINGS, level=10.0))
    assert np.median(np.linalg.norm(at10.vertices, axis=1)) == pytest.approx(0.4, abs=0.01)


def test_a_generator_field_carries_its_models_level() -> None:
    from backend.configs import get_config
    from backend.generator import TriPlaneGenerator

    cfg = get_config("tiny")
    assert cfg.mesh_level == 10.0  # EG3D's convention for every model that records none
    G = TriPlaneGenerator(dataclasses.replace(cfg, mesh_level=25.0))
    with torch.no_grad():
        planes = G.synthesize_planes(G.mapping(torch.zeros(1, cfg.z_dim), torch.zeros(1, cfg.c_dim)))
    assert GeneratorField(G, planes).level == 25.0


def test_protocol_leaves_the_level_to_the_model_unless_asked() -> None:
    from backend.server import protocol as P

    spec = P.OPS["mesh"]
    assert P.check_args("mesh", {}, spec)["level"] is None
    assert P.check_args("mesh", {"level": 20}, spec)["level"] == 20


@pytest.fixture(scope="module")
def test_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.synthetic import build_dataset

    out = tmp_path_factory.mktemp("lvl") / "d.zip"
    build_dataset(out=out, count=1, res=64, seed=11, test_heads=2, progress=False)
    return out.with_name("d_test.zip")


@pytest.mark.skipif(not DISTILLED.is_file(), reason="the distilled run's export is not in this checkout")
def test_mesh_level_command_measures_stores_and_is_used(tmp_path: Path, test_zip: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from backend.checkpoints.model_file import load_tensors, read_header
    from backend.cli.main import main as aware3d
    from train.cli import main as aware3d_train

    model = tmp_path / "m.safetensors"
    shutil.copy(DISTILLED, model)
    report_path = tmp_path / "levels.json"
    assert aware3d_train(["mesh-level", "--model", str(model), "--test-data", str(test_zip), "--heads", "2",
                          "--levels", "10,30,150", "--write", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    levels = report["levels"]
    chamfers = {float(k): v["chamfer_mean"] for k, v in levels.items()}
    assert report["heads"] == 2 and report["previous_level"] == 10.0 and report["min_iou"] == 0.98
    # The closest to the truth among the levels whose meshes match the renders the user sees.
    agreeing = [lv for lv in chamfers if levels[f"{lv:g}"]["render_iou_mean"] >= 0.98]
    assert report["best_level"] == min(agreeing, key=lambda k: chamfers[k])
    # Trained so that density passes 10 at the true surface, the model's best level is near it; at 150 the
    # mesh lies far inside both the truth and the render.
    assert report["best_level"] != 150.0 and chamfers[report["best_level"]] < 0.02 < chamfers[150.0]
    assert levels["150"]["render_iou_mean"] < 0.98 <= levels[f"{report['best_level']:g}"]["render_iou_mean"]
    header = read_header(model)
    assert header.config["mesh_level"] == report["best_level"]
    assert header.provenance["mesh_level"]["best_level"] == report["best_level"]
    before, after = load_tensors(DISTILLED), load_tensors(model)
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    capsys.readouterr()
    assert aware3d(["mesh", "--model", str(model), "--seed", "0", "--res", "64", "--out",
                    str(tmp_path / "m.obj")]) == 0
    assert f"at density level {report['best_level']:g} " in capsys.readouterr().out


def test_mesh_level_refuses_a_gan(test_zip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.cli import main as aware3d_train

    assert aware3d_train(["mesh-level", "--model", "random:tiny", "--test-data", str(test_zip)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a distilled model" in err[0]
