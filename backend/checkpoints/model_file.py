"""Aware3D's model files: .safetensors with the config and provenance as JSON in the header.

Tensors are stored under the official state-dict names, so a converted EG3D checkpoint and one trained by
Aware3D look the same. The header's ``aware3d`` entry holds ``{format_version, kind, config, provenance}``.
Loading never unpickles anything.

Every file is untrusted input (a download, a file picked in Blender), so it is validated before it is used
or accepted into the models folder, and every problem is one :class:`~backend.errors.Aware3DError` line:

* the safetensors header: at most ``MAX_HEADER_BYTES``, each metadata entry at most ``MAX_METADATA_BYTES``,
  and its JSON nested at most ``MAX_JSON_DEPTH`` deep (checked by a bracket scan *before* ``json.loads``,
  which would otherwise recurse until a ``RecursionError``);
* the config, through its kind's dataclass (``GeneratorConfig.from_dict`` and friends: types and ranges);
* the tensors (:func:`validate_model_file`): names and shapes against the network the config describes,
  built on the ``meta`` device so that nothing is allocated for a file that does not fit;
* tensor values: NaN or inf are refused when tensors are loaded (one ``isfinite`` pass per tensor, a few
  per cent of the load time). Experiments that need such files pass ``allow_nonfinite=True`` or set the
  environment variable ``AWARE3D_ALLOW_NONFINITE=1`` (every command and the server honour it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from backend.errors import Aware3DError
from backend.fileio import atomic_path

FORMAT_VERSION = 1
METADATA_KEY = "aware3d"
# safetensors sorts tensors by name; the state-dict order is kept here so listings read like state_dict().
ORDER_KEY = "aware3d.key_order"
KINDS = ("gan", "diffusion-uncond", "diffusion-cond", "depth", "avatar", "features", "encoder")
# Kinds a header may name: ``directions`` files are written by backend.invert.directions (not save_model).
HEADER_KINDS = (*KINDS, "directions")

# Limits of what a file's header may hold (an EG3D model's header is ~40 KB; its JSON ~6 levels deep).
MAX_HEADER_BYTES = 16 << 20
MAX_METADATA_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
ALLOW_NONFINITE_ENV = "AWARE3D_ALLOW_NONFINITE"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")

# Tensors that are data rather than weights, where inf is meaningful (an avatar's stage-1 depth maps mark the
# background as infinitely far): exempt from the finiteness check.
NONFINITE_DATA_PREFIXES: dict[str, tuple[str, ...]] = {"avatar": ("stage1.", "input.")}

_HINT_DAMAGED = "the file is damaged or cut short: download/copy it again"
_HINT_HEADER = "its header is damaged or was not written by Aware3D: download/copy it again, or re-export it"
_HINT_CONVERT = "official .pkl snapshots must be converted first: aware3d convert IN.pkl OUT.safetensors"
_HINT_NONFINITE = (f"the file is damaged (a flipped bit or a diverged training run): download/copy it again; "
                   f"{ALLOW_NONFINITE_ENV}=1 loads it anyway, for experiments")
_HINT_SHAPES = "check the file with 'aware3d info --keys'"


@dataclass
class ModelHeader:
    kind: str
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps({"format_version": self.format_version, "kind": self.kind, "config": self.config,
                           "provenance": self.provenance}, sort_keys=True)


def save_model(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    kind: str,
    config: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors (in the given order) and the header atomically."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    header = ModelHeader(kind=kind, config=config, provenance=provenance or {})
    metadata = {METADATA_KEY: header.to_json(), ORDER_KEY: json.dumps(list(tensors)),
                **(extra_metadata or {})}
    # safetensors refuses shared or non-contiguous storage; copies keep the saved values exact.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def allow_nonfinite_default() -> bool:
    """Whether non-finite tensors are allowed when the caller does not say (``AWARE3D_ALLOW_NONFINITE``)."""
    return os.environ.get(ALLOW_NONFINITE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_allow(allow_nonfinite: bool | None) -> bool:
    return allow_nonfinite_default() if allow_nonfinite is None else bool(allow_nonfinite)


# --------------------------------------------------------------------------------------------------------
# The file and its header


_JSON_TOKENS = re.compile(r'["\\\[\]{}]')


def json_nesting_depth(text: str, stop_above: int = MAX_JSON_DEPTH) -> int:
    """How deep ``text``'s JSON arrays and objects nest (brackets inside strings do not count).

    Why not ``json.loads`` and a walk: the parser itself recurses, so a 100k-deep document ends in a
    ``RecursionError`` before any check could run. This scan is iterative and stops once the depth passes
    ``stop_above``; malformed JSON is left for the parser to refuse.
    """
    depth = deepest = 0
    in_string = False
    skip = -1
    for m in _JSON_TOKENS.finditer(text):
        pos, ch = m.start(), m.group()
        if pos == skip:
            continue
        if in_string:
            if ch == "\\":
                skip = pos + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json_limited(text: str, what: str, source: str) -> Any:
    """``json.loads`` of a header entry, after its size and nesting are checked (one error line for each)."""
    if len(text) > MAX_METADATA_BYTES:
        raise Aware3DError(f"{source}: {what} is {len(text)} bytes long, over the {MAX_METADATA_BYTES >> 20} MiB "
                           "limit", _HINT_HEADER)
    if json_nesting_depth(text) > MAX_JSON_DEPTH:
        raise Aware3DError(f"{source}: {what} is nested more than {MAX_JSON_DEPTH} levels deep", _HINT_HEADER)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Aware3DError(f"{source} has a damaged {what} ({str(exc).splitlines()[0][:120]})",
                           _HINT_HEADER) from None


def _not_readable_hint(path: Path) -> str:
    """What to do about a file safetensors cannot read: convert a pickle, fetch a damaged file again."""
    try:
        with open(path, "rb") as f:
            first = f.read(2)
    except OSError:
        first = b""
    if path.suffix.lower() == ".pkl" or (len(first) == 2 and first[0] == 0x80 and 2 <= first[1] <= 5):
        return _HINT_CONVERT
    return _HINT_DAMAGED


def _check_layout(path: Path) -> None:
    """The 8-byte header length against the file size and the header limit, before safetensors parses it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        raise Aware3DError(f"{path.name} is not a readable .safetensors file (only {size} bytes long)",
                           _not_readable_hint(path))
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES and length <= size - 8:
        raise Aware3DError(f"{path.name} is not a readable .safetensors file (its header of {length} bytes is "
                           f"over the {MAX_HEADER_BYTES >> 20} MiB limit)", _HINT_DAMAGED)
    if length > size - 8:
        raise Aware3DError(f"{path.name} is not a readable .safetensors file (cut short: its header needs "
                           f"{length} bytes, the file has {size - 8} after the length field)",
                           _not_readable_hint(path))


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """safe_open with one-line errors (and a hint that fits the file) for anything it cannot read."""
    if not path.is_file():
        raise Aware3DError(f"model file not found: {path}", "check the path, or run 'aware3d models'")
    try:
        _check_layout(path)
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise Aware3DError(f"{path.name} is not a readable .safetensors file ({str(exc)[:200]})",
                           _not_readable_hint(path)) from None
    with handle as f:
        try:
            yield f
        except (SafetensorError, OSError) as exc:
            raise Aware3DError(f"{path.name} cannot be read ({str(exc)[:200]})", _HINT_DAMAGED) from None


