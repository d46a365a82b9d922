"""Safe reader for official EG3D / Mimic3D training snapshots (``network-snapshot-*.pkl``).

Why this module exists: an official snapshot is one plain pickle of ``{'training_set_kwargs', 'G', 'D',
'G_ema', 'augment_pipe'}`` (Mimic3D adds ``'D_patch'``). The official loader reconstructs every network
class by *executing* the Python source text stored inside the pickle (``torch_utils.persistence``), and it
rebuilds tensors with ``torch.storage._load_from_bytes``, which runs an unrestricted ``torch.load`` on bytes
taken from the file. Opening a downloaded snapshot that way runs whatever code the file carries.

This reader treats the file as data only:

* the outer pickle is read by an unpickler whose ``find_class`` resolves a short whitelist of names to
  Aware3D's own harmless replacements (never to the real function that the name points to) and refuses
  everything else with :class:`~backend.errors.UnsafeCheckpointError`;
* a persistent class record becomes a :class:`PersistentStandIn` that keeps the object state and only a
  SHA-256 of the embedded module source (the text stays readable for inspection but is never compiled);
* ordinary ``training.*`` / ``torch.nn.modules.*`` objects become :class:`GenericStandIn` objects that just
  remember their class name and state;
* each tensor storage blob (the legacy ``torch.save`` format) is parsed by hand: its small inner pickles go
  through a second unpickler that only knows torch storage type names, and the raw bytes are copied into a
  flat tensor; tensors are then views (``as_strided``) of those flat tensors.
* both unpicklers are bounded (:class:`_BoundedUnpickler`): a damaged or crafted file cannot make them
  allocate more than a small multiple of its own size, however its lengths, memo indices or repeated calls
  are set, and every malformed record is one :class:`~backend.errors.Aware3DError` line.

No EG3D / Mimic3D / ``torch_utils`` / ``dnnlib`` code is imported or needed. See
``shared/spec/eg3d_compat.md`` §1 for the format facts this is written from.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import math
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from backend.errors import Aware3DError, UnsafeCheckpointError

__all__ = [
    "EasyDict",
    "GenericStandIn",
    "PersistentStandIn",
    "Snapshot",
    "StandIn",
    "generator_info",
    "module_state_dict",
    "named_modules",
    "parse_legacy_storage_blob",
    "read_snapshot",
    "to_plain",
]

# Facts about the formats (spec §1.2, §1.3).
PERSISTENCE_VERSION = 6
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage type names that may appear in a legacy storage blob, and the element type they stand for.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}

# The persistence record carries no module name, only the class name and the module's source text; this
# table (spec §1.2) says where the official code defines each persistent class, for reports only.
_KNOWN_PERSISTENT_MODULES: dict[str, str] = {
    "TriPlaneGenerator": "training.triplane",
    "DualTriPlaneGenerator": "training.dual_triplane",
    "Generator": "training.networks_stylegan2",
    "MappingNetwork": "training.networks_stylegan2",
    "SynthesisNetwork": "training.networks_stylegan2",
    "SynthesisBlock": "training.networks_stylegan2",
    "SynthesisLayer": "training.networks_stylegan2",
    "ToRGBLayer": "training.networks_stylegan2",
    "FullyConnectedLayer": "training.networks_stylegan2",
    "Conv2dLayer": "training.networks_stylegan2",
    "DiscriminatorBlock": "training.networks_stylegan2",
    "DiscriminatorEpilogue": "training.networks_stylegan2",
    "MinibatchStdLayer": "training.networks_stylegan2",
    "Aware3DBlock": "training.networks_stylegan2",
    "SR3DBlock": "training.networks_stylegan2",
    "SuperresolutionHybrid8XDC": "training.superresolution",
    "SuperresolutionHybrid8X": "training.superresolution",
    "SuperresolutionHybrid4X": "training.superresolution",
    "SuperresolutionHybrid2X": "training.superresolution",
    "SynthesisBlockNoUp": "training.superresolution",
    "DualDiscriminator": "training.dual_discriminator",
    "AugmentPipe": "training.augment",
}

_SNAPSHOT_KEYS = ("training_set_kwargs", "G", "D", "G_ema", "D_patch", "augment_pipe")

_HINT_UNSAFE = (
    "an official EG3D/Mimic3D snapshot never needs this; the file may have been tampered with, so do not "
    "open it with the original EG3D code either"
)
_HINT_CORRUPT = (
    "download the snapshot again: official EG3D files come from NGC, Mimic3D files from Google Drive"
)
_HINT_STATE_DICT = "load state dicts with the state-dict importer; this reader takes network-snapshot-*.pkl"
_HINT_NOT_SNAPSHOT = "pass an official EG3D/Mimic3D training snapshot, a network-snapshot-*.pkl holding G_ema"

_MAX_PLAIN_DEPTH = 64
# A file can make a small structure look huge by sharing it (the memo): walks over its data are bounded.
_MAX_PLAIN_VALUES = 1_000_000  # values one to_plain / generator_info call converts
_MAX_MODULES = 100_000  # sub-modules one walk visits (EG3D's G_ema has a few hundred)
_MAX_MODULE_DEPTH = 64  # nesting of sub-modules (EG3D's: 6)
_MAX_BROADCAST = 1024  # a tensor may have at most this many times the elements of its storage
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _python3_name(module: str, name: str, protocol: int | None) -> tuple[str, str]:
    """The global a pickle's ``module name`` pair stands for, as Python 3's unpickler resolves it.

    Why: for protocols 0-2 Python 3 writes some globals under their Python 2 names (``subprocess.Popen`` is
    stored as ``commands.Popen``, ``builtins`` as ``__builtin__``) and maps them back when reading. Doing the
    same here lets the whitelist see, and the refusal name, what the file actually asks for. Whatever the
    protocol, the two module renames the whitelist relies on are applied, as before.
    """
    if protocol is not None and protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return _PY2_MODULES.get(module, module), name


# --------------------------------------------------------------------------------------------------------
# Stand-in objects


class _Sealed(type):
    """Metaclass of the classes a file may name: their attributes cannot be changed after creation.

    A BUILD opcode with "slot state" calls ``setattr`` on whatever object the file points it at; for a class
    object that would rewrite the class for the whole process (for example its ``__setstate__``).
    """

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"cannot set attributes of {cls.__name__}")

    def __delattr__(cls, name: str) -> None:
        raise TypeError(f"cannot delete attributes of {cls.__name__}")


class StandIn:
    """Common shape of everything that replaces an object of the original code.

    ``module`` and ``class_name`` say what the original object was; ``state`` is the object's ``__dict__``
    as stored in the file (for an ``nn.Module``: ``_parameters``, ``_buffers``, ``_modules``, hook dicts and
    plain attributes). Nothing here can run: a stand-in has no behaviour beyond holding data.
    """

    module: str | None
    class_name: str
    state: dict[Any, Any]

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{self.class_name}" if self.module else self.class_name

    def get(self, name: str, default: Any = None) -> Any:
        """One entry of the stored state (an attribute of the original object)."""
        return self.state.get(name, default)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.qualified_name}>"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # copy/deepcopy of a loaded stand-in: rebuild from the attribute dict directly, so that the
        # unpickling hooks below (which interpret data coming from a file) are not involved.
        return (_restore_standin, (type(self), dict(self.__dict__)))


def _restore_standin(cls: type[StandIn], attributes: dict[str, Any]) -> StandIn:
    obj = object.__new__(cls)
    obj.__dict__.update(attributes)
    return obj


class PersistentStandIn(StandIn):
    """Replaces an instance of an official ``@persistent_class`` (the generator and its sub-networks).

    The record's module source is what the official loader would execute; here it is only hashed and kept
    as an immutable string for inspection (``module_src``), so a reviewer can compare code versions.
    """

    def __init__(self, class_name: str, module_src: str, state: dict[Any, Any]) -> None:
        self.class_name = class_name
        # The record does not say which module defined the class; report the official one if known.
        self.module = _KNOWN_PERSISTENT_MODULES.get(class_name)
        self.state = state
        self._module_src = module_src
        self.module_src_sha256 = hashlib.sha256(module_src.encode("utf-8", "surrogatepass")).hexdigest()
        self.module_src_len = len(module_src)

    @property
    def module_src(self) -> str:
        """The embedded source text, read-only. Never pass it to exec/compile/import."""
        return self._module_src

    def __setstate__(self, state: Any) -> None:
        # The persistence record carries the whole state inside ``meta``; a BUILD on top of it never
        # happens in an official file.
        raise Aware3DError(
            f"unexpected extra state for persistent object {self.class_name}", hint=_HINT_CORRUPT
        )


class GenericStandIn(StandIn, metaclass=_Sealed):
    """Replaces an object of a non-persistent class pickled by reference.

    Examples: ``training.triplane.OSGDecoder``, ``training.volumetric_rendering.renderer.ImportanceRenderer``
    and ``torch.nn.modules.container.Sequential``. A subclass is made per original name (so NEWOBJ works
    with an ordinary class); it accepts state through ``__setstate__`` (BUILD) and constructor arguments
    (REDUCE) without interpreting either.
    """

    original_module: ClassVar[str] = ""
    original_class: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> GenericStandIn:
        obj = super().__new__(cls)
        obj.module = cls.original_module
        obj.class_name = cls.original_class
        obj.state = {}
        obj.args = tuple(args)
        obj.extra_state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only reached when the pickle calls the class directly (REDUCE); the arguments are kept as data.
        self.args = tuple(args)

    def __setstate__(self, state: Any) -> None:
        slot_state = None
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(s is None or isinstance(s, dict) for s in state)
        ):
            state, slot_state = state
        if isinstance(state, dict):
            self.state.update(state)
        elif state is not None:
            self.extra_state = state
        if slot_state:
            self.state.update(slot_state)


class EasyDict(dict, metaclass=_Sealed):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict whose keys can also be read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:
        # A real EasyDict keeps everything in the dict items; an instance ``__dict__`` is ignored.
        return None


class _ObjectBase:
    """What ``builtins.object`` resolves to: only meaningful as the base argument of ``_reconstructor``."""

    __slots__ = ()  # a shared singleton: a BUILD from a file must not be able to attach anything to it

    def __repr__(self) -> str:
        return "<builtins.object (stand-in)>"


_OBJECT_BASE = _ObjectBase()


# The helper records below have no instance __dict__ and a __setstate__ that refuses, so that a BUILD
# opcode in a file cannot rewrite their fields.


@dataclass(frozen=True, slots=True)
class _StorageType:
    """What a storage type name in a legacy blob resolves to."""

    name: str
    dtype: torch.dtype

    def __setstate__(self, state: Any) -> None:
        raise Aware3DError("unexpected state for a storage type", hint=_HINT_CORRUPT)


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """Placeholder for a storage inside a legacy blob until its bytes have been read."""

    root_key: str
    view: tuple[str, int, int] | None

    def __setstate__(self, state: Any) -> None:
        raise Aware3DError("unexpected state for a storage reference", hint=_HINT_CORRUPT)


@dataclass(frozen=True, eq=False, slots=True)
class _LoadedStorage:
    """A storage read from a legacy blob: a flat, contiguous 1-D tensor of its elements."""

    flat: torch.Tensor
    type_name: str

    def __setstate__(self, state: Any) -> None:
        raise Aware3DError("unexpected state for a tensor storage", hint=_HINT_CORRUPT)


# --------------------------------------------------------------------------------------------------------
# Small helpers


def _printable(text: str, limit: int = 120) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_exc(exc: BaseException) -> str:
    message = str(exc).splitlines()[0] if str(exc) else ""
    return _printable(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 160)


def _is_dotted_identifier(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise Aware3DError(f"malformed tensor record ({what} is {type(value).__name__})", hint=_HINT_CORRUPT)
    return tuple(value)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Replacement for ``_codecs.encode``: pickle protocols below 3 store ``bytes`` as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Aware3DError("malformed byte string (only latin-1 text is expected)", hint=_HINT_CORRUPT)
    return text.encode("latin-1")


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    """Replacement for ``torch.Size``: a plain tuple of ints."""
    return _int_tuple(dims, "torch.Size")


def _numpy_scalar_function() -> Any:
    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core.multiarray import scalar  # type: ignore[import-not-found]
    else:
        from numpy.core.multiarray import scalar
    return scalar


_NP_SCALAR = _numpy_scalar_function()


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """Replacement for ``numpy.dtype``: only simple type codes such as ``'f8'``, never Python objects."""
    if not isinstance(spec, str) or len(spec) > 16:
        raise Aware3DError("malformed numpy dtype record", hint=_HINT_CORRUPT)
    # Always a fresh copy: a BUILD on the returned dtype must never reach numpy's shared float64 singleton.
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.hasobject:
        raise Aware3DError("a numpy object dtype is not expected in a snapshot", hint=_HINT_CORRUPT)
    return dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Replacement for numpy's scalar constructor: numeric scalars from raw bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise Aware3DError("malformed numpy scalar record", hint=_HINT_CORRUPT)
    if len(data) != dtype.itemsize:
        raise Aware3DError("malformed numpy scalar record (wrong byte count)", hint=_HINT_CORRUPT)
    return _NP_SCALAR(dtype, data)


def _reconstructor(cls: Any, base: Any, state: Any) -> GenericStandIn:
    """Replacement for ``copyreg._reconstructor`` (the protocol-0 style object reduce): a bare stand-in."""
    if not (isinstance(cls, type) and issubclass(cls, GenericStandIn)) or base is not _OBJECT_BASE:
        raise Aware3DError("malformed object record (copyreg._reconstructor)", hint=_HINT_CORRUPT)
    if state is not None:
        raise Aware3DError("malformed object record (copyreg._reconstructor state)", hint=_HINT_CORRUPT)
    return cls.__new__(cls)


def _tensor_signature(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.dtype, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


# --------------------------------------------------------------------------------------------------------
# A bounded unpickler


# Every REDUCE / BUILD / NEWOBJ may copy its arguments (a dict update, a bytes copy, a hash of source text),
# and a file can hand the same large argument to thousands of calls through the memo: the copying done for a
# file is budgeted at this many units (elements, characters, bytes) per byte of the file, plus a floor.
_COPY_BUDGET_PER_BYTE = 4
_COPY_BUDGET_FLOOR = 1 << 20
_IN_MEMORY_BYTES = 64 << 20


def _copy_cost(value: Any, depth: int = 2) -> int:
    """Roughly how many elements a call copies when given ``value`` (its size and its items' sizes)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 1
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) + 1 + (sum(_copy_cost(v, depth - 1) for v in value) if depth > 0 else 0)
    if isinstance(value, dict):
        return len(value) + 1 + (sum(_copy_cost(v, depth - 1) for v in value.values()) if depth > 0 else 0)
    return 1


