"""Model files and official pickles are validated before they are used or accepted (issue 15, cases 3, 4, 7).

Every malformed file gives one ``Aware3DError`` line (the CLI: exit code 2, one line on stderr, no traceback):
metadata nested too deep or too large, configs with wrong types or absurd sizes, tensors that do not fit the
config, NaN/inf weights (unless explicitly allowed), truncated files (with a hint that fits the file), and
malformed ``torch_utils.persistence`` records. "Add model" validates before it copies anything. Files are
built here, in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import struct
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from backend.checkpoints.convert import convert_official_pickle
from backend.checkpoints.model_file import (
    ALLOW_NONFINITE_ENV,
    MAX_JSON_DEPTH,
    json_nesting_depth,
    load_tensors,
    read_header,
    save_model,
    validate_model_file,
)
from backend.checkpoints.official_pickle import module_state_dict, read_snapshot
from backend.cli.main import main
from backend.config import GeneratorConfig
from backend.configs import TINY
from backend.errors import Aware3DError, UnsafeCheckpointError
from backend.generator import TriPlaneGenerator
from backend.registry import load_generator
from backend.server.download import add_model_file
from tests.official_pickle_builder import (
    Call,
    dumps,
    dumps_snapshot,
    make_tiny_triplane_generator,
    official_class,
)
from tests.test_convert import write_official

RECONSTRUCT = "torch_utils.persistence._reconstruct_persistent_obj"


# --------------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation as a user gets it: the non-finite override is off unless a test turns it on."""
    monkeypatch.delenv(ALLOW_NONFINITE_ENV, raising=False)


@pytest.fixture()
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user models folder that "Add model" writes to."""
    folder = tmp_path / "user_models"
    folder.mkdir()
    monkeypatch.setenv("AWARE3D_MODELS", str(folder))
    return folder


def tiny_state(seed: int = 1) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in TriPlaneGenerator(TINY, seed=seed).state_dict().items()}


def write_model(path: Path, config: dict[str, Any] | None = None,
                tensors: dict[str, torch.Tensor] | None = None) -> Path:
    save_model(path, tiny_state() if tensors is None else tensors, kind="gan",
               config=TINY.to_dict() if config is None else config)
    return path


def write_raw_header(path: Path, header_json: str) -> Path:
    """A model file whose Aware3D header entry is exactly ``header_json`` (tensors of the tiny model)."""
    save_file(tiny_state(), str(path), metadata={"aware3d": header_json})
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``aware3d ARGV`` in-process; (exit code, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # no progress bars
    assert len(lines) == 1 and lines[0].startswith("aware3d: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_one_line(exc: Aware3DError) -> None:
    assert "\n" not in exc.one_line() and exc.hint
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def flip_bit(path: Path, key: str, element: int, bit: int) -> None:
    """Flip one bit of one float32 element of ``key`` in the file's bytes, as a bad disk or download would."""
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    begin = json.loads(data[8 : 8 + length])[key]["data_offsets"][0]
    byte = 8 + length + begin + 4 * element + bit // 8
    data[byte] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------------------
# Case 3: tracebacks instead of one line


def test_persistence_record_version_6_with_empty_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": "TriPlaneGenerator", "state": {}}
    path = tmp_path / "empty-state.pkl"
    path.write_bytes(dumps({"G_ema": Call(RECONSTRUCT, meta)}))
    with pytest.raises(Aware3DError, match="no synthesis blocks") as info:
        convert_official_pickle(path)
    assert_one_line(info.value)
    assert_one_line_error(*cli(capsys, "info", str(path)), "G_ema")
    assert_one_line_error(*cli(capsys, "sample", "--model", str(path), "--seeds", "0", "--out",
                               str(tmp_path / "out")))


def _record(**changes: Any) -> dict[str, Any]:
    """A version-6 persistence record (empty state) with some entries replaced."""
    return {"type": "class", "version": 6, "module_src": "", "class_name": "TriPlaneGenerator", "state": {},
            **changes}


