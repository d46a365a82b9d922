# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural synthetic heads: sampling, SDF, tracer, data set format, determinism, resume and CLI."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cameras import FFHQ_FOCAL, make_label, orbit_camera, project_points, split_label
from train.cli import main as train_main
from train.synthetic import (
    HeadParams,
    build_dataset,
    head_albedo,
    head_sdf,
    render,
    sample_head,
    sample_scene,
    sample_test_scene,
)
from train.synthetic.heads import head_table, torch_threads
from train.synthetic.layout import features
from train.synthetic.params import test_views as all_test_views
from train.synthetic.sdf import BOUND_MARGIN, bound, field
from train.synthetic.tracer import BOUND_STOP, HEAD_CENTRE, HEAD_RADIUS, LOW_BOX_TOP

RES = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny data set (10 training images, 1 test head) built once for the module."""
    d = tmp_path_factory.mktemp("heads")
    out = d / "heads.zip"
    build_dataset(out, count=10, res=RES, seed=7, test_heads=1, workers=1, progress=False)
    return {"dir": d, "out": out, "test": d / "heads_test.zip"}


def _pixel_rays(label: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    from backend.cameras import pixel_rays

    c2w, k = split_label(label)
    return pixel_rays(c2w, k, res, res)


def _extreme_heads() -> list[HeadParams]:
    """Heads with every optional part and extreme shape factors (for containment checks)."""
    base = sample_head(0, 0)
    big = dict(head_scale=1.07, face_width=1.12, face_length=1.1, jaw_width=1.15, chin_size=1.25,
               cheek_fullness=1.3, nose_length=1.2, nose_projection=1.2, nose_width=1.3, ear_size=1.2,
               ear_angle_deg=30.0, head_roll_deg=10.0, head_nod_deg=-10.0)
    return [
        replace(base, **big, hair_style="long", hair_length=0.47, hair_volume=0.037, glasses="sunglasses",
                hat="brimmed", beard="full", beard_length=0.035),
        replace(base, **big, hair_style="ponytail", hair_length=0.35, hair_volume=0.02, glasses="square",
                hat="beanie", beard="moustache", beard_length=0.012),
        replace(base, hair_style="bun", hair_volume=0.02, glasses="round", beard="goatee", beard_length=0.023,
                head_scale=0.93, face_width=0.88, head_roll_deg=-10.0, head_nod_deg=10.0),
        replace(base, **big, hair_style="bob", hair_length=0.18, hair_volume=0.043),
    ]


# ---------------------------------------------------------------------------------------------------------
# Parameters and the field
# ---------------------------------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_split_apart() -> None:
    assert sample_head(3, 5) == sample_head(3, 5)
    assert sample_scene(3, 5) == sample_scene(3, 5)
    assert sample_head(3, 5) != sample_head(4, 5)
    assert sample_head(3, 5) != sample_head(3, 5, split=1)
    # a test head keeps its light and background across views; only the camera moves
    a, b = sample_test_scene(3, 2, 0.0, 0.0), sample_test_scene(3, 2, 30.0, -10.0)
    assert a.light_dir == b.light_dir and a.bg_top == b.bg_top and (b.yaw_deg, b.pitch_deg) == (30.0, -10.0)
    assert len(all_test_views()) == 27


def test_attributes_are_varied() -> None:
    heads = [sample_head(0, i) for i in range(300)]
    assert len({h.hair_style for h in heads}) >= 6
    assert len({h.hair_colour for h in heads}) >= 6
    assert len({h.iris_colour for h in heads}) >= 5
    assert {"none", "round", "square", "sunglasses"} <= {h.glasses for h in heads}
    assert {"none", "beanie", "brimmed"} <= {h.hat for h in heads}
    assert len({h.beard for h in heads}) >= 4
    tones = [h.skin_tone for h in heads]
    assert min(tones) < 0.1 and max(tones) > 0.9
    p = heads[0].to_json()
    assert HeadParams.from_json(json.loads(json.dumps(p))).hair_style == heads[0].hair_style


def test_head_sdf_public_api() -> None:
    h = sample_head(0, 1)
    pts = torch.tensor([[0.0, 0.05, 0.08], [0.45, 0.45, 0.45], [0.0, 0.0, 0.49], [0.0, 0.6, 0.0]])
    d = head_sdf(h, pts)
    assert d.shape == (4,) and d.dtype == torch.float32
    assert d[0] < -0.05  # inside the skull
    assert d[1] > 0.1 and d[2] > 0.05  # empty corner of the box, in front of the face
    assert d[3] > 0  # outside the tri-plane box
    # every part stays inside the tri-plane box [-0.5, 0.5]^3
    g = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.7
    outside = (g.abs() > 0.5).any(1)
    assert bool((head_sdf(h, g[outside]) > 0).all())
    alb = head_albedo(h, pts)
    assert alb.shape == (4, 3) and bool((alb >= 0).all() and (alb <= 1).all())
    with pytest.raises(ValueError):
        head_sdf(h, torch.zeros(3))


@pytest.mark.parametrize("h", _extreme_heads(), ids=["long", "ponytail", "bun-small", "bob"])
def test_bound_is_below_true_distance(h: HeadParams) -> None:
    """The tracer's cheap first phase must never step over the surface: bound <= true distance."""
    with torch_threads(1):
        _check_bound(h)