class _GuardedFile:
    """The pickle's bytes, read so that no read asks for more than is left.

    Why: counted opcodes (BINBYTES8, BINUNICODE8, FRAME, ...) give their length before their data; a damaged
    or crafted length must end in "truncated", not in an allocation of that many bytes.
    """

    def __init__(self, file: Any, size: int) -> None:
        self._file = file
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._left
        if n > self._left:
            raise pickle.UnpicklingError("pickle data was truncated")
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._file.readline(self._left)
        self._left -= len(line)
        return line


class _BoundedUnpickler(pickle._Unpickler):
    """Python's own unpickler (the pure-Python one), bounded in what a file can make it allocate.

    Why not the C unpickler: it sizes its memo table by the largest memo index a file names (a 5-byte
    LONG_BINPUT asks for gigabytes) and allocates a BYTEARRAY8's announced length before reading it; neither
    can be checked from outside. Here the memo is a dict, reads are limited to the bytes that are left
    (:class:`_GuardedFile`), protocol-5 buffers (never in a snapshot) are refused, and the arguments of every
    call the file makes are charged against a copy budget proportional to the file's size.
    """

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, size: int, source: str) -> None:
        # An in-memory stream never allocates more than it holds on a long read: only files need the guard.
        super().__init__(file if isinstance(file, io.BytesIO) else _GuardedFile(file, size))
        self._source = source
        self._budget = _COPY_BUDGET_PER_BYTE * size + _COPY_BUDGET_FLOOR

    def _charge(self, *values: Any) -> None:
        self._budget -= sum(_copy_cost(v) for v in values)
        if self._budget < 0:
            raise Aware3DError(
                f"{self._source} asks to copy far more data than it holds (a crafted or corrupt pickle)",
                hint=_HINT_CORRUPT,
            )

    def _load_reduce(self) -> None:
        self._charge(self.stack[-1])
        _PY_DISPATCH[pickle.REDUCE[0]](self)

    def _load_build(self) -> None:
        self._charge(self.stack[-1])
        _PY_DISPATCH[pickle.BUILD[0]](self)

    def _load_newobj(self) -> None:
        if not isinstance(self.stack[-2], type):
            raise pickle.UnpicklingError("NEWOBJ class argument isn't a type object")
        self._charge(self.stack[-1])
        _PY_DISPATCH[pickle.NEWOBJ[0]](self)

    def _load_newobj_ex(self) -> None:
        if not isinstance(self.stack[-3], type):
            raise pickle.UnpicklingError("NEWOBJ_EX class argument isn't a type object")
        self._charge(self.stack[-2], self.stack[-1])
        _PY_DISPATCH[pickle.NEWOBJ_EX[0]](self)

    def _load_obj(self) -> None:
        self._charge(self.stack)  # OBJ and INST call a class with the items since the last MARK
        _PY_DISPATCH[pickle.OBJ[0]](self)

    def _load_inst(self) -> None:
        self._charge(self.stack)
        _PY_DISPATCH[pickle.INST[0]](self)

    def _refuse_buffers(self) -> None:
        raise Aware3DError(
            f"{self._source} uses pickle protocol 5 buffers, which an EG3D/Mimic3D snapshot never does",
            hint=_HINT_CORRUPT,
        )


