"""Safe reading of official EG3D / Mimic3D snapshots (backend.checkpoints.official_pickle).

The files are written by tests/official_pickle_builder.py in the official persistence layout, with both
tensor encodings (torch's own plain-pickle reduce, and legacy blobs written by hand as torch ~1.11 did).
Hostile files must be refused before anything runs: every payload would create a marker file if executed.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import io
import json
import os
import pickle
import random
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.checkpoints.official_pickle import (
    GenericStandIn,
    PersistentStandIn,
    Snapshot,
    generator_info,
    module_state_dict,
    named_modules,
    parse_legacy_storage_blob,
    read_snapshot,
)
from backend.errors import Aware3DError, UnsafeCheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_pickle_builder as builder

ENCODINGS = [("torch", 2), ("torch", 4), ("legacy", 2), ("legacy", 4)]


# --------------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    """The tiny official-like generator plus tensors of every dtype and shared-storage views."""
    G = builder.make_tiny_triplane_generator(seed=3)
    base = torch.arange(24, dtype=torch.float32) * 0.5 - 3.0
    G.backbone.register_buffer("view_t", base.view(4, 6).t())  # non-contiguous
    G.backbone.register_buffer("view_off", base[5:17].view(3, 4))  # offset into the same storage
    G.backbone.register_buffer("flags", torch.tensor([True, False, True]))
    G.backbone.register_buffer("bf16", torch.randn(5).bfloat16())
    G.backbone.register_buffer("f64", torch.randn(2, 3, dtype=torch.float64))
    G.decoder.register_buffer("half_table", torch.randn(3, 5).half())
    G.decoder.register_buffer("counts", torch.tensor([3, -7, 2**40], dtype=torch.int64))
    G.decoder.register_parameter("unused", None)  # None entries are skipped by state_dict
    G.decoder.register_buffer("nothing", None)
    G.superresolution.register_buffer("scratch", torch.ones(2), persistent=False)  # not in the state dict
    G.superresolution.block0.conv0.register_buffer("noise_half", torch.randn(4, 4).half())
    G.cached_shape = torch.Size([4, 4])  # pickled as torch.Size, read back as a plain tuple
    return G


def _write(tmp_path: Path, data: bytes, name: str = "network-snapshot-000000.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_same_state_dict(
    actual: OrderedDict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    assert list(actual) == list(expected)
    for key, tensor in expected.items():
        got = actual[key]
        assert got.dtype == tensor.dtype, key
        assert got.shape == tensor.shape, key
        assert torch.equal(got, tensor), key
        assert not got.requires_grad, key


def _assert_plain(value: Any) -> None:
    if isinstance(value, dict):
        assert type(value) is dict
        for k, v in value.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_plain(v)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


_TRAPPED_CALLS: list[str] = []


def read_guarded(path: Path) -> Snapshot:
    """read_snapshot with every code-running entry point replaced by a trap while it runs.

    A trap records the call and raises; the record is checked by the test (``_TRAPPED_CALLS`` must stay
    empty), so even a payload that swallowed the exception would be noticed.
    """

    def trap(name: str) -> Any:
        def trapped(*args: Any, **kwargs: Any) -> Any:
            _TRAPPED_CALLS.append(name)
            raise AssertionError(f"{name} was called while reading a snapshot")

        return trapped

    targets = [(builtins, name) for name in ("exec", "eval", "compile", "__import__", "open")] + [
        (os, "system"),
        (torch, "load"),
        (torch.storage, "_load_from_bytes"),
        (torch._utils, "_rebuild_tensor_v2"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]
    try:  # patched by hand: pytest's monkeypatch itself imports while patching
        for owner, name, _ in originals:
            setattr(owner, name, trap(f"{owner.__name__}.{name}"))
        return read_snapshot(path)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


@pytest.fixture()
def no_code_runs() -> list[str]:
    _TRAPPED_CALLS.clear()
    return _TRAPPED_CALLS


# --------------------------------------------------------------------------------------------------------
# Weights and structure


@pytest.mark.parametrize(("encoding", "protocol"), ENCODINGS)
def test_weights_are_bit_exact_in_state_dict_order(
    tmp_path: Path, generator: torch.nn.Module, no_code_runs: list[str], encoding: str, protocol: int
) -> None:
    data = builder.dumps_snapshot(generator, tensor_encoding=encoding, protocol=protocol)
    snapshot = read_guarded(_write(tmp_path, data))  # torch.load / _load_from_bytes / exec are trapped
    assert not no_code_runs

    expected = generator.state_dict()
    assert "superresolution.scratch" not in expected and "decoder.unused" not in expected
    _assert_same_state_dict(module_state_dict(snapshot.G_ema), expected)
    _assert_same_state_dict(module_state_dict(snapshot.G), expected)
    _assert_same_state_dict(module_state_dict(snapshot.D), builder.make_tiny_discriminator().state_dict())

    loaded = module_state_dict(snapshot.G_ema)
    assert loaded["backbone.view_t"].stride() == (1, 6)
    assert loaded["backbone.view_off"].storage_offset() == 5
    if encoding == "legacy":  # one blob per storage, so views keep sharing memory as in the original
        ptr = loaded["backbone.view_t"].untyped_storage().data_ptr()
        assert loaded["backbone.view_off"].untyped_storage().data_ptr() == ptr

    prefixed = module_state_dict(snapshot.G_ema, prefix="G_ema.")
    assert list(prefixed) == [f"G_ema.{k}" for k in expected]


def test_reader_imports_no_official_code(tmp_path: Path, generator: torch.nn.Module) -> None:
    read_snapshot(_write(tmp_path, builder.dumps_snapshot(generator)))
    for name in (
        "torch_utils",
        "torch_utils.persistence",
        "dnnlib",
        "dnnlib.util",
        "training",
        "training.triplane",
    ):
        assert name not in sys.modules


def test_snapshot_structure_and_stand_ins(tmp_path: Path, generator: torch.nn.Module) -> None:
    snapshot = read_snapshot(_write(tmp_path, builder.dumps_snapshot(generator)))
    assert isinstance(snapshot, Snapshot)
    assert snapshot.keys == ("training_set_kwargs", "G", "D", "G_ema", "augment_pipe")
    assert snapshot.augment_pipe is None and snapshot.D_patch is None and not snapshot.is_mimic3d
    assert snapshot.training_set_kwargs == builder.DEFAULT_TRAINING_SET_KWARGS
    assert snapshot.G is not snapshot.G_ema

    G = snapshot.G_ema
    assert isinstance(G, PersistentStandIn)
    assert (G.class_name, G.module) == ("TriPlaneGenerator", "training.triplane")
    modules = dict(named_modules(G))
    decoder = modules["decoder"]
    assert isinstance(decoder, GenericStandIn)
    assert decoder.qualified_name == "training.triplane.OSGDecoder"
    assert modules["decoder.net"].qualified_name == "torch.nn.modules.container.Sequential"
    assert modules["decoder.net.1"].qualified_name == "torch.nn.modules.activation.Softplus"
    assert modules["renderer"].qualified_name == "training.volumetric_rendering.renderer.ImportanceRenderer"

    # numpy float64 attributes come back as numpy float64, with the exact value.
    fc = modules["backbone.mapping.fc0"]
    assert type(fc.state["weight_gain"]) is np.float64
    assert fc.state["weight_gain"] == generator.backbone.mapping.fc0.weight_gain
    assert type(modules["backbone.synthesis.b8.conv0"].state["act_gain"]) is np.float64
    assert G.state["cached_shape"] == (4, 4) and type(G.state["cached_shape"]) is tuple

    # Stand-ins can be deep-copied without going through the file-facing hooks.
    clone = copy.deepcopy(G)
    _assert_same_state_dict(module_state_dict(clone), generator.state_dict())


def test_generator_info_is_plain_python(tmp_path: Path, generator: torch.nn.Module) -> None:
    snapshot = read_snapshot(_write(tmp_path, builder.dumps_snapshot(generator)))
    info = generator_info(snapshot)

    assert info["class_name"] == "TriPlaneGenerator" and info["module"] == "training.triplane"
    assert info["init_args"] == ()
    kwargs = info["init_kwargs"]
    _assert_plain(kwargs)
    assert kwargs["z_dim"] == 16 and kwargs["c_dim"] == 25 and kwargs["sr_num_fp16_res"] == 4
    assert kwargs["mapping_kwargs"] == {"num_layers": 2} and type(kwargs["mapping_kwargs"]) is dict
    assert info["rendering_kwargs"] == generator.rendering_kwargs
    _assert_plain(info["rendering_kwargs"])
    assert info["neural_rendering_resolution"] == 8
    assert info["plane_axes"] == builder.EG3D_PLANE_AXES
    _assert_plain(info["attributes"])
    assert info["attributes"]["img_resolution"] == 32

    classes = {entry["class_name"]: entry for entry in info["persistent_classes"]}
    assert {"TriPlaneGenerator", "Generator", "SynthesisLayer", "SuperresolutionHybrid8XDC"} <= set(classes)
    assert "OSGDecoder" not in classes  # non-persistent
    stylegan_sha = classes["SynthesisLayer"]["module_src_sha256"]
    assert classes["MappingNetwork"]["module_src_sha256"] == stylegan_sha  # same source module
    assert "SynthesisLayer" in info["module_sources"][stylegan_sha]
    assert info["submodules"]["superresolution"] == "training.superresolution.SuperresolutionHybrid8XDC"


def test_mimic3d_layout_with_d_patch_and_augment_pipe(tmp_path: Path) -> None:
    G = builder.make_tiny_triplane_generator(mimic3d=True)
    data = builder.dumps_snapshot(
        G, D_patch=builder.SingleDiscriminator(), augment_pipe=builder.AugmentPipe(), tensor_encoding="legacy"
    )
    snapshot = read_snapshot(_write(tmp_path, data))
    assert snapshot.keys == ("training_set_kwargs", "G", "D", "G_ema", "D_patch", "augment_pipe")
    assert snapshot.is_mimic3d
    assert snapshot.G_ema.class_name == "DualTriPlaneGenerator"
    assert snapshot.G_ema.module == "training.dual_triplane"
    assert snapshot.D_patch.class_name == "SingleDiscriminator"
    assert snapshot.augment_pipe.class_name == "AugmentPipe"
    loaded = module_state_dict(snapshot.G_ema)
    _assert_same_state_dict(loaded, G.state_dict())
    assert loaded["backbone.synthesis.b4.const"].shape == (1, 8, 4, 4)
    assert "backbone.synthesis.b3d4.block.conv0.weight" in loaded
    assert generator_info(snapshot, "D_patch")["class_name"] == "SingleDiscriminator"


def test_copyreg_reconstructor_path_for_plain_classes(tmp_path: Path, generator: torch.nn.Module) -> None:
    data = builder.dumps_snapshot(generator, non_persistent_via="reconstructor")
    assert b"_reconstructor" in data
    snapshot = read_snapshot(_write(tmp_path, data))
    _assert_same_state_dict(module_state_dict(snapshot.G_ema), generator.state_dict())
    assert dict(named_modules(snapshot.G_ema))["decoder"].class_name == "OSGDecoder"


def test_build_from_state_dict_round_trip(tmp_path: Path) -> None:
    source = builder.make_tiny_triplane_generator(seed=5).state_dict()
    init_kwargs = {
        "z_dim": 16,
        "c_dim": 25,
        "w_dim": 16,
        "img_resolution": 32,
        "img_channels": 3,
        "mapping_kwargs": builder.EasyDict(num_layers=2),
        "sr_kwargs": builder.EasyDict(),
    }
    rendering_kwargs = dict(builder.FFHQ_RENDERING_KWARGS)
    tree = builder.build_from_state_dict(
        source,
        init_kwargs,
        rendering_kwargs,
        neural_rendering_resolution=128,
        attributes={"backbone": {"num_ws": 5}},
    )
    _assert_same_state_dict(tree.state_dict(), source)
    assert tree.decoder.net[1].__class__ is torch.nn.Softplus

    snapshot = read_snapshot(_write(tmp_path, builder.dumps_snapshot(tree, tensor_encoding="legacy")))
    _assert_same_state_dict(module_state_dict(snapshot.G_ema), source)
    info = generator_info(snapshot)
    assert info["neural_rendering_resolution"] == 128
    assert info["init_kwargs"]["mapping_kwargs"] == {"num_layers": 2}
    assert info["init_kwargs"]["rendering_kwargs"] == rendering_kwargs
    assert info["plane_axes"] == builder.EG3D_PLANE_AXES
    assert info["submodules"]["decoder"] == "training.triplane.OSGDecoder"
    assert info["submodules"]["backbone.synthesis.b8.conv0"] == "training.networks_stylegan2.SynthesisLayer"
    modules = dict(named_modules(snapshot.G_ema))
    assert type(modules["backbone.mapping.fc0"].state["weight_gain"]) is np.float64
    assert modules["backbone"].state["num_ws"] == 5


KEY_TABLES = sorted((Path(__file__).parent / "data" / "keys").glob("*.txt"))


def test_key_tables_are_present() -> None:
    """The round trip below is parametrised over these files; an empty list would pass silently."""
    assert len(KEY_TABLES) >= 5, KEY_TABLES


@pytest.mark.parametrize("key_file", KEY_TABLES, ids=lambda p: p.stem)
def test_official_key_tables_round_trip(tmp_path: Path, key_file: Path) -> None:
    """Every official key table (names and order) survives build → dump → safe read (shapes shrunk)."""
    state: dict[str, torch.Tensor] = {}
    for i, line in enumerate(key_file.read_text().splitlines()):
        if not line.strip():
            continue
        key, _, shape = line.partition("\t")
        dims = [min(int(d), 2) for d in shape.split("x")] if shape.strip() else []
        state[key] = torch.full(dims, float(i))
    class_name = "DualTriPlaneGenerator" if key_file.stem.endswith("-3d") else "TriPlaneGenerator"
    tree = builder.build_from_state_dict(
        state, {"z_dim": 512, "c_dim": 25}, builder.FFHQ_RENDERING_KWARGS, class_name
    )
    snapshot = read_snapshot(_write(tmp_path, builder.dumps_snapshot(tree, D=tree)))
    _assert_same_state_dict(module_state_dict(snapshot.G_ema), state)


# --------------------------------------------------------------------------------------------------------
# The legacy storage blob


def test_torch_blob_layout_and_count_in_elements() -> None:
    tensor = torch.arange(6, dtype=torch.float16)
    blob = tensor._typed_storage().__reduce__()[1][0]  # exactly what plain pickle embeds
    assert torch.equal(parse_legacy_storage_blob(blob), tensor)
    # The 8-byte field before the 12 data bytes counts elements (6), not bytes (12).
    assert int.from_bytes(blob[-12 - 8 : -12], "little") == 6

    class RecordReader(pickle.Unpickler):  # reads torch's own blob made just above (trusted bytes)
        def persistent_load(self, pid: Any) -> Any:
            return pid

    stream = io.BytesIO(blob)
    for _ in range(3):
        pickle.load(stream)
    record = RecordReader(stream).load()
    assert record[0] == "storage" and record[1].__name__ == "HalfStorage" and record[3:] == ("cpu", 6, None)
    # The builder's legacy writer produces byte-identical blobs.
    assert builder.legacy_storage_blob(tensor, key=record[2]) == blob


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.uint8,
        torch.bool,
    ],
)
def test_blob_dtypes(dtype: torch.dtype) -> None:
    tensor = (torch.arange(7) % 3).to(dtype)
    assert torch.equal(parse_legacy_storage_blob(builder.legacy_storage_blob(tensor)), tensor)
    assert parse_legacy_storage_blob(builder.legacy_storage_blob(tensor)).dtype == dtype


def test_blob_storage_view() -> None:
    blob = builder.legacy_storage_blob(torch.arange(6.0), view=("view-key", 2, 3))
    assert torch.equal(parse_legacy_storage_blob(blob), torch.tensor([2.0, 3.0, 4.0]))


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_scalar_names_of_numpy_1_and_2(tmp_path: Path, module: str) -> None:
    dtype = builder.Call("numpy.dtype", "f8", False, True, build_state=(3, "<", None, None, None, -1, -1, 0))
    scalar = builder.Call(f"{module}.scalar", dtype, np.float64(0.125).tobytes())
    meta = {
        "type": "class",
        "version": 6,
        "module_src": "",
        "class_name": "TriPlaneGenerator",
        "state": {"weight_gain": scalar},
    }
    data = builder.dumps({"G_ema": builder.Call("torch_utils.persistence._reconstruct_persistent_obj", meta)})
    value = read_snapshot(_write(tmp_path, data)).G_ema.state["weight_gain"]
    assert type(value) is np.float64 and value == 0.125


def test_broadcast_bomb_is_refused(tmp_path: Path) -> None:
    storage = builder.Call("torch.storage._load_from_bytes", builder.legacy_storage_blob(torch.ones(1)))
    tensor = builder.Call("torch._utils._rebuild_tensor_v2", storage, 0, (10**6, 10**6), (0, 0), False, None)
    with pytest.raises(Aware3DError, match="implausibly large"):
        read_snapshot(_write(tmp_path, builder.dumps({"G_ema": tensor})))


def test_blob_with_byte_count_is_refused() -> None:
    tensor = torch.ones(4)
    with pytest.raises(Aware3DError, match="size in bytes") as info:
        parse_legacy_storage_blob(builder.legacy_storage_blob(tensor, count=16))
    assert not isinstance(info.value, UnsafeCheckpointError)
    with pytest.raises(Aware3DError, match="truncated"):
        parse_legacy_storage_blob(builder.legacy_storage_blob(tensor)[:-3])


def test_tensor_past_end_of_storage_is_refused(tmp_path: Path) -> None:
    storage = builder.Call("torch.storage._load_from_bytes", builder.legacy_storage_blob(torch.ones(4)))
    tensor = builder.Call("torch._utils._rebuild_tensor_v2", storage, 2, (3,), (1,), False, OrderedDict())
    path = _write(tmp_path, builder.dumps({"G_ema": tensor}))
    with pytest.raises(Aware3DError, match="past the end of its storage"):
        read_snapshot(path)


# --------------------------------------------------------------------------------------------------------
# Hostile files: refused, and nothing ran


def _hostile_snapshot(generator: torch.nn.Module, payload: Any) -> bytes:
    """A valid snapshot with the payload hidden deep inside G_ema (an attribute of the decoder)."""
    G = copy.deepcopy(generator).eval().requires_grad_(False)
    G.superresolution.block1.torgb.payload = payload
    return builder.dumps_snapshot(G, prepare=False)


def test_embedded_module_source_is_never_executed(
    tmp_path: Path, generator: torch.nn.Module, no_code_runs: list[str]
) -> None:
    marker = tmp_path / "pwned-src"
    source = f"open({str(marker)!r}, 'w').write('pwned')\nimport os\nos.system('touch {marker}')\n"
    data = builder.dumps_snapshot(
        generator, module_src={"TriPlaneGenerator": source, "training.networks_stylegan2": source}
    )
    snapshot = read_guarded(_write(tmp_path, data))
    assert not marker.exists() and not no_code_runs
    assert snapshot.G_ema.module_src == source
    assert snapshot.G_ema.module_src_sha256 == hashlib.sha256(source.encode()).hexdigest()
    assert snapshot.G_ema.module_src_len == len(source)
    with pytest.raises(AttributeError):
        snapshot.G_ema.module_src = "x"  # read-only


def test_direct_source_loader_is_refused(
    tmp_path: Path, generator: torch.nn.Module, no_code_runs: list[str]
) -> None:
    marker = tmp_path / "pwned-src-loader"
    payload = builder.Call("torch_utils.persistence._src_to_module", f"open({str(marker)!r}, 'w')")
    with pytest.raises(UnsafeCheckpointError, match=r"'torch_utils\.persistence\._src_to_module'"):
        read_guarded(_write(tmp_path, _hostile_snapshot(generator, payload)))
    assert not marker.exists() and not no_code_runs


def _hostile_payloads(marker: Path) -> list[tuple[str, Any]]:
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').write('x')"
    return [
        ("os.system", builder.Call("os.system", touch)),
        ("posix.system", builder.Call("posix.system", touch)),
        ("nt.system", builder.Call("nt.system", touch)),
        ("subprocess.check_call", builder.Call("subprocess.check_call", ["touch", str(marker)])),
        ("subprocess.Popen", builder.Call("subprocess.Popen", ["touch", str(marker)])),
        ("builtins.eval", builder.Call("builtins.eval", write)),
        ("builtins.exec", builder.Call("builtins.exec", write)),
        ("builtins.__import__", builder.Call(builder.Call("builtins.__import__", "os"), touch)),
        (
            "builtins.getattr",
            builder.Call(
                builder.Call("builtins.getattr", builder.Call("builtins.__import__", "os"), "system"), touch
            ),
        ),
        ("builtins.open", builder.Call("builtins.open", str(marker), "w")),
        ("torch.load", builder.Call("torch.load", str(marker))),
        ("numpy.load", builder.Call("numpy.load", str(marker), None, True)),
        ("training.triplane.__builtins__", builder.Call("training.triplane.__builtins__")),
        ("training.triplane.OSGDecoder.__init__", builder.Call("training.triplane.OSGDecoder.__init__")),
    ]


@pytest.mark.parametrize("index", range(14))
def test_hostile_globals_are_refused(
    tmp_path: Path, generator: torch.nn.Module, no_code_runs: list[str], index: int
) -> None:
    marker = tmp_path / "pwned"
    name, payload = _hostile_payloads(marker)[index]
    for where, data in (
        ("top level", builder.dumps({"G_ema": payload})),
        ("deep inside G_ema", _hostile_snapshot(generator, payload)),
    ):
        path = _write(tmp_path, data, "model.pkl")
        with pytest.raises(UnsafeCheckpointError) as info:
            read_guarded(path)
        message = info.value.message
        assert (
            message
            == f"refused to load '{name}' from model.pkl: not on the whitelist of an EG3D/Mimic3D snapshot"
        ), where
        assert info.value.hint
        assert not marker.exists(), where
    assert not no_code_runs


@pytest.mark.parametrize("where", ["storage record", "whole blob"])
def test_hostile_pickle_inside_storage_blob_is_refused(
    tmp_path: Path, generator: torch.nn.Module, no_code_runs: list[str], where: str
) -> None:
    marker = tmp_path / "pwned-blob"
    inner = builder.dumps(builder.Call("os.system", f"touch {marker}"), protocol=2)
    blob = (
        builder.legacy_storage_blob(torch.ones(2), object_pickle=inner)
        if where == "storage record"
        else inner
    )
    storage = builder.Call("torch.storage._load_from_bytes", blob)
    tensor = builder.Call("torch._utils._rebuild_tensor_v2", storage, 0, (2,), (1,), False, OrderedDict())
    with pytest.raises(
        UnsafeCheckpointError, match=r"refused to load 'os\.system' from a tensor storage inside"
    ):
        read_guarded(_write(tmp_path, _hostile_snapshot(generator, tensor)))
    assert not marker.exists() and not no_code_runs


def test_storage_type_must_be_a_storage(tmp_path: Path) -> None:
    blob = builder.legacy_storage_blob(torch.ones(2), storage_type="TypedStorage")
    with pytest.raises(UnsafeCheckpointError, match=r"'torch\.TypedStorage'"):
        parse_legacy_storage_blob(blob)


def test_tensor_tampered_after_build_is_refused(tmp_path: Path) -> None:
    storage = builder.Call("torch.storage._load_from_bytes", builder.legacy_storage_blob(torch.ones(2)))
    tensor = builder.Call(
        "torch._utils._rebuild_tensor_v2",
        storage,
        0,
        (2,),
        (1,),
        False,
        OrderedDict(),
        build_state=(True, None, OrderedDict()),
    )
    with pytest.raises(UnsafeCheckpointError, match="modifies a tensor"):
        read_guarded(_write(tmp_path, builder.dumps({"G_ema": tensor})))


def test_build_cannot_alter_shared_classes_or_dtypes(tmp_path: Path) -> None:
    from backend.checkpoints.official_pickle import EasyDict

    original = EasyDict.__getattr__
    # GLOBAL dnnlib.util.EasyDict, then BUILD with slot state: would setattr on the class itself.
    state = pickle.dumps((None, {"__getattr__": 1}), protocol=2)[2:-1]
    data = b"\x80\x02cdnnlib.util\nEasyDict\n" + state + b"b."
    with pytest.raises(Aware3DError, match="corrupt"):
        read_snapshot(_write(tmp_path, data))
    assert EasyDict.__getattr__ is original

    # numpy.dtype('f8', copy=False) + BUILD would rewrite numpy's shared float64 dtype.
    big_endian = (3, ">", None, None, None, -1, -1, 0)
    dtype = builder.Call("numpy.dtype", "f8", False, False, build_state=big_endian)
    with pytest.raises(Aware3DError, match="holds a pickled"):
        read_snapshot(_write(tmp_path, builder.dumps(dtype)))
    assert np.dtype("f8").byteorder == "="


def test_unknown_persistence_version_is_refused(tmp_path: Path) -> None:
    meta = {"type": "class", "version": 5, "module_src": "", "class_name": "TriPlaneGenerator", "state": {}}
    data = builder.dumps({"G_ema": builder.Call("torch_utils.persistence._reconstruct_persistent_obj", meta)})
    with pytest.raises(Aware3DError, match="version 5") as info:
        read_guarded(_write(tmp_path, data))
    assert not isinstance(info.value, UnsafeCheckpointError)


# --------------------------------------------------------------------------------------------------------
# Files that are not snapshots


def _bad_files(valid: bytes) -> dict[str, tuple[bytes, str]]:
    rng = random.Random(1234)
    zip_buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, zip_buffer)
    legacy_buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, legacy_buffer, _use_new_zipfile_serialization=False)
    return {
        "truncated": (valid[: len(valid) // 2], "truncated"),
        "truncated-early": (valid[:40], "truncated|corrupt"),
        "empty": (b"", "empty"),
        "random": (bytes(rng.randrange(256) for _ in range(4096)), "not a Python pickle"),
        "random-after-header": (b"\x80\x04" + bytes(rng.randrange(256) for _ in range(4096)), ""),
        "json": (json.dumps({"G_ema": [1, 2, 3]}).encode(), "not a Python pickle"),
        "torch-zip": (zip_buffer.getvalue(), "zip archive"),
        "torch-legacy": (legacy_buffer.getvalue(), "legacy torch.save file"),
        "list": (pickle.dumps([1, 2, 3]), "pickled list"),
        "dict-without-g-ema": (pickle.dumps({"G": None, "D": None}), "no 'G_ema'"),
        "g-ema-not-a-network": (pickle.dumps({"G_ema": 3}), "where a network was expected"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "truncated-early",
        "empty",
        "random",
        "random-after-header",
        "json",
        "torch-zip",
        "torch-legacy",
        "list",
        "dict-without-g-ema",
        "g-ema-not-a-network",
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, generator: torch.nn.Module, kind: str) -> None:
    data, pattern = _bad_files(builder.dumps_snapshot(generator))[kind]
    with pytest.raises(Aware3DError, match=pattern or None) as info:
        read_snapshot(_write(tmp_path, data, "model.pkl"))
    error = info.value
    assert "\n" not in error.message and error.hint
    # No raw unpickling traceback attached.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    if kind != "random-after-header":
        assert not isinstance(error, UnsafeCheckpointError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(Aware3DError, match="not found"):
        read_snapshot(tmp_path / "missing.pkl")
    with pytest.raises(Aware3DError, match="cannot open"):
        read_snapshot(tmp_path)