def _metadata(f: Any, source: str) -> dict[str, str]:
    meta = f.metadata() or {}
    for key, value in meta.items():
        if len(value) > MAX_METADATA_BYTES:
            raise Aware3DError(f"{source}: header entry {key[:40]!r} is {len(value)} bytes long, over the "
                               f"{MAX_METADATA_BYTES >> 20} MiB limit", _HINT_HEADER)
    return dict(meta)


def _header_from_json(data: Any, source: str) -> ModelHeader:
    """The header's fields, each of the type it must have."""
    if not isinstance(data, dict):
        raise Aware3DError(f"{source} has a damaged Aware3D header (not a JSON object)", _HINT_HEADER)
    for key in ("kind", "config", "format_version"):
        if key not in data:
            raise Aware3DError(f"{source} has a damaged Aware3D header (no {key!r})", _HINT_HEADER)
    kind, config, provenance = data["kind"], data["config"], data.get("provenance", {})
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise Aware3DError(f"{source} has a damaged Aware3D header (format_version {str(version)[:20]!r})",
                           _HINT_HEADER)
    if version > FORMAT_VERSION:
        raise Aware3DError(f"{source} uses model format {version}, newer than this Aware3D "
                           f"({FORMAT_VERSION})", "update Aware3D")
    if not isinstance(kind, str) or kind not in HEADER_KINDS:
        raise Aware3DError(f"{source} is of an unknown model kind {str(kind)[:40]!r}",
                           f"known kinds: {', '.join(HEADER_KINDS)}; a newer Aware3D may know it")
    if not isinstance(config, dict) or not isinstance(provenance, dict):
        what = "config" if not isinstance(config, dict) else "provenance"
        raise Aware3DError(f"{source} has a damaged Aware3D header ({what} is not a JSON object)", _HINT_HEADER)
    return ModelHeader(kind=kind, config=config, provenance=provenance, format_version=version)


