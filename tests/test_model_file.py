"""Our model format (.safetensors + JSON header) and the model registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.checkpoints.model_file import FORMAT_VERSION, load_tensors, read_header, save_model
from backend.configs import TINY
from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.registry import list_models, load_generator, resolve_model


def save_tiny(path: Path, seed: int = 1) -> TriPlaneGenerator:
    G = TriPlaneGenerator(TINY, seed=seed)
    save_model(path, G.state_dict(), kind="gan", config=TINY.to_dict(),
               provenance={"source": "test", "kimg": 0})
    return G


def test_round_trip_is_bit_exact_and_keeps_order(tmp_path: Path) -> None:
    G = save_tiny(tmp_path / "m.safetensors")
    tensors = load_tensors(tmp_path / "m.safetensors")
    sd = G.state_dict()
    assert list(tensors) == list(sd)
    assert all(torch.equal(tensors[k], sd[k]) for k in sd)
    header = read_header(tmp_path / "m.safetensors")
    assert header.kind == "gan" and header.format_version == FORMAT_VERSION
    assert header.config == json.loads(json.dumps(TINY.to_dict()))
    assert header.provenance["source"] == "test"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_loaded_generator_renders_identically(tmp_path: Path) -> None:
    G = save_tiny(tmp_path / "m.safetensors").eval()
    loaded = load_generator(str(tmp_path / "m.safetensors")).generator
    z, c = torch.randn(1, TINY.z_dim), torch.zeros(1, 25)
    c[0, 16], c[0, 20], c[0, 18], c[0, 21], c[0, 24] = 4.2647, 4.2647, 0.5, 0.5, 1
    c[0, :16] = torch.tensor([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1.0])
    from backend.render.renderer import SamplingSettings

    with torch.no_grad():
        a = G(z, c, sampling=SamplingSettings(exact=True))["image"]
        b = loaded(z, c, sampling=SamplingSettings(exact=True))["image"]
    assert torch.equal(a, b)


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(Aware3DError, match="not found"):
        read_header(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(Aware3DError, match="not a readable"):
        read_header(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(Aware3DError, match="no Aware3D header"):
        read_header(tmp_path / "plain.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "future.safetensors"),
              metadata={"aware3d": json.dumps({"format_version": 99, "kind": "gan", "config": {}})})
    with pytest.raises(Aware3DError, match="newer"):
        read_header(tmp_path / "future.safetensors")


def test_wrong_shapes_are_reported_by_key(tmp_path: Path) -> None:
    sd = TriPlaneGenerator(TINY).state_dict()
    sd["decoder.net.0.weight"] = torch.zeros(3, 3)
    save_model(tmp_path / "bad.safetensors", sd, kind="gan", config=TINY.to_dict())
    with pytest.raises(Aware3DError, match=r"decoder\.net\.0\.weight"):
        load_generator(str(tmp_path / "bad.safetensors"))


def test_registry_finds_user_and_bundled_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user, assets = tmp_path / "user", tmp_path / "assets"
    (assets / "models").mkdir(parents=True)
    user.mkdir()
    monkeypatch.setenv("AWARE3D_MODELS", str(user))
    monkeypatch.setenv("AWARE3D_ASSETS", str(assets))
    save_tiny(user / "mine.safetensors")
    save_tiny(assets / "models" / "shipped.safetensors")
    (user / "official.pkl").write_bytes(b"\x80\x04N.")
    entries = {e.name: e for e in list_models()}
    assert entries["mine"].source == "user" and entries["shipped"].source == "bundled"
    assert entries["mine"].config_name == "tiny" and entries["mine"].resolution == 64
    assert entries["official"].kind == "official-pkl"
    assert resolve_model("shipped") == assets / "models" / "shipped.safetensors"
    with pytest.raises(Aware3DError, match="no model named"):
        resolve_model("nothing-here")
    assert load_generator("mine").name == "mine"


def test_random_models_for_benchmarks() -> None:
    m = load_generator("random:tiny:3")
    assert m.generator.cfg == TINY and m.header.provenance["source"].startswith("random")
