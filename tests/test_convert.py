"""Official snapshots (.pkl, built here in the official persistence layout) convert, load and render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.checkpoints.convert import convert_official_pickle, convert_to_file, projection_from_plane_axes
from backend.checkpoints.model_file import read_header
from backend.config import GeneratorConfig
from backend.configs import CONFIGS, TINY, TINY_MIMIC3D
from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.registry import load_generator
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label, make_latent, render_view
from tests.official_pickle_builder import Call, build_from_state_dict, dumps, write_snapshot

OFFICIAL_AXES = [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                 [[0, 0, 1], [1, 0, 0], [0, 1, 0]]]
CORRECTED_AXES = [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 0], [0, 0, 1], [1, 0, 0]],
                  [[0, 0, 1], [1, 0, 0], [0, 1, 0]]]
SR_CLASS = {"hybrid8xdc": "SuperresolutionHybrid8XDC", "hybrid4x": "SuperresolutionHybrid4X",
            "hybrid2x": "SuperresolutionHybrid2X"}


def official_kwargs(cfg: GeneratorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constructor and rendering kwargs an official snapshot of this architecture would carry."""
    r = cfg.rendering
    init = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution,
                img_channels=3, sr_num_fp16_res=4 if cfg.sr_fp16 else 0,
                mapping_kwargs={"num_layers": cfg.mapping_layers}, channel_base=cfg.channel_base,
                channel_max=cfg.channel_max, num_fp16_res=0, conv_clamp=None,
                fused_modconv_default="inference_only")
    if cfg.family == "mimic3d":
        init.update(triplane_resolution=cfg.triplane_resolution, triplane_channels=cfg.triplane_channels,
                    aware3d_res=list(cfg.aware3d_res), retidx=[-3, -1] if cfg.detail_plane else None)
    rendering = dict(
        ray_start=r.ray_start, ray_end=r.ray_end, depth_resolution=r.depth_resolution,
        depth_resolution_importance=r.depth_resolution_importance, box_warp=r.box_warp,
        white_back=r.white_back, clamp_mode="softplus", disparity_space_sampling=False,
        avg_camera_radius=r.avg_camera_radius, avg_camera_pivot=list(r.avg_camera_pivot),
        c_gen_conditioning_zero=False, c_scale=1.0, superresolution_noise_mode="none", sr_antialias=True,
        superresolution_module=f"training.superresolution.{SR_CLASS[cfg.superresolution]}",
        density_reg=0.25, gpc_reg_prob=0.5, decoder_lr_mul=1.0, image_resolution=cfg.img_resolution)
    return init, rendering


def write_official(path: Path, G: TriPlaneGenerator, neural_rendering_resolution: int | None = None) -> Path:
    """G as an official snapshot; ``neural_rendering_resolution`` overrides the attribute it carries."""
    cfg = G.cfg
    init, rendering = official_kwargs(cfg)
    mimic = cfg.family == "mimic3d"
    tree = build_from_state_dict(
        G.state_dict(), init, rendering, class_name="DualTriPlaneGenerator" if mimic else "TriPlaneGenerator",
        neural_rendering_resolution=neural_rendering_resolution or cfg.neural_rendering_resolution,
        class_names={"superresolution": SR_CLASS[cfg.superresolution]},
        plane_axes=CORRECTED_AXES if cfg.projection == "corrected" else OFFICIAL_AXES)
    return write_snapshot(path, tree)


def render(G: TriPlaneGenerator, seed: int = 0) -> dict[str, torch.Tensor]:
    z = torch.from_numpy(__import__("numpy").random.RandomState(seed).randn(1, G.cfg.z_dim)).float()
    c = torch.from_numpy(camera_label(G.cfg, 15, -5))[None]
    with torch.no_grad():
        return G.eval()(z, c, truncation_psi=0.7, sampling=SamplingSettings(exact=True))


# Official snapshots have no learned backdrop (an Aware3D addition), so the test architectures leave it out.
@pytest.mark.parametrize("cfg", [TINY.replace(projection="eg3d", background="none"),
                                 TINY_MIMIC3D.replace(background="none")], ids=["eg3d", "mimic3d"])
def test_official_layout_pickle_converts_loads_and_renders(cfg: GeneratorConfig, tmp_path: Path) -> None:
    G = TriPlaneGenerator(cfg, seed=11)
    pkl = write_official(tmp_path / "network-snapshot-000100.pkl", G)
    out = tmp_path / "converted.safetensors"
    converted_cfg = convert_to_file(pkl, out)
    assert converted_cfg.replace(name=cfg.name) == cfg
    loaded = load_generator(str(out)).generator
    sd = G.state_dict()
    assert list(loaded.state_dict()) == list(sd)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items()), "weights are not bit-exact"
    a, b = render(G), render(loaded)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["image_depth"], b["image_depth"])
    prov = read_header(out).provenance
    assert prov["file"] == pkl.name and len(prov["sha256"]) == 64
    # The .pkl also loads directly (converted in memory on the way).
    direct = load_generator(str(pkl)).generator
    assert torch.equal(render(direct)["image"], a["image"])