def _read_checked_header(f: Any, p: Path) -> tuple[ModelHeader, Any]:
    """The header of an open file and its config object (``None`` for kinds without a dataclass)."""
    meta = _metadata(f, p.name)
    if METADATA_KEY not in meta:
        raise Aware3DError(f"{p.name} has no Aware3D header",
                           "it was not written by Aware3D; convert official checkpoints with aware3d convert")
    header = _header_from_json(parse_json_limited(meta[METADATA_KEY], "Aware3D header", p.name), p.name)
    return header, validate_config(header, p)


def read_header(path: str | os.PathLike[str]) -> ModelHeader:
    """Read and check the header (fast; no tensor data is loaded): size and nesting limits, the header's
    fields, and the config through its kind's dataclass (types and ranges)."""
    p = Path(path)
    with _open(p) as f:
        return _read_checked_header(f, p)[0]


def read_header_of_kind(path: str | os.PathLike[str], kind: str, what: str, hint: str) -> ModelHeader:
    """The header of a file that must be of ``kind`` (one clear error line otherwise: "X.safetensors is a gan
    model, not <what>", with ``hint`` saying how to get the right one)."""
    header = read_header(path)
    if header.kind != kind:
        raise Aware3DError(f"{Path(path).name} is a {header.kind} model, not {what}", hint)
    return header


# --------------------------------------------------------------------------------------------------------
# Configs