def _check_bound(h: HeadParams) -> None:
    from scipy.spatial import cKDTree

    P, f = head_table(h), features(h)
    g = 72
    ax = (torch.arange(g) + 0.5) / g - 0.5
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    fd = field(P, f, grid[:, 0], grid[:, 1], grid[:, 2])
    surface = grid[fd.abs() < 0.6 / g]
    assert len(surface) > 1000
    # the tracer clips rays to a sphere around the head plus the box below it: all surface lies inside
    centre = torch.tensor(HEAD_CENTRE)
    clipped = ((surface - centre).norm(dim=1) > HEAD_RADIUS) & (surface[:, 1] > LOW_BOX_TOP)
    assert not bool(clipped.any())
    tree = cKDTree(surface.numpy())
    p = torch.rand(30000, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    inside = field(P, f, x, y, z) < 0
    true = torch.from_numpy(tree.query(p.numpy())[0]).float()
    tol = 1.0 / g
    b = bound(P, f, x, y, z)
    assert bool((b[~inside] <= true[~inside] + tol).all()), float((b - true)[~inside].max())
    assert bool((b[inside] < BOUND_STOP).all())
    assert BOUND_MARGIN > 0


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def _surface_along(h: HeadParams, o: np.ndarray, d: np.ndarray, t0: float = 2.0, t1: float = 3.3) -> float:
    """First zero of head_sdf along a ray, by dense sampling and bisection (independent of the tracer)."""
    ts = np.linspace(t0, t1, 2000)
    pts = torch.tensor(o[None] + ts[:, None] * d[None], dtype=torch.float32)
    s = head_sdf(h, pts).numpy()
    k = int(np.argmax(s < 0))
    assert s[k] < 0
    a, b = ts[k - 1], ts[k]
    for _ in range(30):
        m = 0.5 * (a + b)
        v = float(head_sdf(h, torch.tensor(o + m * d, dtype=torch.float32)[None])[0])
        a, b = (m, b) if v > 0 else (a, m)
    return 0.5 * (a + b)


def test_frontal_framing_and_centre_depth() -> None:
    h, s = sample_head(0, 3), sample_scene(0, 3)
    s.yaw_deg = s.pitch_deg = 0.0
    res = 64
    r = render([h], [s], res)
    assert r.images.shape == (1, res, res, 3) and r.images.dtype == np.uint8
    mask = np.isfinite(r.depth[0])
    # FFHQ framing: the face/head is centred and fills roughly the middle of the picture
    cols = np.nonzero(mask[res // 2])[0]
    width = (cols.max() - cols.min() + 1) / res
    assert 0.4 < width < 0.8, width
    assert abs((cols.max() + cols.min()) / 2 / res - 0.5) < 0.08
    assert mask[-1].mean() > 0.3  # neck/shoulders reach the bottom edge
    # the centre ray hits the face about 2.7 - 0.3 from the camera, where head_sdf says it should
    o, d = _pixel_rays(r.labels[0], res)
    k = (res // 2) * res + res // 2
    t_ref = _surface_along(h, o[k], d[k])
    assert 2.3 < t_ref < 2.5
    assert abs(r.depth[0].reshape(-1)[k] - t_ref) < 2e-3


def test_depth_is_on_the_surface_and_misses_miss() -> None:
    hs = [sample_head(1, i) for i in range(3)]
    ss = [sample_scene(1, i) for i in range(3)]
    res = 48
    r = render(hs, ss, res)
    for j, h in enumerate(hs):
        o, d = _pixel_rays(r.labels[j], res)
        t = r.depth[j].reshape(-1).astype(np.float64)
        hit = np.isfinite(t)
        assert 0.2 < hit.mean() < 0.95
        p = torch.tensor(o[hit] + t[hit, None] * d[hit], dtype=torch.float32)
        err = head_sdf(h, p).abs().numpy()
        # converged: within half a pixel footprint (silhouette rays graze), most far closer
        footprint = t[hit] / (FFHQ_FOCAL * res)
        assert bool((err < 0.5 * footprint + 1e-4).all())
        assert np.median(err) < 0.1 * footprint.mean()
        # background rays never come close to the head (dense samples along 50 of them)
        miss = np.nonzero(~hit)[0][:: max(1, (~hit).sum() // 50)]
        ts = np.linspace(1.8, 3.4, 600)
        pts = o[miss, None] + ts[None, :, None] * d[miss, None]
        s = head_sdf(h, torch.tensor(pts.reshape(-1, 3), dtype=torch.float32))
        assert float(s.min()) > -1e-4


def test_background_is_exactly_where_depth_is_infinite() -> None:
    h, s = sample_head(2, 4), sample_scene(2, 4)
    res = 48
    r = render([h], [s], res)
    v = (np.arange(res) + 0.5) / res
    top, bot = np.array(s.bg_top), np.array(s.bg_bottom)
    bg = np.clip(((top[None] + (bot - top)[None] * v[:, None]) * 255 + 0.5), 0, 255).astype(np.uint8)
    bg = np.broadcast_to(bg[:, None, :], (res, res, 3))
    differs = (np.abs(r.images[0].astype(int) - bg).max(-1) > 1)
    mask = np.isfinite(r.depth[0])
    assert bool((~differs[~mask]).all())  # every background pixel is the background colour
    assert differs[mask].mean() > 0.99  # and (almost) every head pixel is not


def test_reprojection_between_test_views(tiny: dict[str, Path]) -> None:
    """Pixels of view yaw 0 unprojected with their depth land on the same surface in view yaw +30."""
    from train.data import ZipDataset

    ds = ZipDataset(tiny["test"], extras=True)
    a, b = ds[ds.test_view(0, 0, 0)], ds[ds.test_view(0, 30, 0)]
    res = ds.resolution
    cb, kb = split_label(b["label"].numpy())
    oa, da = _pixel_rays(a["label"].numpy(), res)
    ta = a["depth"].numpy().reshape(-1).astype(np.float64)
    hit = np.isfinite(ta)
    pts = oa[hit] + ta[hit, None] * da[hit]
    pix, _ = project_points(pts, cb, kb, res, res)
    j, i = np.floor(pix[:, 0]).astype(int), np.floor(pix[:, 1]).astype(int)
    inside = (i >= 0) & (i < res) & (j >= 0) & (j < res)
    tb_expected = np.linalg.norm(pts - cb[:3, 3], axis=1)
    tb = b["depth"].numpy()[i.clip(0, res - 1), j.clip(0, res - 1)]
    agree = inside & (np.abs(tb - tb_expected) < 0.02)
    assert agree.sum() > 0.6 * inside.sum()  # the rest is occluded at +30° or at a steep silhouette
    col_a = a["image"].numpy().transpose(1, 2, 0).reshape(-1, 3)[hit][agree].astype(float)
    col_b = b["image"].numpy().transpose(1, 2, 0)[i[agree], j[agree]].astype(float)
    assert np.abs(col_a - col_b).mean() < 14.0  # light is fixed to the head: same colour, view-independent


def test_same_image_in_any_batch() -> None:
    hs = [sample_head(0, i) for i in range(5)]
    ss = [sample_scene(0, i) for i in range(5)]
    together = render(hs, ss, 32)
    alone = render(hs[3:4], ss[3:4], 32)
    assert np.array_equal(together.images[3], alone.images[0])
    assert np.array_equal(together.depth[3], alone.depth[0])


# ---------------------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------------------


def test_zip_format(tiny: dict[str, Path]) -> None:
    import PIL.Image

    PIL.Image.init()
    with zipfile.ZipFile(tiny["out"]) as zf:
        names = set(zf.namelist())
        labels = json.loads(zf.read("dataset.json"))["labels"]
        params = json.loads(zf.read("params.json"))
        about = json.loads(zf.read("aware3d.json"))
        assert len(labels) == 10 and about["spec"]["count"] == 10
        images = sorted(n for n in names if Path(n).suffix in PIL.Image.EXTENSION)
        assert images == sorted(n for n, _ in labels)  # EG3D's loader sees exactly the labelled images
        assert images[0] == "00000/img00000000.png"
        for name, lab in labels:
            assert len(lab) == 25 and name in names
            c2w, k = split_label(lab)
            assert np.allclose(k, [[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1]])
            assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-5)
            assert abs(np.linalg.norm(c2w[:3, 3]) - 2.7) < 1e-4
            p = params[name]
            for key in ("hair_colour", "hair_length", "hair_style", "glasses", "beard", "face_width", "hat",
                        "skin_tone", "iris_colour", "yaw", "pitch"):
                assert key in p, key
            assert np.allclose(lab, make_label(orbit_camera(p["yaw"], p["pitch"])), atol=1e-4)
            png = PIL.Image.open(io.BytesIO(zf.read(name)))
            assert png.size == (RES, RES) and png.mode == "RGB"
            depth = np.load(io.BytesIO(zf.read(name[:-4] + ".depth.npy")))
            assert depth.shape == (RES, RES) and depth.dtype == np.float16
            fin = depth[np.isfinite(depth)]
            assert fin.size and fin.min() > 1.9 and fin.max() < 3.5
    with zipfile.ZipFile(tiny["test"]) as zf:
        idx = json.loads(zf.read("test.json"))
        assert len(idx["heads"]) == 1 and len(idx["views"]) == 27
        assert "h00000/y+30_p-10.png" in zf.namelist()
        assert len(json.loads(zf.read("dataset.json"))["labels"]) == 27


def test_determinism_and_seed(tiny: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    build_dataset(again, count=10, res=RES, seed=7, test_heads=1, workers=1, progress=False)
    assert again.read_bytes() == tiny["out"].read_bytes()
    assert (tmp_path / "again_test.zip").read_bytes() == tiny["test"].read_bytes()
    other = tmp_path / "other.zip"
    build_dataset(other, count=3, res=RES, seed=8, workers=1, progress=False)
    with zipfile.ZipFile(other) as zo, zipfile.ZipFile(tiny["out"]) as zt:
        for n in ("00000/img00000000.png", "00000/img00000001.png"):
            assert zo.read(n) != zt.read(n)
        # a smaller data set with the same seed starts with the same images
    small = tmp_path / "small.zip"
    build_dataset(small, count=3, res=RES, seed=7, workers=1, progress=False)
    with zipfile.ZipFile(small) as zs, zipfile.ZipFile(tiny["out"]) as zt:
        assert zs.read("00000/img00000002.png") == zt.read("00000/img00000002.png")


def test_resume_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.synthetic.writer as writer

    monkeypatch.setattr(writer, "UNIT", 4)
    out = tmp_path / "r.zip"
    build_dataset(out, count=10, res=16, seed=2, workers=1, progress=False, keep_parts=True)
    reference = out.read_bytes()
    parts = tmp_path / "r.zip.parts"
    assert sorted(p.name for p in parts.iterdir() if p.is_dir()) == ["train-00000", "train-00001",
                                                                     "train-00002"]
    # simulate a run killed while writing unit 1 (before the final zip was written)
    out.unlink()
    (parts / "train-00001").rename(parts / ".tmp-train-00001-12345")
    calls: list[int] = []
    original = writer.render_items

    def counting(*a: object, **k: object) -> object:
        calls.append(1)
        return original(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "render_items", counting)
    build_dataset(out, count=10, res=16, seed=2, workers=1, progress=False, resume=True)
    assert len(calls) == 1  # only the missing unit was rendered again
    assert out.read_bytes() == reference
    assert not parts.exists()
    # resuming a finished data set renders nothing
    assert build_dataset(out, count=10, res=16, seed=2, workers=1, progress=False, resume=True)["rendered"] == 0
    assert len(calls) == 1
    # resuming with other settings is refused
    build_dataset(out, count=10, res=16, seed=2, workers=1, progress=False, keep_parts=True)
    with pytest.raises(writer.DatasetError, match="other settings"):
        build_dataset(out, count=10, res=32, seed=2, workers=1, progress=False, resume=True)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "4", "--res", "100"], "power of two"),
        (["--count", "0", "--res", "32"], "at least 1"),
        (["--count", "4", "--res", "32", "--device", "tpu"], "--device"),
    ],
)
def test_cli_bad_input(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_main(["make-dataset", "--out", str(tmp_path / "x.zip"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("aware3d-train: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_bad_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    assert train_main(["make-dataset", "--count", "2", "--out", str(tmp_path / "file" / "x.zip")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err  # checked by backend.validate, before rendering
    assert train_main(["make-dataset", "--count", "2", "--out", str(tmp_path / "x.tar")]) == 2
    assert ".zip" in capsys.readouterr().err
    import train.synthetic.writer as writer

    monkeypatch.setattr(writer.os, "access", lambda *a, **k: False)  # (root ignores permission bits)
    assert train_main(["make-dataset", "--count", "2", "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and len(err.strip().splitlines()) == 1


def test_cli_makes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.zip"
    rc = train_main(["make-dataset", "--count", "3", "--res", "16", "--out", str(tmp_path / "new" / "c.zip"),
                     "--seed", "4", "--test-heads", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    (tmp_path / "new" / "c.zip").rename(out)  # a missing output folder is created
    (tmp_path / "new" / "c_test.zip").rename(tmp_path / "c_test.zip")
    assert out.exists() and (tmp_path / "c_test.zip").exists()
    assert "images/s" in capsys.readouterr().out
    # the CLI used two worker processes here (two units); one in-process worker writes the same bytes
    same = tmp_path / "s.zip"
    build_dataset(same, count=3, res=16, seed=4, test_heads=1, workers=1, progress=False)
    assert same.read_bytes() == out.read_bytes()
    assert (tmp_path / "s_test.zip").read_bytes() == (tmp_path / "c_test.zip").read_bytes()


def test_a_colour_channel_shared_by_every_head_of_a_batch_renders() -> None:
    """A batch where one skin channel is equal for all heads (a constant) and the others vary (per-ray rows)."""
    a = replace(sample_head(0, 1), skin_rgb=(1.0, 0.5, 0.4))
    b = replace(sample_head(0, 2), skin_rgb=(1.0, 0.6, 0.3))
    out = render([a, b], [sample_scene(0, 1), sample_scene(0, 2)], 16)
    assert out.images.shape == (2, 16, 16, 3)