MALFORMED_RECORDS: dict[str, tuple[Any, str]] = {
    "not a dict": ([("type", "class")], "malformed persistent-class record"),
    "no keys": ({}, "type None version None"),
    "version 5": (_record(version=5), "version 5"),
    "version 7": (_record(version=7), "version 7"),
    "version as text": (_record(version="6"), "version '6'"),
    "version as float": (_record(version=6.0), "version 6.0"),
    "version as bool": (_record(version=True), "version True"),
    "type function": (_record(type="function"), "type 'function'"),
    "no class name": (_record(class_name=None), "without a class name"),
    "class name not text": (_record(class_name=42), "without a class name"),
    "class name not an identifier": (_record(class_name="os.system"), "without a class name"),
    "module source missing": (_record(module_src=None), "without module source"),
    "module source bytes": (_record(module_src=b"import os"), "without module source"),
    "state missing": (_record(state=None), "without a state dict"),
    "state a list": (_record(state=[1, 2]), "without a state dict"),
    "state a string": (_record(state="x"), "without a state dict"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RECORDS))
def test_malformed_persistence_records_give_one_line(tmp_path: Path, case: str) -> None:
    meta, message = MALFORMED_RECORDS[case]
    path = tmp_path / "model.pkl"
    path.write_bytes(dumps({"G_ema": Call(RECONSTRUCT, meta)}))
    with pytest.raises(Aware3DError, match=message) as info:
        read_snapshot(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert_one_line(info.value)


def _generator_with(**attributes: Any) -> bytes:
    G = make_tiny_triplane_generator(seed=2)
    for name, value in attributes.items():
        setattr(G, name, value)
    return dumps_snapshot(G)


@pytest.mark.parametrize(("attributes", "message"), [
    ({"_init_kwargs": [1, 2, 3]}, "init_kwargs is a list"),
    ({"rendering_kwargs": ["ray_start"]}, "rendering_kwargs is a list"),
    ({"_init_kwargs": {"z_dim": "lots", "mapping_kwargs": {}}}, "z_dim"),
    ({"_init_kwargs": {"img_resolution": "big"}}, "img_resolution"),
    ({"_init_kwargs": {"z_dim": 16, "c_dim": 25, "w_dim": 16, "img_resolution": 32,
                       "mapping_kwargs": [2]}}, "mapping_kwargs is a list"),
    ({"_non_persistent_buffers_set": 7}, "_non_persistent_buffers_set"),
])
def test_malformed_snapshot_attributes_give_one_line(tmp_path: Path, attributes: dict[str, Any],
                                                     message: str) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(_generator_with(**attributes))
    with pytest.raises(Aware3DError, match=message) as info:
        convert_official_pickle(path)
    assert_one_line(info.value)


def test_malformed_plane_axes_give_one_line(tmp_path: Path) -> None:
    G = make_tiny_triplane_generator(seed=2)
    G.renderer.plane_axes = torch.zeros(3, 3, 3)  # singular
    path = tmp_path / "model.pkl"
    path.write_bytes(dumps_snapshot(G))
    with pytest.raises(Aware3DError, match="plane_axes") as info:
        convert_official_pickle(path)
    assert_one_line(info.value)


def test_snapshot_missing_a_config_tensor_names_it(tmp_path: Path) -> None:
    G = make_tiny_triplane_generator(seed=2)
    del G.decoder.net[2]
    path = tmp_path / "model.pkl"
    path.write_bytes(dumps_snapshot(G))
    with pytest.raises(Aware3DError, match=r"decoder\.net\.2\.weight") as info:
        convert_official_pickle(path)
    assert_one_line(info.value)
    snapshot = read_snapshot(path)
    assert "decoder.net.0.weight" in module_state_dict(snapshot.G_ema)


def test_json_nested_100k_deep_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    header = json.dumps({"format_version": 1, "kind": "gan", "config": TINY.to_dict()})
    path = write_raw_header(tmp_path / "deep.safetensors", header[:-1] + ', "provenance": {"x": ' + deep + "}}")
    for argv in (("info", str(path)), ("sample", "--model", str(path), "--seeds", "0", "--out",
                                        str(tmp_path / "out"))):
        assert_one_line_error(*cli(capsys, *argv), "deep.safetensors", f"more than {MAX_JSON_DEPTH} levels")
    with pytest.raises(Aware3DError, match="levels deep"):
        validate_model_file(path)


def test_json_depth_scan_ignores_brackets_in_strings() -> None:
    assert json_nesting_depth('{"a": [1, {"b": "[[[[{{{"}], "c": "\\"[[[\\\\"}') == 3
    assert json_nesting_depth('"[[[["') == 0
    assert json_nesting_depth("[" * 50 + "]" * 50, stop_above=10) == 11  # stops early


def test_oversized_metadata_entry_gives_one_line(tmp_path: Path) -> None:
    header = {"format_version": 1, "kind": "gan", "config": TINY.to_dict(), "provenance": {"x": "y" * (1 << 20)}}
    path = write_raw_header(tmp_path / "big.safetensors", json.dumps(header))
    with pytest.raises(Aware3DError, match="1 MiB") as info:
        read_header(path)
    assert_one_line(info.value)


def test_wrong_config_type_is_reported_by_info_sample_and_add(
        tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_model(tmp_path / "lots.safetensors", {**TINY.to_dict(), "z_dim": "lots"})
    message = "model lots's config: z_dim must be an integer, got 'lots'"
    assert_one_line_error(*cli(capsys, "info", str(path)), message)
    assert_one_line_error(*cli(capsys, "sample", "--model", str(path), "--seeds", "0", "--out",
                               str(tmp_path / "out")), message)
    with pytest.raises(Aware3DError, match="z_dim must be an integer") as info:
        add_model_file(path, None, False)
    assert_one_line(info.value)
    assert_one_line_error(*cli(capsys, "models", "add", str(path)), message)
    assert list(models_dir.iterdir()) == []


@pytest.mark.parametrize(("change", "message"), [
    ({"z_dim": 10**12}, "z_dim must be between 1 and 4096"),
    ({"channel_max": 1 << 40}, "channel_max must be between"),
    ({"triplane_channels": 3 * 10**6}, "triplane_channels must be between 3 and 384"),
    ({"w_dim": -3}, "w_dim must be between"),
    ({"img_resolution": 64.5}, "img_resolution must be an integer"),
    ({"normalize_z": "yes"}, "normalize_z must be true or false"),
    ({"family": "stylegan"}, "family must be one of 'eg3d', 'mimic3d'"),
    ({"sr_channels": [16]}, "sr_channels must have 2 entries"),
    ({"sr_channels": [16, "8"]}, r"sr_channels\[1\] must be an integer"),
    ({"rendering": {"depth_resolution": 10**9}}, "rendering.depth_resolution must be between"),
    ({"rendering": {"focal": "wide"}}, "rendering.focal must be a finite number"),
    ({"rendering": []}, "rendering must be an object"),
])
def test_config_types_and_ranges_are_checked(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneratorConfig.from_dict({**TINY.to_dict(), **change})
    path = write_model(tmp_path / "bad.safetensors", {**TINY.to_dict(), **change})
    with pytest.raises(Aware3DError, match=message) as info:
        read_header(path)
    assert_one_line(info.value)


def test_unknown_config_fields_say_update(tmp_path: Path) -> None:
    path = write_model(tmp_path / "future.safetensors", {**TINY.to_dict(), "hologram": True})
    with pytest.raises(Aware3DError, match="unknown generator config fields") as info:
        read_header(path)
    assert "update Aware3D" in info.value.hint


def _status_kb(field: str) -> int | None:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), None)


def test_too_few_channels_for_the_last_block_is_refused(tmp_path: Path) -> None:
    """channel_base below the tri-plane resolution leaves a block with 0 channels (found by the fuzz suite)."""
    path = write_model(tmp_path / "thin.safetensors", {**TINY.to_dict(), "channel_base": 2})
    for call in (validate_model_file, load_generator):
        with pytest.raises(Aware3DError, match="channel_base") as info:
            call(path)  # type: ignore[operator]
        assert_one_line(info.value)


def test_huge_config_with_small_tensors_is_refused_before_allocating(tmp_path: Path) -> None:
    # ~7·10^8 parameters (3 GB) if it were built: the shapes are compared on the meta device instead.
    huge = {**TINY.to_dict(), "z_dim": 4096, "w_dim": 4096, "channel_max": 2048, "channel_base": 1 << 22,
            "triplane_resolution": 1024}
    path = write_model(tmp_path / "huge.safetensors", huge)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS restarts from the current RSS
    before = _status_kb("VmRSS")
    for call in (validate_model_file, load_generator):
        with pytest.raises(Aware3DError, match=r"does not match config 'tiny': [0-9]+ missing") as info:
            call(path)  # type: ignore[operator]
        assert_one_line(info.value)
    peak = _status_kb("VmHWM")
    if before is not None and peak is not None:  # the 3 GB were never allocated
        assert peak - before < 500 * 1024, (before, peak)
    # Same network depth, wider layers: the first tensor whose shape differs is named.
    wide = write_model(tmp_path / "wide.safetensors", {**TINY.to_dict(), "channel_max": 2048,
                                                        "channel_base": 1 << 22})
    with pytest.raises(Aware3DError, match=r"tensor backbone\.synthesis\.b4\.const has shape"):
        load_generator(wide)


def test_wrong_tensor_type_is_refused(tmp_path: Path) -> None:
    tensors = tiny_state()
    tensors["decoder.net.0.weight"] = tensors["decoder.net.0.weight"].to(torch.int32)
    path = write_model(tmp_path / "ints.safetensors", tensors=tensors)
    with pytest.raises(Aware3DError, match="floating point"):
        validate_model_file(path)


# --------------------------------------------------------------------------------------------------------
# Case 4: silently accepted nonsense


def test_nan_weights_are_refused_and_the_override_loads_them(
        tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    tensors = tiny_state()
    tensors["decoder.net.0.weight"][0, 0] = float("nan")
    path = write_model(tmp_path / "nan.safetensors", tensors=tensors)
    message = "tensor decoder.net.0.weight holds 1 non-finite value (NaN or inf)"
    for call in (load_generator, validate_model_file, load_tensors):
        with pytest.raises(Aware3DError, match=r"decoder\.net\.0\.weight holds 1 non-finite") as info:
            call(path)  # type: ignore[operator]
        assert_one_line(info.value)
        assert ALLOW_NONFINITE_ENV in info.value.hint
    assert_one_line_error(*cli(capsys, "sample", "--model", str(path), "--seeds", "0", "--out",
                               str(tmp_path / "out")), message)
    with pytest.raises(Aware3DError, match="non-finite"):
        add_model_file(path, None, False)
    assert list(models_dir.iterdir()) == []
    # The explicit override, for experiments: the API argument and the environment variable.
    assert torch.isnan(load_generator(path, allow_nonfinite=True).generator.state_dict()[
        "decoder.net.0.weight"]).any()
    monkeypatch.setenv(ALLOW_NONFINITE_ENV, "1")
    load_generator(path)
    assert validate_model_file(path).kind == "gan"


@pytest.mark.parametrize(("value", "expect"), [(1.0, torch.isinf), (1.5, torch.isnan)])
def test_bit_flipped_weight_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: float,
                                       expect: Any) -> None:
    key = "decoder.net.0.weight"
    tensors = tiny_state()
    tensors[key].view(-1)[5] = value
    path = write_model(tmp_path / "flipped.safetensors", tensors=tensors)
    validate_model_file(path)  # fine before the flip
    flip_bit(path, key, element=5, bit=30)  # the top exponent bit: 1.0 -> inf, 1.5 -> NaN
    with pytest.raises(Aware3DError, match=rf"{key} holds 1 non-finite value") as info:
        load_generator(path)
    assert_one_line(info.value)
    monkeypatch.setenv(ALLOW_NONFINITE_ENV, "1")
    assert expect(load_tensors(path)[key].view(-1)[5])


def official_tiny(path: Path, nonfinite: float | None = None) -> Path:
    """An official-layout snapshot of the tiny generator (optionally with one non-finite weight)."""
    G = TriPlaneGenerator(TINY.replace(background="none"), seed=2)  # official files have no backdrop
    if nonfinite is not None:
        with torch.no_grad():
            G.decoder.net[0].weight[0, 0] = nonfinite
    return write_official(path, G)


def test_nan_in_an_official_pickle_is_refused(tmp_path: Path) -> None:
    path = official_tiny(tmp_path / "network-snapshot-000000.pkl", float("inf"))
    with pytest.raises(Aware3DError, match=r"decoder\.net\.0\.weight holds 1 non-finite") as info:
        convert_official_pickle(path)
    assert_one_line(info.value)
    convert_official_pickle(path, allow_nonfinite=True)


def test_truncated_safetensors_hint_says_damaged_not_convert(tmp_path: Path) -> None:
    data = write_model(tmp_path / "whole.safetensors").read_bytes()
    for name, cut in (("half.safetensors", len(data) // 2), ("header.safetensors", 100),
                      ("tiny.safetensors", 5), ("last-byte.safetensors", len(data) - 1)):
        path = tmp_path / name
        path.write_bytes(data[:cut])
        for call in (read_header, load_tensors, validate_model_file):
            with pytest.raises(Aware3DError, match="not a readable") as info:
                call(path)  # type: ignore[operator]
            assert_one_line(info.value)
            assert "damaged or cut short" in info.value.hint and ".pkl" not in info.value.hint, name
    # A pickle where a .safetensors is expected: that one is told to convert.
    pkl = tmp_path / "snapshot.safetensors"
    pkl.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    with pytest.raises(Aware3DError) as info:
        read_header(pkl)
    assert "aware3d convert" in info.value.hint


# --------------------------------------------------------------------------------------------------------
# Case 7: wording


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_popen_is_refused_by_its_python3_name(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Popen(marker)}, protocol=protocol))
    if protocol == 2:
        assert b"commands\nPopen" in path.read_bytes()  # Python 3 writes it under its Python 2 name
    with pytest.raises(UnsafeCheckpointError) as info:
        read_snapshot(path)
    assert info.value.message.startswith("refused to load 'subprocess.Popen' from model.pkl")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------