def _model_name(path: Path) -> str:
    name = path.name
    for suffix in (".avatar.safetensors", ".directions.safetensors", ".safetensors"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _config_object(header: ModelHeader) -> Any:
    """The kind's config dataclass built from the header (its ``from_dict`` checks types and ranges);
    ``None`` for kinds whose config is checked field by field here."""
    kind, cfg = header.kind, header.config
    if kind in ("gan", "avatar"):
        from backend.config import GeneratorConfig

        return GeneratorConfig.from_dict(cfg)
    if kind in ("diffusion-uncond", "diffusion-cond", "depth"):
        from backend.diffusion.config import UNetConfig

        unet = UNetConfig.from_dict(cfg)
        expected = {"diffusion-uncond": "uncond", "diffusion-cond": "cond", "depth": "depth"}[kind]
        if unet.kind != expected:
            raise ValueError(f"kind is {unet.kind!r}, but the file is a {kind} model")
        return unet
    if kind == "encoder":
        from backend.invert.encoder import EncoderConfig

        return EncoderConfig.from_dict(cfg)
    if kind == "features":
        _check_features_config(cfg)
    elif kind == "directions":
        _check_directions_config(cfg)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_features_config(cfg: Mapping[str, Any]) -> None:
    """A feature network's config (train.eval.features.FeatureSpec, which the backend does not import)."""
    regression, mean, std = cfg.get("regression", []), cfg.get("mean", []), cfg.get("std", [])
    if not (isinstance(regression, list) and all(isinstance(r, str) for r in regression)):
        raise ValueError("regression must be a list of names")
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) == len(regression) and all(map(_is_number, values))):
            raise ValueError(f"{name} must be one finite number per regression target")
    categories = cfg.get("categories", {})
    if not (isinstance(categories, dict) and all(isinstance(v, list) and all(isinstance(c, str) for c in v)
                                                 for v in categories.values())):
        raise ValueError("categories must map names to lists of labels")
    for key in ("embedding_dim", "input_resolution"):
        value = cfg.get(key, 256)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 16:
            raise ValueError(f"{key} must be an integer between 1 and 65536, got {str(value)[:40]!r}")


def _check_directions_config(cfg: Mapping[str, Any]) -> None:
    """A directions file's config: per attribute a finite step and optional [start, end) ws layers."""
    attributes, model = cfg.get("attributes", {}), cfg.get("model", {})
    if not isinstance(attributes, dict) or not isinstance(model, dict):
        raise ValueError("attributes and model must be objects")
    for name, meta in attributes.items():
        if not isinstance(meta, dict) or not _is_number(meta.get("step")):
            raise ValueError(f"attribute {str(name)[:40]!r} needs a finite step")
        layers = meta.get("layers")
        if layers is not None and not (isinstance(layers, list) and len(layers) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1024 for v in layers)):
            raise ValueError(f"attribute {str(name)[:40]!r} has layers {str(layers)[:40]}, not [start, end)")
        if not isinstance(meta.get("quality", {}), dict) or not isinstance(meta.get("description", ""), str):
            raise ValueError(f"attribute {str(name)[:40]!r} has a malformed quality or description")


def _check_provenance(header: ModelHeader) -> None:
    """The provenance entries that loaders read as numbers or objects."""
    prov = header.provenance
    if header.kind == "avatar":
        fmt = prov.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool):
            raise ValueError(f"the avatar format must be an integer, got {str(fmt)[:40]!r}")
        if not isinstance(prov.get("base_model", {}), dict):
            raise ValueError("the avatar's base_model must be an object")


def validate_config(header: ModelHeader, path: str | os.PathLike[str]) -> Any:
    """Check the header's config (and the provenance entries loaders rely on) for its kind; returns the
    config object where the kind has a dataclass. One error line names the model and the field."""
    from backend.config_fields import UnknownFieldsError

    p = Path(path)
    try:
        _check_provenance(header)
        return _config_object(header)
    except UnknownFieldsError as exc:
        raise Aware3DError(f"model {_model_name(p)}'s config: {exc}",
                           "it was written by a newer Aware3D: update Aware3D") from None
    except (TypeError, ValueError) as exc:
        raise Aware3DError(f"model {_model_name(p)}'s config: {str(exc)[:300]}",
                           "the file is damaged or was edited: re-export it, or download/copy it again") from None


# --------------------------------------------------------------------------------------------------------
# Tensors