# A tiny Mimic3D at 128² with a 2X SR from 64², written the way genuine snapshots are: they carry
# neural_rendering_resolution 64 (the SR branch's training resolution) whichever stage they are from.
MIMIC3D_128 = TINY_MIMIC3D.replace(background="none", img_resolution=128, sr_input=None)  # 2X: 64² in


@pytest.mark.parametrize(("detail_plane", "expected"), [(True, 128), (False, 64)], ids=["3d-stage", "2d-stage"])
def test_mimic3d_stage_decides_the_default_render(detail_plane: bool, expected: int, tmp_path: Path) -> None:
    """A 3d-stage snapshot renders its final image directly at full resolution, as the official inference and
    the named mimic3d-*-3d configs do; a 2d-stage one renders at 64² and super-resolves."""
    cfg = MIMIC3D_128.replace(detail_plane=detail_plane, neural_rendering_resolution=expected)
    G = TriPlaneGenerator(cfg, seed=5)
    pkl = write_official(tmp_path / "network-snapshot-000200.pkl", G, neural_rendering_resolution=64)
    out = tmp_path / "converted.safetensors"
    assert convert_to_file(pkl, out).replace(name=cfg.name) == cfg
    notes = read_header(out).provenance["notes"]
    assert any("neural_rendering_resolution 64" in n for n in notes) == detail_plane
    loaded = load_generator(str(out)).generator
    latent, label = make_latent(loaded, seed=0, truncation=0.7), camera_label(cfg, 15, -5)
    view = render_view(loaded, latent, label, sampling=SamplingSettings(exact=True))  # what 'aware3d sample' does
    assert view.image.shape == (128, 128, 3) and view.raw.shape == (expected, expected, 3)
    if detail_plane:  # direct: the final image is the 128² volume render itself, not an SR output
        assert np.array_equal(view.image, view.raw)
        direct = G.eval().render(latent.planes, latent.ws, torch.from_numpy(label)[None], resolution=128,
                                 sampling=SamplingSettings(exact=True), run_sr=False)
        assert torch.equal(direct["image_depth"][0, 0], torch.from_numpy(view.depth))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eg3d-ffhq512-128", "mimic3d-ffhq512-3d", "eg3d-shapenetcars128-64"])
def test_full_size_official_architectures_map_to_the_named_configs(name: str, tmp_path: Path) -> None:
    cfg = CONFIGS[name]
    pkl = write_official(tmp_path / "snap.pkl", TriPlaneGenerator(cfg))
    converted, tensors, _ = convert_official_pickle(pkl)
    assert converted.replace(name=name) == cfg
    assert len(tensors) == len(TriPlaneGenerator(cfg).state_dict())


def test_plane_axes_decide_the_projection() -> None:
    assert projection_from_plane_axes(OFFICIAL_AXES) == "eg3d"
    assert projection_from_plane_axes(CORRECTED_AXES) == "corrected"
    with pytest.raises(Aware3DError, match="does not implement"):
        projection_from_plane_axes([[[0, 1, 0], [1, 0, 0], [0, 0, 1]]] * 3)


def test_hostile_snapshot_is_refused_by_the_cli_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"G_ema": Call("os.system", f"touch {marker}"), "G": None, "D": None}
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(dumps(payload))
    proc = subprocess.run([sys.executable, "-m", "backend", "convert", str(pkl), str(tmp_path / "o.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "os.system" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "o.safetensors").exists()


def test_snapshot_with_foreign_keys_is_refused_with_the_key(tmp_path: Path) -> None:
    G = TriPlaneGenerator(TINY.replace(projection="eg3d", background="none"))
    sd = dict(G.state_dict())
    sd["backbone.synthesis.b16.conv1.weight"] = torch.zeros(32, 32, 1, 1)
    init, rendering = official_kwargs(G.cfg)
    tree = build_from_state_dict(sd, init, rendering, neural_rendering_resolution=32,
                                 class_names={"superresolution": "SuperresolutionHybrid2X"},
                                 plane_axes=OFFICIAL_AXES)
    pkl = write_snapshot(tmp_path / "odd.pkl", tree)
    with pytest.raises(Aware3DError, match=r"b16\.conv1\.weight"):
        convert_official_pickle(pkl)