# Add model and the fuzz entry point


def test_add_model_validates_then_copies(tmp_path: Path, models_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_model(tmp_path / "good.safetensors")
    assert main(["models", "add", str(path), "--name", "mine"]) == 0
    assert "added mine" in capsys.readouterr().out and (models_dir / "mine.safetensors").is_file()
    assert_one_line_error(*cli(capsys, "models", "add", str(path), "--name", "mine"), "already exists")
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(Aware3DError, match="not a readable"):
        add_model_file(bad, None, False)
    assert sorted(p.name for p in models_dir.iterdir()) == ["mine.safetensors"]


def test_validate_model_file_accepts_good_files_of_every_kind(tmp_path: Path) -> None:
    from backend.diffusion.config import PRESETS
    from backend.diffusion.model_file import load_net, save_net
    from backend.diffusion.unet import UNet
    from backend.invert.encoder import EncoderConfig, PhotoEncoder, load_encoder, save_encoder

    assert validate_model_file(write_model(tmp_path / "g.safetensors")).kind == "gan"
    save_net(tmp_path / "u.safetensors", UNet(PRESETS["tiny"]))
    assert validate_model_file(tmp_path / "u.safetensors").kind == "diffusion-uncond"
    enc_cfg = EncoderConfig(resolution=32, channels=(8, 16), embedding=16)
    save_encoder(tmp_path / "e.safetensors", PhotoEncoder(enc_cfg), {})
    assert validate_model_file(tmp_path / "e.safetensors").kind == "encoder"
    # Loaders of other kinds refuse a file whose tensors do not fit with one line, not a RuntimeError.
    other = UNet(PRESETS["tiny"].replace(base_channels=4)).state_dict()
    save_model(tmp_path / "u2.safetensors", other, kind="diffusion-uncond", config=PRESETS["tiny"].to_dict())
    with pytest.raises(Aware3DError, match="has shape"):
        load_net(tmp_path / "u2.safetensors")
    narrow = PhotoEncoder(dataclasses.replace(enc_cfg, embedding=8)).state_dict()
    save_model(tmp_path / "e2.safetensors", narrow, kind="encoder", config=enc_cfg.to_dict())
    with pytest.raises(Aware3DError, match="has shape"):
        load_encoder(tmp_path / "e2.safetensors")
    bad_unet = {**PRESETS["tiny"].to_dict(), "base_channels": "wide"}
    save_model(tmp_path / "u3.safetensors", UNet(PRESETS["tiny"]).state_dict(), kind="diffusion-uncond",
               config=bad_unet)
    with pytest.raises(Aware3DError, match="base_channels must be an integer"):
        load_net(tmp_path / "u3.safetensors")


def test_validate_model_file_takes_official_pickles(tmp_path: Path) -> None:
    path = official_tiny(tmp_path / "network-snapshot-000000.pkl")
    header = validate_model_file(path)
    assert header.kind == "gan" and header.config["z_dim"] == TINY.z_dim
    assert not os.path.exists(tmp_path / "network-snapshot-000000.safetensors")


# --------------------------------------------------------------------------------------------------------
# Bounded reading: a few bytes of pickle must not become gigabytes of memory or minutes of work


def _peak_mb_reading(path: Path) -> tuple[float, BaseException | None]:
    """Peak Python-heap allocation (MB) while ``read_snapshot`` reads ``path``, and what it raised."""
    tracemalloc.start()
    error: BaseException | None = None
    try:
        read_snapshot(path)
    except Aware3DError as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peak, error


@pytest.mark.parametrize(("opcode", "message"), [
    (b"r" + struct.pack("<I", 0xFFFFFFF0), "no 'G_ema'|not an EG3D"),  # LONG_BINPUT: a memo slot 4·10^9 up
    (b"\x96" + struct.pack("<Q", 1 << 40), "protocol 5 buffers"),  # BYTEARRAY8 of a terabyte
    (b"\x8e" + struct.pack("<Q", 1 << 40), "truncated"),  # BINBYTES8 of a terabyte
    (b"\x8d" + struct.pack("<Q", 3 << 30), "truncated"),  # BINUNICODE8 of 3 GB
])
def test_counted_opcodes_and_memo_indices_cannot_allocate(tmp_path: Path, opcode: bytes, message: str) -> None:
    data = b"\x80\x04" + b"}" + opcode + b"X\x01\x00\x00\x00a" + b"."
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    peak, error = _peak_mb_reading(path)
    assert peak < 50, f"reading {len(data)} bytes allocated {peak:.0f} MB"
    assert error is not None and re.search(message, error.one_line()), error
    assert_one_line(error)  # type: ignore[arg-type]


def test_calls_repeated_through_the_memo_are_budgeted(tmp_path: Path) -> None:
    blob = "x" * 100_000
    # _codecs.encode(<the same 100 kB string>, 'latin1') ten thousand times: 1 GB of copies from 200 kB.
    calls = [Call("_codecs.encode", blob, "latin1") for _ in range(10_000)]
    path = tmp_path / "amplify.pkl"
    path.write_bytes(dumps({"G_ema": None, "x": calls}, protocol=2))
    assert path.stat().st_size < 1_000_000
    peak, error = _peak_mb_reading(path)
    assert error is not None and "copy far more data than it holds" in error.message
    assert peak < 100


def test_shared_structures_are_not_unrolled_without_bound(tmp_path: Path) -> None:
    # Hyper-parameters: 3 levels of 200 references to the same list = 8·10^6 values from a few kB.
    inner: list[Any] = list(range(200))
    for _ in range(2):
        inner = [inner] * 200
    path = tmp_path / "kwargs.pkl"
    G = make_tiny_triplane_generator(seed=2)
    path.write_bytes(dumps_snapshot(G, training_set_kwargs={"nested": inner}))
    with pytest.raises(Aware3DError, match="more than 1000000 values") as info:
        read_snapshot(path)
    assert_one_line(info.value)
    # Sub-modules: each level holds the next one twice, so the paths double 40 times.
    module_class = official_class("SynthesisLayer")
    node = module_class()
    for _ in range(40):
        parent = module_class()
        parent.a, parent.b = node, node
        node = parent
    path = tmp_path / "modules.pkl"
    path.write_bytes(dumps({"G_ema": node}))
    snapshot = read_snapshot(path)
    with pytest.raises(Aware3DError, match="sub-modules") as info:  # not 2^40 paths walked
        module_state_dict(snapshot.G_ema)
    assert_one_line(info.value)