def _ordered_keys(f: Any, source: str = "model file") -> list[str]:
    keys = list(f.keys())
    raw = _metadata(f, source).get(ORDER_KEY)
    if raw is None:
        return keys
    try:
        order = parse_json_limited(raw, "tensor order", source)
    except Aware3DError:
        return keys  # the order only makes listings read like state_dict(); the data is still intact
    if isinstance(order, list) and all(isinstance(k, str) for k in order) and sorted(order) == sorted(keys):
        return order
    return keys


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every element is finite. A finite sum proves it (NaN and inf propagate through a sum) at a
    tenth of the cost of ``isfinite(t).all()``; only a sum that overflowed needs the exact check."""
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def check_finite(tensor: torch.Tensor, key: str, source: str, allow_nonfinite: bool | None = None) -> None:
    """Refuse a tensor holding NaN or inf (unless allowed), naming it: such weights render garbage silently."""
    if _resolve_allow(allow_nonfinite) or not (tensor.is_floating_point() or tensor.is_complex()):
        return
    if not _all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).sum())
        raise Aware3DError(f"{source}: tensor {key} holds {bad} non-finite value{'s' * (bad != 1)} "
                           f"(NaN or inf)", _HINT_NONFINITE)


def _data_prefixes(f: Any, source: str) -> tuple[str, ...]:
    """Key prefixes of the file's kind that hold data rather than weights (no finiteness check)."""
    raw = _metadata(f, source).get(METADATA_KEY)
    if raw is None:
        return ()
    try:
        data = parse_json_limited(raw, "Aware3D header", source)
    except Aware3DError:
        return ()
    kind = data.get("kind") if isinstance(data, dict) else None
    return NONFINITE_DATA_PREFIXES.get(kind, ()) if isinstance(kind, str) else ()


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 allow_nonfinite: bool | None = None) -> dict[str, torch.Tensor]:
    """All tensors, in the order they were saved (the state-dict order). Weights with NaN or inf are refused
    unless ``allow_nonfinite`` (default: the ``AWARE3D_ALLOW_NONFINITE`` environment variable)."""
    p = Path(path)
    allow = _resolve_allow(allow_nonfinite)
    out: dict[str, torch.Tensor] = {}
    with _open(p) as f:
        data_prefixes = _data_prefixes(f, p.name)
        for k in _ordered_keys(f, p.name):
            t = f.get_tensor(k)
            check_finite(t, k, p.name, allow or k.startswith(data_prefixes))
            out[k] = t.to(device)
    return out


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key → shape without loading the data."""
    p = Path(path)
    with _open(p) as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in _ordered_keys(f, p.name)}


def _tensor_table(f: Any, source: str) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype()))
            for k in _ordered_keys(f, source)}


def check_state_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                       source: str, what: str, dtypes: Mapping[str, str] | None = None) -> None:
    """Names and shapes of a file's tensors against those a network expects, before anything is allocated:
    one line naming the first missing, unexpected or mis-shaped tensor."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise Aware3DError(f"{source} does not match {what}: {len(missing)} missing and {len(unexpected)} "
                           f"unexpected tensors (e.g. {(missing or unexpected)[0]})", _HINT_SHAPES)
    for k, shape in expected.items():
        if tuple(found[k]) != tuple(shape):
            raise Aware3DError(f"{source}: tensor {k} has shape {tuple(found[k])}, the config expects "
                               f"{tuple(shape)}", _HINT_SHAPES)
        if dtypes is not None and dtypes.get(k, "F32") not in FLOAT_DTYPES:
            raise Aware3DError(f"{source}: tensor {k} is of type {dtypes[k]}, the model expects floating point",
                               _HINT_SHAPES)


