"""Evaluation without downloaded networks: FID/KID maths, reprojection consistency, the feature network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from train.data.zip_dataset import ZipDataset
from train.eval.features import load_feature_net, save_feature_net, train_feature_net
from train.eval.metrics import frechet_distance, kernel_inception_distance, reprojection_error
from train.eval.report import consistency, dataset_ground_truth_consistency, mesh_consistency
from train.synthetic.writer import build_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZipDataset, ZipDataset]:
    out = tmp_path_factory.mktemp("data") / "heads.zip"
    summary = build_dataset(out, count=48, res=32, seed=3, test_heads=3, workers=1, progress=False)
    return ZipDataset(out), ZipDataset(summary["test_out"], extras=True)


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.RandomState(0)
    a = rng.randn(4000, 4)
    assert frechet_distance(a, rng.randn(4000, 4)) < 0.02
    # Shifted mean, same covariance: FID = ‖Δμ‖².
    assert frechet_distance(a, rng.randn(4000, 4) + np.array([2, 0, 0, 0])) == pytest.approx(4.0, abs=0.15)
    # Scaled by 2: Tr(I + 4I − 2·2I) = d.
    assert frechet_distance(a, 2 * rng.randn(4000, 4)) == pytest.approx(4.0, abs=0.3)


def test_kid_is_unbiased_and_positive_for_different_sets() -> None:
    rng = np.random.RandomState(1)
    same = kernel_inception_distance(rng.randn(600, 8), rng.randn(600, 8), subsets=10, subset_size=300)
    diff = kernel_inception_distance(rng.randn(600, 8), rng.randn(600, 8) + 1, subsets=10, subset_size=300)
    assert abs(same) < 0.05 < diff


def test_ground_truth_views_reproject_onto_each_other(synthetic: tuple[ZipDataset, ZipDataset]) -> None:
    _, test = synthetic
    report = dataset_ground_truth_consistency(test, yaw=15.0, heads=3)
    assert report["reprojection_error_ground_truth"] < 0.05
    # Another head seen from B is not a reprojection of A: the error is clearly larger.
    h0, h1 = test.test_heads[:2]
    a, b = test[test.test_view(h0, 0.0)], test[test.test_view(h1, 15.0)]
    err, _ = reprojection_error(a["image"].float() / 127.5 - 1, torch.nan_to_num(a["depth"], posinf=1e3)[None],
                                a["mask"].float()[None], torch.as_tensor(test.get_label(test.test_view(h0, 0.0))),
                                b["image"].float() / 127.5 - 1, torch.nan_to_num(b["depth"], posinf=1e3)[None],
                                torch.as_tensor(test.get_label(test.test_view(h1, 15.0))))
    assert not np.isfinite(err) or err > 2 * report["reprojection_error_ground_truth"]


def test_feature_network_learns_the_head_parameters(synthetic: tuple[ZipDataset, ZipDataset],
                                                    tmp_path: Path) -> None:
    data, _ = synthetic
    losses: list[float] = []
    net, record = train_feature_net(data, epochs=12, batch=16, seed=0,
                                    on_progress=lambda step, steps, loss: losses.append(loss))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), "the parameter losses did not go down"
    assert {"yaw_mae_deg", "regression_r2", "glasses_accuracy"} <= set(record["metrics"])
    assert record["images"] == 24 and "never trained on" in record["data"]  # 48 images: the 24 held out
    # What FID relies on: two halves of the real data are closer to each other than to degraded images.
    from train.eval.report import embed

    real = torch.stack([data[i][0] for i in range(len(data))])
    half = len(real) // 2
    blurred = torch.nn.functional.avg_pool2d(real.float(), 5, 1, 2).to(torch.uint8)
    f_a, f_b, f_blur = embed(net, real[:half]), embed(net, real[half:]), embed(net, blurred[half:])
    assert frechet_distance(f_a, f_b) < frechet_distance(f_a, f_blur)
    save_feature_net(tmp_path / "f.safetensors", net, {"source": "test"})
    loaded = load_feature_net(tmp_path / "f.safetensors")
    x = torch.stack([data[i][0] for i in range(4)])
    with torch.no_grad():
        assert torch.allclose(net.embedding(x), loaded.embedding(x), atol=1e-5)
    assert loaded.embedding(x).shape == (4, 256)


def test_generator_consistency_report_on_a_head_shaped_field() -> None:
    """A generator whose density is a solid ball renders consistent raw views (small reprojection error)."""
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator

    G = TriPlaneGenerator(TINY).eval()

    def ball(planes: list[torch.Tensor], coords: torch.Tensor, plane_set: str = "all",
             **_: object) -> dict[str, torch.Tensor]:
        r = coords.norm(dim=-1, keepdim=True)
        sigma = torch.where(r < 0.3, 300.0, -50.0)
        colour = 0.5 + 0.4 * torch.sin(coords * 9)  # a 3D texture: consistent across views
        rgb = torch.cat([colour, torch.zeros(*coords.shape[:-1], TINY.decoder_output_dim - 3)], dim=-1)
        return {"sigma": sigma, "rgb": rgb}

    G.query = ball  # type: ignore[method-assign]
    report = consistency(G, latents=1, seed=0, yaw=15.0)
    assert report["reprojection_error_raw"] < 0.05
    assert report["reprojection_error_direct"] < 0.05
    assert report["geometry"]["depth_range"] > 0.05  # a ball is not flat
    json.dumps(report)
    # A solid ball's density-10 mesh is the render's surface: full silhouette overlap, depth within a voxel.
    mesh = mesh_consistency(G, latents=1, seed=0)
    assert mesh["no_surface"] == 0 and mesh["views"] == 2
    assert mesh["iou_min"] > 0.97 and mesh["depth_error_max"] < 0.01
    json.dumps(mesh)


def test_mesh_consistency_counts_latents_without_a_surface() -> None:
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator

    G = TriPlaneGenerator(TINY).eval()
    G.query = lambda planes, coords, plane_set="all", **_: {  # type: ignore[method-assign]
        "sigma": torch.full((*coords.shape[:-1], 1), -5.0),
        "rgb": torch.zeros(*coords.shape[:-1], TINY.decoder_output_dim)}
    assert mesh_consistency(G, latents=2, seed=0) == {"latents": 2, "level": 10.0, "no_surface": 2}


def test_model_card_lists_provenance_and_metrics(tmp_path: Path) -> None:
    from backend.checkpoints.model_file import save_model
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator
    from train.eval.card import write_model_card

    path = tmp_path / "mini.safetensors"
    save_model(path, TriPlaneGenerator(TINY).state_dict(), kind="gan", config=TINY.to_dict(),
               provenance={"source": "aware3d-train gan", "command": "aware3d-train gan --data d.zip", "kimg": 1.5,
                           "wall_time_s": 7200, "hardware": "CPU: test", "data": "d.zip"})
    report = {"quality": {"count": 10, "fid_image": 1.5, "kid_image": 0.01},
              "consistency": {"reprojection_error_raw": 0.02, "yaw_deg": 20, "geometry": {"depth_range": 0.3}},
              "mesh": {"latents": 4, "iou_mean": 0.98, "iou_min": 0.96, "depth_error_mean": 0.0123,
                       "depth_error_max": 0.0234}}
    card = write_model_card(path, report, notes="A test model.", seeds=2, orbit_frames=4)
    text = card.read_text()
    assert "aware3d-train gan --data d.zip" in text and "2.00 h" in text and "1.500" in text
    assert "| 0.980 / 0.960 |" in text and "| 0.0123 / 0.0234 |" in text
    assert (tmp_path / "mini_samples.png").is_file() and (tmp_path / "mini_orbit.gif").is_file()


def test_model_card_compares_before_and_after_imitation(tmp_path: Path) -> None:
    from backend.checkpoints.model_file import save_model
    from backend.configs import TINY
    from backend.generator import TriPlaneGenerator
    from train.eval.card import write_model_card

    path = tmp_path / "mini.safetensors"
    save_model(path, TriPlaneGenerator(TINY).state_dict(), kind="gan", config=TINY.to_dict(), provenance={"kimg": 3})
    after = {"quality": {"count": 10, "fid_image": 10.0, "kid_image": 0.1, "fid_direct": 12.0, "kid_direct": 0.2},
             "consistency": {"reprojection_error_direct": 0.03, "reprojection_error_sr": 0.05}}
    before = {"model_kimg": 2.0, "quality": {"count": 10, "fid_image": 11.0, "fid_direct": 20.0, "kid_direct": 0.5},
              "consistency": {"reprojection_error_direct": 0.031, "reprojection_error_sr": 0.05}}
    text = write_model_card(path, after, seeds=1, orbit_frames=2, before_imitation=before).read_text()
    assert "Before and after the 3D-to-2D imitation stage" in text and "(2.0 kimg)" in text
    assert "| FID, direct render | 20.0000 | 12.0000 | -8.0000 |" in text
    assert "| FID gap direct − SR (before) | | | +9.000 |" in text and "(after) | | | +2.000 |" in text
    after["mesh"] = {"iou_min": 0.96, "depth_error_max": 0.02}
    before_dist = {"model_kimg": 2.5, "quality": {"fid_image": 10.5}, "mesh": {"iou_min": 0.9, "depth_error_max": 0.05}}
    text = write_model_card(path, after, seeds=1, orbit_frames=2, before_distortion=before_dist).read_text()
    assert "Before and after the ray-distortion stage" in text and "(2.5 kimg)" in text
    assert "| mesh vs render depth error, worst view | 0.0500 | 0.0200 | -0.0300 |" in text
    assert "| FID, final image (SR) | 10.5000 | 10.0000 | -0.5000 |" in text
    # A distilled model replacing a GAN: the comparison and the reconstruction rows.
    after["reconstruction"] = {"heads": 3, "views_per_head": 21, "max_yaw": 45.0, "psnr_mean": 24.5,
                               "psnr_head_mean": 22.25, "ssim_mean": 0.8, "ssim_head_mean": 0.7,
                               "depth_error_median": 0.0075, "chamfer_mean": 0.0123, "chamfer_heads": 2,
                               "back_psnr_head_mean": 19.5}
    gan = {"model": "aware3d-heads", "model_kimg": 62.0, "quality": {"fid_image": 94.7}}
    text = write_model_card(path, after, seeds=1, orbit_frames=2, before_distillation=gan).read_text()
    assert "Before and after distillation" in text and "aware3d-heads (62.0 kimg)" in text
    assert "| FID, final image (SR) | 94.7000 | 10.0000 | -84.7000 |" in text
    assert "(3 heads × 21 views, |yaw| ≤ 45°): PSNR whole image / head region (dB) | 24.50 / 22.25 |" in text
    assert "| density-10 mesh vs true surface, Chamfer (2 heads, world units) | 0.0123 |" in text


def test_trust_needs_a_held_out_record_that_passes_the_bar() -> None:
    from train.eval.features import TRUST_BAR, trust

    assert set(TRUST_BAR) == {"yaw_mae_deg", "regression_r2"}
    missing = trust({"source": "aware3d-train features", "metrics": {"yaw_mae_deg": 1.0}})
    assert not missing["trusted"] and "features-check" in missing["reason"] and missing["held_out"] is None
    good = {"images": 1000, "data": "fresh.zip", "metrics": {"yaw_mae_deg": 6.0, "regression_r2": 0.5}}
    assert trust({"held_out": good})["trusted"]
    for change in ({"yaw_mae_deg": 14.0}, {"regression_r2": 0.1}, {"regression_r2": float("nan")}):
        bad = trust({"held_out": {**good, "metrics": {**good["metrics"], **change}}})
        assert not bad["trusted"] and next(iter(change)) in bad["reason"], bad
    assert not trust({"held_out": {"images": 10, "metrics": {"regression_r2": 0.9}}})["trusted"]  # yaw missing


def test_features_check_records_a_held_out_measurement(synthetic: tuple[ZipDataset, ZipDataset], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from backend.checkpoints.model_file import load_tensors, read_header
    from train.cli import main

    data, _ = synthetic
    net, _ = train_feature_net(data, epochs=1, batch=16, seed=0)
    path = tmp_path / "f.safetensors"
    save_feature_net(path, net, {"source": "test"})  # as files from before held-out records
    held_out = tmp_path / "fresh.zip"
    build_dataset(held_out, count=12, res=32, seed=4, workers=1, progress=False)
    assert main(["features-check", "--features", str(path), "--data", str(held_out)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["held_out"]["images"] == 12 and set(out["trust"]) >= {"trusted", "reason", "bar"}
    assert "held_out" not in read_header(path).provenance  # without --record nothing is written
    before = load_tensors(path)
    assert main(["features-check", "--features", str(path), "--data", str(held_out), "--record"]) == 0
    header = read_header(path)
    assert header.provenance["held_out"]["metrics"] == out["held_out"]["metrics"]
    assert header.provenance["held_out"]["command"].startswith("aware3d-train features-check")
    assert header.config["input_resolution"] == 64 and header.provenance["source"] == "test"
    assert all(torch.equal(v, load_tensors(path)[k]) for k, v in before.items())
    assert main(["features-check", "--features", str(path), "--data", str(tmp_path / "none.zip")]) == 2


def test_eval_flags_fid_from_an_unproven_feature_network(synthetic: tuple[ZipDataset, ZipDataset],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.cli import main

    data, _ = synthetic
    net, record = train_feature_net(data, epochs=1, batch=16, seed=0)
    path = tmp_path / "f.safetensors"
    save_feature_net(path, net, {"source": "test", "held_out": record})
    capsys.readouterr()
    assert main(["eval", "--model", "random:tiny", "--data", str(data.path), "--features", str(path), "--count", "8",
                 "--latents", "1", "--mesh-latents", "0", "--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    verdict = report["features_trust"]
    assert verdict["trusted"] is False and verdict["held_out"]["images"] == 24  # one epoch on 24 images
    assert "warning: FID/KID will not be trustworthy" in err and verdict["reason"] in err
    assert "fid_image" in report["quality"]  # still reported, but flagged, in the card too
    from train.eval.card import _format_metrics

    assert "**FID / KID below are not trustworthy**" in _format_metrics(report)


def test_card_gives_a_model_without_sr_one_image_row() -> None:
    """A model whose image is its render has one picture, not three: one FID row, one reprojection row."""
    from train.eval.card import _format_metrics

    kinds = ("image", "raw", "direct")
    report = {"quality": {"count": 500, **{f"{m}_{k}": 1.5 for m in ("fid", "kid") for k in kinds}},
              "consistency": {f"reprojection_error_{k}": 0.01 for k in ("raw", "sr", "direct")} | {"yaw_deg": 20.0}}
    with_sr, without = _format_metrics(report), _format_metrics(report, has_sr=False)
    assert with_sr.count("| FID / KID,") == 3 and with_sr.count("| reprojection error") == 3
    assert without.count("| FID / KID,") == 1 and "no SR" in without and without.count("| reprojection error") == 1


def test_eval_records_the_command_as_typed(synthetic: tuple[ZipDataset, ZipDataset], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The default feature network is found in the bundled folder, but the recorded command does not name that
    folder's absolute path (benchmarks/results cite the command; it must run on another checkout)."""
    import shlex

    import backend.registry
    from train.cli import main

    data, _ = synthetic
    net, record = train_feature_net(data, epochs=1, batch=16, seed=0)
    save_feature_net(tmp_path / "aware3d-features64.safetensors", net, {"source": "test", "held_out": record})
    monkeypatch.setattr(backend.registry, "bundled_models_dir", lambda: tmp_path)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", "random:tiny", "--data", str(data.path), "--count", "8", "--latents", "1",
                 "--mesh-latents", "0", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    words = shlex.split(report["command"])
    assert words[:4] == ["aware3d-train", "eval", "--model", "random:tiny"] and "--features" not in words
    assert words[words.index("--out") + 1] == str(out)
    assert report["features"] == str(tmp_path / "aware3d-features64.safetensors")