_PY_DISPATCH = pickle._Unpickler.dispatch
_BoundedUnpickler.dispatch.update({
    pickle.REDUCE[0]: _BoundedUnpickler._load_reduce,
    pickle.BUILD[0]: _BoundedUnpickler._load_build,
    pickle.NEWOBJ[0]: _BoundedUnpickler._load_newobj,
    pickle.NEWOBJ_EX[0]: _BoundedUnpickler._load_newobj_ex,
    pickle.OBJ[0]: _BoundedUnpickler._load_obj,
    pickle.INST[0]: _BoundedUnpickler._load_inst,
    pickle.BYTEARRAY8[0]: _BoundedUnpickler._refuse_buffers,
    pickle.NEXT_BUFFER[0]: _BoundedUnpickler._refuse_buffers,
    pickle.READONLY_BUFFER[0]: _BoundedUnpickler._refuse_buffers,
})


# --------------------------------------------------------------------------------------------------------
# Legacy (non-zip) torch.save blob of one storage


class _StorageBlobUnpickler(_BoundedUnpickler):
    """Reads the small pickles inside a legacy storage blob; only storage type names may be imported."""

    def __init__(self, file: io.BytesIO, source: str, *, allow_storages: bool, left: int) -> None:
        super().__init__(file, left, f"a tensor storage inside {source}")
        self._outer_source = source
        self._allow_storages = allow_storages
        self.roots: dict[str, tuple[_StorageType, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name, self.proto)
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
            return _StorageType(name, torch.uint8)
        raise UnsafeCheckpointError(
            f"refused to load '{_printable(f'{module}.{name}')}' from a tensor storage inside "
            f"{self._outer_source}: not on the whitelist of an EG3D/Mimic3D snapshot",
            hint=_HINT_UNSAFE,
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        where = self._source
        if not self._allow_storages:
            raise Aware3DError(f"{where} is corrupt (unexpected storage reference)", hint=_HINT_CORRUPT)
        if not isinstance(pid, tuple) or len(pid) not in (5, 6):
            raise Aware3DError(f"{where} is corrupt (malformed storage reference)", hint=_HINT_CORRUPT)
        typename, storage_type, key, location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        typename, key, location = (
            v.decode("latin-1") if isinstance(v, bytes) else v for v in (typename, key, location)
        )
        if (
            typename != "storage"
            or not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(location, str)
            or not isinstance(numel, int)
            or isinstance(numel, bool)
            or numel < 0
        ):
            raise Aware3DError(f"{where} is corrupt (malformed storage reference)", hint=_HINT_CORRUPT)
        known = self.roots.setdefault(key, (storage_type, numel))
        if known != (storage_type, numel):
            raise Aware3DError(f"{where} is corrupt (storage {key!r} described twice)", hint=_HINT_CORRUPT)
        if view is not None and not (
            isinstance(view, tuple)
            and len(view) == 3
            and isinstance(view[0], str)
            and all(type(v) is int and v >= 0 for v in view[1:])
            and view[1] + view[2] <= numel
        ):
            raise Aware3DError(f"{where} is corrupt (malformed storage view)", hint=_HINT_CORRUPT)
        return _StorageRef(key, view)


def _flat_from_bytes(data: memoryview, dtype: torch.dtype) -> torch.Tensor:
    if len(data) == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _parse_legacy_blob(blob: bytes, source: str) -> _LoadedStorage:
    """Parse one legacy ``torch.save`` blob of a single storage (spec §1.3) without torch.load.

    Layout: pickle(magic number), pickle(1001), pickle(sys_info), pickle(object with persistent ids
    ('storage', type, key, location, numel, view_metadata)), pickle(list of keys), then per key an 8-byte
    little-endian element count followed by the raw little-endian elements.
    """
    where = f"a tensor storage inside {source}"
    if sys.byteorder != "little":
        raise Aware3DError(
            "reading snapshots needs a little-endian machine", hint="use an x86-64 or ARM64 computer"
        )
    f = io.BytesIO(blob)

    def load(what: str, *, allow_storages: bool = False) -> tuple[Any, _StorageBlobUnpickler]:
        unpickler = _StorageBlobUnpickler(f, source, allow_storages=allow_storages, left=len(blob) - f.tell())
        try:
            return unpickler.load(), unpickler
        except Aware3DError:
            raise
        except Exception as exc:
            raise Aware3DError(
                f"{where} is corrupt ({what}: {_short_exc(exc)})", hint=_HINT_CORRUPT
            ) from None

    magic, _ = load("magic number")
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise Aware3DError(
            f"{where} is not a legacy torch.save blob (wrong magic number)", hint=_HINT_CORRUPT
        )
    version, _ = load("protocol version")
    if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
        raise Aware3DError(
            f"{where} uses torch.save protocol {_printable(repr(version), 40)}, "
            f"expected {LEGACY_PROTOCOL_VERSION}",
            hint=_HINT_CORRUPT,
        )
    sys_info, _ = load("sys_info")
    if not isinstance(sys_info, dict):
        raise Aware3DError(f"{where} is corrupt (sys_info is not a dict)", hint=_HINT_CORRUPT)
    if sys_info.get("little_endian", True) is not True:
        raise Aware3DError(
            f"{where} was written on a big-endian machine, which is not supported", hint=_HINT_CORRUPT
        )
    obj, object_unpickler = load("storage record", allow_storages=True)
    keys, _ = load("storage key list")
    if not isinstance(obj, _StorageRef):
        raise Aware3DError(f"{where} holds a {type(obj).__name__}, not a single storage", hint=_HINT_CORRUPT)
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise Aware3DError(f"{where} is corrupt (storage key list)", hint=_HINT_CORRUPT)
    keys = [k.decode("latin-1") if isinstance(k, bytes) else k for k in keys]
    roots = object_unpickler.roots
    if len(set(keys)) != len(keys) or set(keys) != set(roots):
        raise Aware3DError(f"{where} is corrupt (storage keys do not match the record)", hint=_HINT_CORRUPT)

    view = memoryview(blob)
    pos = f.tell()
    flats: dict[str, torch.Tensor] = {}
    for key in keys:
        storage_type, numel = roots[key]
        element_size = storage_type.dtype.itemsize
        if pos + 8 > len(blob):
            raise Aware3DError(
                f"{where} is truncated (storage {key!r} has no size field)", hint=_HINT_CORRUPT
            )
        # The 8-byte field counts *elements* (torch's legacy reader multiplies it by the element size).
        count = int.from_bytes(blob[pos : pos + 8], "little", signed=True)
        pos += 8
        if count != numel:
            unit = (
                " (that is its size in bytes, not in elements)"
                if count == numel * element_size != numel
                else ""
            )
            raise Aware3DError(
                f"{where} is corrupt: storage {key!r} announces {count} elements but its record says "
                f"{numel} {storage_type.name} elements{unit}",
                hint=_HINT_CORRUPT,
            )
        nbytes = count * element_size
        if pos + nbytes > len(blob):
            raise Aware3DError(
                f"{where} is truncated (storage {key!r} needs {nbytes} bytes, {len(blob) - pos} left)",
                hint=_HINT_CORRUPT,
            )
        flats[key] = _flat_from_bytes(view[pos : pos + nbytes], storage_type.dtype)
        pos += nbytes
    if pos != len(blob):
        raise Aware3DError(
            f"{where} is corrupt ({len(blob) - pos} unexpected trailing bytes)", hint=_HINT_CORRUPT
        )

    storage_type = roots[obj.root_key][0]
    flat = flats[obj.root_key]
    if obj.view is not None:
        _, offset, size = obj.view
        flat = flat[offset : offset + size]
    return _LoadedStorage(flat, storage_type.name)


def parse_legacy_storage_blob(blob: bytes, *, source: str = "<bytes>") -> torch.Tensor:
    """Elements of a legacy ``torch.save`` storage blob as a flat 1-D tensor (no code runs).

    This is what ``torch.storage._load_from_bytes(blob)`` would have produced, read without ``torch.load``.
    Raises :class:`UnsafeCheckpointError` for any import other than a storage type, :class:`Aware3DError`
    for a corrupt blob.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise Aware3DError(f"a tensor storage inside {source} is not a byte string", hint=_HINT_CORRUPT)
    return _parse_legacy_blob(bytes(blob), source).flat


# --------------------------------------------------------------------------------------------------------
# The snapshot unpickler


class _SnapshotUnpickler(_BoundedUnpickler):
    """Unpickler for the outer snapshot pickle with an explicit whitelist (spec §1.4).

    Every whitelisted name maps to a replacement defined in this module, never to the original object.
    """

    def __init__(self, file: Any, source: str, size: int) -> None:
        super().__init__(file, size, source)
        self._classes: dict[tuple[str, str], type[GenericStandIn]] = {}
        self._tensors: list[tuple[torch.Tensor, tuple[Any, ...]]] = []
        self._tensor_ids: set[int] = set()
        self._fixed: dict[tuple[str, str], Any] = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._reconstruct_persistent_obj,
            ("dnnlib.util", "EasyDict"): EasyDict,
            ("dnnlib", "EasyDict"): EasyDict,
            ("collections", "OrderedDict"): OrderedDict,
            ("torch", "Size"): self._torch_size,
            ("numpy.core.multiarray", "scalar"): self._numpy_scalar,
            ("numpy._core.multiarray", "scalar"): self._numpy_scalar,
            ("numpy", "dtype"): self._numpy_dtype,
            ("copyreg", "_reconstructor"): self._reconstructor,
            ("builtins", "object"): _OBJECT_BASE,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("_codecs", "encode"): self._latin1_encode,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter_with_state,
            ("torch.storage", "_load_from_bytes"): self._load_from_bytes,
        }

    # -- whitelist -------------------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 written by Python 3 spell some globals the Python 2 way (fix_imports).
        module, name = _python3_name(module, name, self.proto)
        replacement = self._fixed.get((module, name))
        if replacement is not None:
            return replacement
        if (
            _is_dotted_identifier(module)
            and name.isidentifier()
            and not name.startswith("__")
            and (module == "training" or module.startswith(("training.", "torch.nn.modules.")))
        ):
            return self._standin_class(module, name)
        raise UnsafeCheckpointError(
            f"refused to load '{_printable(f'{module}.{name}')}' from {self._source}: "
            "not on the whitelist of an EG3D/Mimic3D snapshot",
            hint=_HINT_UNSAFE,
        )

    def persistent_load(self, pid: Any) -> Any:
        raise Aware3DError(
            f"{self._source} is not an EG3D/Mimic3D snapshot (it uses pickle persistent ids)",
            hint=_HINT_NOT_SNAPSHOT,
        )

    def _standin_class(self, module: str, name: str) -> type[GenericStandIn]:
        cls = self._classes.get((module, name))
        if cls is None:
            cls = _Sealed(
                name,
                (GenericStandIn,),
                {
                    "__module__": __name__,
                    "__qualname__": name,
                    "original_module": module,
                    "original_class": name,
                },
            )
            self._classes[(module, name)] = cls
        return cls

    # -- replacements ------------------------------------------------------------------------------------
    # Every replacement handed to the file is a bound method (or a sealed class, or a builtin type): a
    # BUILD opcode cannot set attributes on those, so a file cannot alter them for later reads.

    def _torch_size(self, dims: Any = ()) -> tuple[int, ...]:
        return _torch_size(dims)

    def _numpy_scalar(self, dtype: Any, data: Any = None) -> Any:
        return _numpy_scalar(dtype, data)

    def _numpy_dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        return _numpy_dtype(spec, align, copy)

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> GenericStandIn:
        return _reconstructor(cls, base, state)

    def _latin1_encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        return _latin1_encode(text, encoding)

    def _reconstruct_persistent_obj(self, meta: Any) -> PersistentStandIn:
        """Replacement for the official reconstruct function: records the object, executes nothing."""
        if not isinstance(meta, dict):
            raise Aware3DError(f"{self._source} has a malformed persistent-class record", hint=_HINT_CORRUPT)
        kind, version = meta.get("type"), meta.get("version")
        if kind != "class" or type(version) is not int or version != PERSISTENCE_VERSION:
            raise Aware3DError(
                f"{self._source} has a persistent-class record of type {_printable(repr(kind), 40)} version "
                f"{_printable(repr(version), 40)}; only type 'class' version {PERSISTENCE_VERSION} "
                "(EG3D/Mimic3D) is supported",
                hint="the snapshot was written by other code; convert it with that code's own tools",
            )
        class_name, module_src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
        if not isinstance(class_name, str) or not class_name.isidentifier():
            raise Aware3DError(
                f"{self._source} has a persistent-class record without a class name", hint=_HINT_CORRUPT
            )
        if not isinstance(module_src, str):
            raise Aware3DError(
                f"{self._source} has a persistent-class record for {class_name} without module source",
                hint=_HINT_CORRUPT,
            )
        if not isinstance(state, dict):
            raise Aware3DError(
                f"{self._source} has a persistent-class record for {class_name} without a state dict",
                hint=_HINT_CORRUPT,
            )
        return PersistentStandIn(class_name, module_src, dict(state))

    def _load_from_bytes(self, blob: Any) -> _LoadedStorage:
        """Replacement for ``torch.storage._load_from_bytes`` (which would run an unrestricted torch.load)."""
        if not isinstance(blob, (bytes, bytearray)):
            raise Aware3DError(
                f"a tensor storage inside {self._source} is not a byte string", hint=_HINT_CORRUPT
            )
        return _parse_legacy_blob(bytes(blob), self._source)

    def _make_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
        if not isinstance(storage, _LoadedStorage):
            raise Aware3DError(
                f"{self._source} has a tensor record without a tensor storage", hint=_HINT_CORRUPT
            )
        size = _int_tuple(size, "size")
        stride = _int_tuple(stride, "stride")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or len(size) != len(stride):
            raise Aware3DError(f"{self._source} has a malformed tensor record", hint=_HINT_CORRUPT)
        available = storage.flat.numel()
        numel = math.prod(size)
        if numel > max(available, 1) * _MAX_BROADCAST:
            # Only zero strides can give more elements than the storage holds; a huge broadcast view
            # would make every later copy or .tolist() exhaust memory.
            raise Aware3DError(
                f"{self._source} has an implausibly large broadcast tensor ({numel} elements)",
                hint=_HINT_CORRUPT,
            )
        if numel > 0:
            needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
        else:
            needed = offset
        if needed > available:
            raise Aware3DError(
                f"{self._source} has a tensor that reaches past the end of its storage "
                f"({needed} > {available} elements)",
                hint=_HINT_CORRUPT,
            )
        flat = storage.flat
        tensor = torch.as_strided(flat, size, stride, flat.storage_offset() + offset)
        self._tensors.append((tensor, _tensor_signature(tensor)))
        self._tensor_ids.add(id(tensor))
        return tensor

    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
        return self._make_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor_v2(
        self,
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> torch.Tensor:
        # requires_grad and the (always empty) hook dict are dropped; conj/neg bits are not used by GANs.
        if metadata and not (isinstance(metadata, dict) and not any(metadata.values())):
            raise Aware3DError(
                f"{self._source} has a tensor with unsupported metadata (conjugate/negative bit)",
                hint=_HINT_CORRUPT,
            )
        return self._make_tensor(storage, storage_offset, size, stride)

    def _rebuild_parameter(
        self, data: Any, requires_grad: Any = False, backward_hooks: Any = None
    ) -> torch.Tensor:
        if not isinstance(data, torch.Tensor) or id(data) not in self._tensor_ids:
            raise Aware3DError(f"{self._source} has a malformed parameter record", hint=_HINT_CORRUPT)
        return data

    def _rebuild_parameter_with_state(
        self, data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
    ) -> torch.Tensor:
        return self._rebuild_parameter(data, requires_grad, backward_hooks)

    # -- after loading -----------------------------------------------------------------------------------

    def verify_tensors(self) -> None:
        """Refuse a file that changed a tensor after building it (a BUILD opcode applied to a tensor)."""
        for tensor, signature in self._tensors:
            if (
                _tensor_signature(tensor) != signature
                or tensor.requires_grad
                or tensor.grad is not None
                or tensor._backward_hooks is not None
            ):
                raise UnsafeCheckpointError(
                    f"{self._source} modifies a tensor after building it (an official snapshot never does)",
                    hint=_HINT_UNSAFE,
                )


# --------------------------------------------------------------------------------------------------------
# Public API


@dataclass
class Snapshot:
    """The top-level dict of an official snapshot, with networks as stand-ins (nothing executable)."""

    path: Path
    G_ema: StandIn
    G: StandIn | None = None
    D: StandIn | None = None
    training_set_kwargs: dict[str, Any] | None = None
    augment_pipe: StandIn | None = None
    D_patch: StandIn | None = None  # Mimic3D's patch discriminator (3d stage)
    keys: tuple[str, ...] = ()  # top-level keys in file order
    extra: dict[str, Any] = field(default_factory=dict)  # any other top-level entries

    @property
    def is_mimic3d(self) -> bool:
        return self.D_patch is not None or self.G_ema.class_name == "DualTriPlaneGenerator"


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read an official EG3D / Mimic3D ``.pkl`` snapshot as data, never running code from it.

    Raises :class:`UnsafeCheckpointError` when the file asks for anything outside the whitelist (the
    message names the refused global) and :class:`Aware3DError` for a missing, truncated, corrupt or
    wrong kind of file.
    """
    path = Path(path)
    name = path.name or str(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise Aware3DError(f"checkpoint not found: {path}", hint="check the path") from None
    except OSError as exc:
        raise Aware3DError(
            f"cannot open checkpoint {path}: {_short_exc(exc)}", hint="check the path"
        ) from None
    with f:
        head = f.read(2)
        if not head:
            raise Aware3DError(f"{name} is empty", hint=_HINT_CORRUPT)
        if head == b"PK":
            raise Aware3DError(
                f"{name} is a zip archive (a torch.save / TorchScript file), not an EG3D/Mimic3D snapshot",
                hint=_HINT_STATE_DICT,
            )
        if len(head) < 2 or head[0] != pickle.PROTO[0] or not 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
            raise Aware3DError(
                f"{name} is not a Python pickle (protocol 2 or newer)", hint=_HINT_NOT_SNAPSHOT
            )
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        # Small files are read from memory (faster in the pure-Python unpickler); large ones stream.
        unpickler = _SnapshotUnpickler(io.BytesIO(f.read()) if size <= _IN_MEMORY_BYTES else f, name, size)
        try:
            data = unpickler.load()
        except Aware3DError:
            raise
        except (EOFError, pickle.UnpicklingError) as exc:
            if isinstance(exc, EOFError) or "truncated" in str(exc):
                raise Aware3DError(
                    f"{name} is truncated (the file ends in the middle of the data)", hint=_HINT_CORRUPT
                ) from None
            raise Aware3DError(f"{name} is corrupt ({_short_exc(exc)})", hint=_HINT_CORRUPT) from None
        except Exception as exc:
            raise Aware3DError(
                f"{name} is corrupt or not an EG3D/Mimic3D snapshot ({_short_exc(exc)})", hint=_HINT_CORRUPT
            ) from None
        unpickler.verify_tensors()
    return _to_snapshot(data, path, name)


def _to_snapshot(data: Any, path: Path, name: str) -> Snapshot:
    if type(data) is int and data == LEGACY_MAGIC_NUMBER:
        raise Aware3DError(
            f"{name} is a legacy torch.save file, not an EG3D/Mimic3D training snapshot",
            hint=_HINT_STATE_DICT,
        )
    if not isinstance(data, dict):
        raise Aware3DError(
            f"{name} holds a pickled {type(data).__name__}, not an EG3D/Mimic3D snapshot dict",
            hint=_HINT_NOT_SNAPSHOT,
        )
    if not all(isinstance(k, str) for k in data):
        raise Aware3DError(f"{name} is not an EG3D/Mimic3D snapshot (non-text keys)", hint=_HINT_NOT_SNAPSHOT)
    if "G_ema" not in data:
        shown = ", ".join(_printable(k, 30) for k in list(data)[:8]) or "none"
        raise Aware3DError(
            f"{name} has no 'G_ema' generator (top-level keys: {shown})", hint=_HINT_NOT_SNAPSHOT
        )
    networks: dict[str, StandIn | None] = {}
    for key in ("G_ema", "G", "D", "D_patch", "augment_pipe"):
        value = data.get(key)
        if value is not None and not isinstance(value, StandIn):
            raise Aware3DError(
                f"{name} has a {type(value).__name__} value under {key!r} where a network was expected",
                hint=_HINT_NOT_SNAPSHOT,
            )
        networks[key] = value
    if networks["G_ema"] is None:
        raise Aware3DError(f"{name} has an empty 'G_ema' entry", hint=_HINT_NOT_SNAPSHOT)
    training_set_kwargs = data.get("training_set_kwargs")
    if training_set_kwargs is not None:
        if not isinstance(training_set_kwargs, dict):
            raise Aware3DError(f"{name} has malformed training_set_kwargs", hint=_HINT_NOT_SNAPSHOT)
        training_set_kwargs = to_plain(training_set_kwargs)
    return Snapshot(
        path=path,
        G_ema=networks["G_ema"],  # type: ignore[arg-type]
        G=networks["G"],
        D=networks["D"],
        training_set_kwargs=training_set_kwargs,
        augment_pipe=networks["augment_pipe"],
        D_patch=networks["D_patch"],
        keys=tuple(data),
        extra={k: v for k, v in data.items() if k not in _SNAPSHOT_KEYS},
    )


def _mapping_entry(standin: StandIn, name: str, path: str) -> Mapping[Any, Any]:
    value = standin.state.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Aware3DError(
            f"module {path or '<root>'} ({standin.class_name}) has a malformed {name}", hint=_HINT_CORRUPT
        )
    return value


def named_modules(standin: StandIn, *, prefix: str = "") -> Iterator[tuple[str, StandIn]]:
    """(dotted path, stand-in) for a module and all its sub-modules, parents first, in ``_modules`` order.

    A module shared under several names is visited under each (as ``state_dict`` does), so the walk is
    bounded: at most ``_MAX_MODULES`` visits and ``_MAX_MODULE_DEPTH`` levels (a file could otherwise share
    modules so that the paths multiply exponentially).
    """
    stack: list[tuple[str, StandIn, frozenset[int]]] = [(prefix, standin, frozenset())]
    visits = 0
    while stack:
        path, node, ancestors = stack.pop()
        if id(node) in ancestors:
            raise Aware3DError(f"module {path} contains itself", hint=_HINT_CORRUPT)
        visits += 1
        if visits > _MAX_MODULES or len(ancestors) > _MAX_MODULE_DEPTH:
            raise Aware3DError(
                f"the network has more than {_MAX_MODULES} sub-modules or is nested more than "
                f"{_MAX_MODULE_DEPTH} deep (an official snapshot has a few hundred, 6 deep)",
                hint=_HINT_CORRUPT,
            )
        yield path, node
        children = _mapping_entry(node, "_modules", path)
        inner = ancestors | {id(node)}
        pending = []
        for child_name, child in children.items():
            if child is None:
                continue
            child_path = f"{path}.{child_name}" if path else str(child_name)
            if not isinstance(child, StandIn):
                raise Aware3DError(
                    f"sub-module {child_path} is a {type(child).__name__}, not a module", hint=_HINT_CORRUPT
                )
            pending.append((child_path, child, inner))
        stack.extend(reversed(pending))


def module_state_dict(standin: StandIn, *, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The ``state_dict()`` the original module would return: same names, same order, same tensors.

    Walks ``_parameters``, ``_buffers`` and ``_modules`` recursively exactly as ``nn.Module.state_dict``
    does: ``None`` entries and buffers named in ``_non_persistent_buffers_set`` are skipped.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for path, node in named_modules(standin):
        key_prefix = f"{prefix}{path}." if path else prefix
        non_persistent = node.state.get("_non_persistent_buffers_set") or ()
        if not isinstance(non_persistent, (set, frozenset, list, tuple)):
            raise Aware3DError(
                f"module {path or '<root>'} ({node.class_name}) has a malformed _non_persistent_buffers_set",
                hint=_HINT_CORRUPT,
            )
        for kind in ("_parameters", "_buffers"):
            for name, tensor in _mapping_entry(node, kind, path).items():
                if tensor is None or (kind == "_buffers" and name in non_persistent):
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise Aware3DError(
                        f"{key_prefix}{name} in the snapshot is a {type(tensor).__name__}, not a tensor",
                        hint=_HINT_CORRUPT,
                    )
                out[f"{key_prefix}{name}"] = tensor
    return out


class _ValueBudget:
    """How many more values a walk over a file's data may visit (shared between nested calls)."""

    __slots__ = ("left",)

    def __init__(self, limit: int = _MAX_PLAIN_VALUES) -> None:
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Aware3DError(
                f"hyper-parameters hold more than {_MAX_PLAIN_VALUES} values (shared structures unrolled)",
                hint=_HINT_CORRUPT,
            )


def to_plain(value: Any, _depth: int = 0, _budget: _ValueBudget | None = None) -> Any:
    """Plain Python for hyper-parameters: EasyDict/OrderedDict → dict, numpy scalars → numbers.

    Tuples stay tuples and lists stay lists (the official code passes both); tensors and stand-ins are
    returned unchanged. Bounded in depth and in the number of values (a structure shared through the memo
    is copied once per reference).
    """
    budget = _ValueBudget() if _budget is None else _budget
    budget.spend()
    if _depth > _MAX_PLAIN_DEPTH:
        raise Aware3DError("hyper-parameters are nested too deeply", hint=_HINT_CORRUPT)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, dict):
        return {to_plain(k, _depth + 1, budget): to_plain(v, _depth + 1, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v, _depth + 1, budget) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v, _depth + 1, budget) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(to_plain(v, _depth + 1, budget) for v in value)
    return value


def _is_plain(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_PLAIN_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _small_tensor_list(tensor: torch.Tensor, what: str, limit: int = 1024) -> list[Any]:
    """``tensor.tolist()`` for a tensor that holds a few numbers (a broadcast view could claim billions)."""
    if tensor.numel() > limit:
        raise Aware3DError(f"the snapshot's {what} holds {tensor.numel()} values, not a few", hint=_HINT_CORRUPT)
    return tensor.tolist()  # type: ignore[no-any-return]


def generator_info(snapshot: Snapshot, key: str = "G_ema") -> dict[str, Any]:
    """Everything a converter needs to rebuild the generator, as plain Python.

    Keys: ``class_name``, ``module``, ``init_args`` (tuple), ``init_kwargs``, ``rendering_kwargs``,
    ``neural_rendering_resolution``, ``plane_axes`` (nested list or None), ``persistent_classes`` (one entry
    per distinct class/source pair), ``module_sources`` (sha256 → class names sharing that source file),
    ``submodules`` (dotted path → original class), ``attributes`` (every plain top-level attribute).
    """
    generator = getattr(snapshot, key, None) if key in _SNAPSHOT_KEYS else snapshot.extra.get(key)
    if not isinstance(generator, StandIn):
        raise Aware3DError(f"{snapshot.path.name} has no network under {key!r}", hint=_HINT_NOT_SNAPSHOT)
    state = generator.state

    persistent: dict[tuple[str, str], dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    submodules: dict[str, str] = {}
    plane_axes: list[Any] | None = None
    for path, node in named_modules(generator):
        submodules[path] = node.qualified_name
        if isinstance(node, PersistentStandIn):
            entry = {
                "class_name": node.class_name,
                "module": node.module,
                "module_src_sha256": node.module_src_sha256,
                "module_src_len": node.module_src_len,
            }
            persistent.setdefault((node.class_name, node.module_src_sha256), entry)
            names = sources.setdefault(node.module_src_sha256, [])
            if node.class_name not in names:
                names.append(node.class_name)
        axes = node.state.get("plane_axes")
        if (
            plane_axes is None
            and isinstance(axes, torch.Tensor)
            and (path == "renderer" or path.endswith(".renderer"))
        ):
            plane_axes = _small_tensor_list(axes, "plane_axes")
    if plane_axes is None:  # not under the usual name: take the first renderer-like attribute anywhere
        for _, node in named_modules(generator):
            axes = node.state.get("plane_axes")
            if isinstance(axes, torch.Tensor):
                plane_axes = _small_tensor_list(axes, "plane_axes")
                break

    budget = _ValueBudget()  # one for the whole call: attributes may share one big structure
    attributes = {}
    for name, value in state.items():
        if not isinstance(name, str) or name.startswith("_") or name == "training":
            continue
        plain = to_plain(value, _budget=budget)
        if _is_plain(plain):
            attributes[name] = plain

    init_args = to_plain(state.get("_init_args", ()), _budget=budget)
    return {
        "class_name": generator.class_name,
        "module": generator.module,
        "init_args": tuple(init_args) if isinstance(init_args, (list, tuple)) else init_args,
        "init_kwargs": to_plain(state.get("_init_kwargs", {}), _budget=budget),
        "rendering_kwargs": to_plain(state.get("rendering_kwargs"), _budget=budget),
        "neural_rendering_resolution": to_plain(state.get("neural_rendering_resolution"), _budget=budget),
        "plane_axes": plane_axes,
        "persistent_classes": sorted(
            persistent.values(), key=lambda e: (e["class_name"], e["module_src_sha256"])
        ),
        "module_sources": sources,
        "submodules": submodules,
        "attributes": attributes,
    }