def meta_state_shapes(module_factory: Any) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of the module ``module_factory()`` builds, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = module_factory()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_avatar_tensors(cfg: Any, table: Mapping[str, tuple[tuple[int, ...], str]], source: str) -> None:
    from backend.generator import TriPlaneGenerator

    with torch.device("meta"):
        params = {k: tuple(v.shape) for k, v in TriPlaneGenerator(cfg).named_parameters()}
    for key in ("avatar.ws", "avatar.label"):
        if key not in table:
            raise Aware3DError(f"{source} has no {key}", "re-run 'aware3d invert'")
    ws, label = table["avatar.ws"][0], table["avatar.label"][0]
    if ws != (1, cfg.num_ws, cfg.w_dim) or label != (1, 25):
        raise Aware3DError(f"{source}: avatar.ws {ws} / avatar.label {label} do not fit the base config "
                           f"({(1, cfg.num_ws, cfg.w_dim)} / (1, 25))", "re-run 'aware3d invert'")
    for key, (shape, _) in table.items():
        if key.startswith(("delta.", "param.")):
            name = key.split(".", 1)[1]
            if params.get(name) != shape:
                raise Aware3DError(f"{source}: {key} has shape {shape}, the base model's parameter "
                                   f"{'is ' + str(params[name]) if name in params else 'does not exist'}",
                                   "re-run 'aware3d invert'")


def _check_tensor_table(header: ModelHeader, cfg: Any, table: Mapping[str, tuple[tuple[int, ...], str]],
                        source: str) -> None:
    """Tensor names, shapes and types against what the header's kind and config describe."""
    shapes = {k: v[0] for k, v in table.items()}
    dtypes = {k: v[1] for k, v in table.items()}
    kind = header.kind
    if kind == "gan":
        from backend.registry import generator_state_shapes

        check_state_shapes(generator_state_shapes(cfg), shapes, source, f"config {cfg.name!r}", dtypes)
    elif kind in ("diffusion-uncond", "diffusion-cond", "depth"):
        from backend.diffusion.unet import UNet

        check_state_shapes(meta_state_shapes(lambda: UNet(cfg)), shapes, source, "its UNet config", dtypes)
    elif kind == "encoder":
        from backend.invert.encoder import PhotoEncoder

        check_state_shapes(meta_state_shapes(lambda: PhotoEncoder(cfg)), shapes, source, "its encoder config",
                           dtypes)
    elif kind == "avatar":
        _check_avatar_tensors(cfg, table, source)
    elif kind == "directions":
        for key, (shape, _) in table.items():
            if not key.startswith("direction.") or len(shape) != 1:
                raise Aware3DError(f"{source}: {key} {shape} is not a direction vector", "re-learn the directions")


def check_tensor_layout(path: str | os.PathLike[str]) -> ModelHeader:
    """The header, and the file's tensor names, shapes and types against what its config describes, without
    reading any tensor data (loaders call this before allocating a network). Returns the header."""
    p = Path(path)
    with _open(p) as f:
        header, cfg = _read_checked_header(f, p)
        _check_tensor_table(header, cfg, _tensor_table(f, p.name), p.name)
    return header


def validate_model_file(path: str | os.PathLike[str], allow_nonfinite: bool | None = None) -> ModelHeader:
    """Everything a loader relies on, checked without building the network: the header (limits, fields),
    the config through its dataclass, tensor names/shapes/types against the config, and every tensor's
    values (no NaN or inf unless ``allow_nonfinite``). Returns the header; raises one Aware3DError line.

    An official ``.pkl`` goes through the safe converter (which checks the same) and is described as the
    ``gan`` header it would get. Used before a file is accepted into the models folder; also the fuzz
    suite's entry point for one model file.
    """
    p = Path(path)
    if p.suffix.lower() == ".pkl":
        from backend.checkpoints.convert import convert_official_pickle

        cfg, _, provenance = convert_official_pickle(p, allow_nonfinite=allow_nonfinite)
        return ModelHeader(kind="gan", config=cfg.to_dict(), provenance=provenance)
    allow = _resolve_allow(allow_nonfinite)
    with _open(p) as f:
        header, cfg = _read_checked_header(f, p)
        table = _tensor_table(f, p.name)
        _check_tensor_table(header, cfg, table, p.name)
        data_prefixes = NONFINITE_DATA_PREFIXES.get(header.kind, ())
        for key in table:  # one tensor at a time: memory stays at the largest tensor
            check_finite(f.get_tensor(key), key, p.name, allow or key.startswith(data_prefixes))
    return header


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
