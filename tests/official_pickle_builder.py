"""Test helper: writes pickles in the layout of official EG3D / Mimic3D training snapshots.

Why: the released ``.pkl`` files are large, under a non-commercial licence and can only be produced by the
official code, which Aware3D must not import or copy. This module writes files with the same structure from
facts in ``shared/spec/eg3d_compat.md`` §1 only:

* ``{'training_set_kwargs', 'G', 'D', 'G_ema', ['D_patch',] 'augment_pipe'}`` in that order;
* a persistent class instance reduces to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
  ``meta = {type: 'class', version: 6, module_src, class_name, state}`` where ``state`` is the module's
  ``__dict__``; non-persistent classes (``training.triplane.OSGDecoder``, ...) pickle by reference
  (NEWOBJ + BUILD, or optionally ``copyreg._reconstructor``); ``torch.nn`` classes pickle as usual;
* tensors either exactly as torch pickles them with plain pickle (``tensor_encoding='torch'``) or written by
  this module as ``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(<legacy blob>), ...)``
  the way torch ~1.11 wrote the released files (``tensor_encoding='legacy'``; views of one storage then
  share a single blob);
* numpy float64 attributes (``weight_gain``, ``act_gain``) stay numpy scalars.

Names of the official code (``torch_utils``, ``dnnlib``, ``training``) are written directly as global
references by a pure-Python pickler (``save_global`` override); no fake module is installed in
``sys.modules`` and nothing from those packages exists here.

Entry points: :func:`make_tiny_triplane_generator` (a small nn.Module tree with the official class names),
:func:`build_from_state_dict` (a tree from any flat state dict, e.g. Aware3D's generator), and
:func:`dumps_snapshot` / :func:`write_snapshot`. :class:`Call` and :func:`dumps` write hostile or odd
pickles for negative tests.
"""

from __future__ import annotations

import copy
import copyreg
import functools
import io
import pickle
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_TYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "DoubleStorage",
    torch.float32: "FloatStorage",
    torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage",
    torch.int64: "LongStorage",
    torch.int32: "IntStorage",
    torch.int16: "ShortStorage",
    torch.int8: "CharStorage",
    torch.uint8: "ByteStorage",
    torch.bool: "BoolStorage",
    torch.complex64: "ComplexFloatStorage",
    torch.complex128: "ComplexDoubleStorage",
}

# Where the official code defines each class, and whether it is a persistent class (spec §1.2).
OFFICIAL_CLASSES: dict[str, tuple[str, bool]] = {
    "TriPlaneGenerator": ("training.triplane", True),
    "DualTriPlaneGenerator": ("training.dual_triplane", True),
    "Generator": ("training.networks_stylegan2", True),
    "MappingNetwork": ("training.networks_stylegan2", True),
    "SynthesisNetwork": ("training.networks_stylegan2", True),
    "SynthesisBlock": ("training.networks_stylegan2", True),
    "SynthesisLayer": ("training.networks_stylegan2", True),
    "ToRGBLayer": ("training.networks_stylegan2", True),
    "FullyConnectedLayer": ("training.networks_stylegan2", True),
    "Conv2dLayer": ("training.networks_stylegan2", True),
    "DiscriminatorBlock": ("training.networks_stylegan2", True),
    "DiscriminatorEpilogue": ("training.networks_stylegan2", True),
    "MinibatchStdLayer": ("training.networks_stylegan2", True),
    "Aware3DBlock": ("training.networks_stylegan2", True),
    "SR3DBlock": ("training.networks_stylegan2", True),
    "SuperresolutionHybrid8XDC": ("training.superresolution", True),
    "SuperresolutionHybrid8X": ("training.superresolution", True),
    "SuperresolutionHybrid4X": ("training.superresolution", True),
    "SuperresolutionHybrid2X": ("training.superresolution", True),
    "SynthesisBlockNoUp": ("training.superresolution", True),
    "DualDiscriminator": ("training.dual_discriminator", True),
    "SingleDiscriminator": ("training.dual_discriminator", True),  # Mimic3D; module not confirmed
    "AugmentPipe": ("training.augment", True),
    "OSGDecoder": ("training.triplane", False),
    "ImportanceRenderer": ("training.volumetric_rendering.renderer", False),
    "MipRayMarcher2": ("training.volumetric_rendering.ray_marcher", False),
    "RaySampler": ("training.volumetric_rendering.ray_sampler", False),
}

# EG3D's generate_planes() (spec §3.3): P0 = I, P1 = rows 100/001/010, P2 = rows 001/100/010.
EG3D_PLANE_AXES = [
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
]

DEFAULT_BUFFER_NAMES = frozenset({"resample_filter", "noise_const", "w_avg", "dataset_label_std"})

FFHQ_RENDERING_KWARGS: dict[str, Any] = {
    "image_resolution": 512,
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
    "c_gen_conditioning_zero": False,
    "gpc_reg_prob": 0.5,
    "c_scale": 1.0,
    "superresolution_noise_mode": "none",
    "density_reg": 0.25,
    "density_reg_p_dist": 0.004,
    "reg_type": "l1",
    "decoder_lr_mul": 1.0,
    "sr_antialias": True,
    "depth_resolution": 48,
    "depth_resolution_importance": 48,
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1,
    "avg_camera_radius": 2.7,
    "avg_camera_pivot": [0, 0, 0.2],
}

DEFAULT_TRAINING_SET_KWARGS: dict[str, Any] = {
    "class_name": "training.dataset.ImageFolderDataset",
    "path": "datasets/FFHQ_512.zip",
    "use_labels": True,
    "max_size": 70000,
    "xflip": True,
    "resolution": 512,
    "random_seed": 0,
}


# --------------------------------------------------------------------------------------------------------
# Names written as global references


def _global_ref(obj: Any) -> tuple[str, str] | None:
    """The (module, name) this object must be written as, when it stands for an official global."""
    namespace = getattr(obj, "__dict__", None)
    if not isinstance(namespace, Mapping):
        return None
    return namespace.get("_a3d_global")


@functools.cache
def global_function(module: str, name: str) -> Callable[..., Any]:
    """A placeholder that pickles as the global ``module.name``; calling it here is an error."""

    def placeholder(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{module}.{name} is only a pickling placeholder")

    placeholder.__dict__["_a3d_global"] = (module, name)
    return placeholder


_RECONSTRUCT_PERSISTENT = global_function("torch_utils.persistence", "_reconstruct_persistent_obj")


class EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (a dict with attribute access), as in the official kwargs."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


EasyDict._a3d_global = ("dnnlib.util", "EasyDict")  # type: ignore[attr-defined]


class Call:
    """Pickles as the call ``target(*args)``; used to write hostile files. Nothing is called here.

    ``target`` is ``"module.name"`` (written as that exact global, e.g. ``"os.system"``) or another
    :class:`Call` whose result is called (for ``getattr(__import__('os'), 'system')(...)`` chains).
    ``build_state``, if given, is applied to the result with a BUILD opcode (``__setstate__``).
    """

    def __init__(self, target: str | Call, *args: Any, build_state: Any = None) -> None:
        self.target = target
        self.args = args
        self.build_state = build_state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Call is only a pickling placeholder")

    def reduce(self) -> tuple[Any, ...]:
        if isinstance(self.target, Call):
            func: Any = self.target
        else:
            module, _, name = self.target.rpartition(".")
            func = global_function(module, name)
        if self.build_state is None:
            return (func, self.args)
        return (func, self.args, self.build_state)


# --------------------------------------------------------------------------------------------------------
# Official-looking module classes


def persistent(module: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Mark a class as an official ``@persistent_class`` defined in ``module``.

    Like the official decorator it keeps deep copies of the constructor arguments as ``_init_args`` /
    ``_init_kwargs`` (set after the original ``__init__``, so they come last in ``__dict__``).
    """

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        original_init = cls.__init__

        @functools.wraps(original_init)
        def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            if type(self) is cls:
                self._init_args = copy.deepcopy(args)
                self._init_kwargs = copy.deepcopy(kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign]
        cls._a3d_official = (module, True)  # type: ignore[attr-defined]
        return cls

    return decorate


def non_persistent(module: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Mark a class as an ordinary class of the official code, pickled by reference as ``module.Name``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        cls._a3d_official = (module, False)  # type: ignore[attr-defined]
        cls._a3d_global = (module, cls.__name__)  # type: ignore[attr-defined]
        return cls

    return decorate


def _official_spec(cls: type) -> tuple[str, bool] | None:
    spec = cls.__dict__.get("_a3d_official")
    if spec is not None:
        return spec
    if cls.__module__.startswith("torch."):
        return None  # torch.nn classes pickle by reference as usual
    return OFFICIAL_CLASSES.get(cls.__name__, ("training.networks_stylegan2", True))


def _resample_filter() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / 64


@persistent("training.networks_stylegan2")
class FullyConnectedLayer(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)  # numpy float64, as in the originals
        self.bias_gain = lr_multiplier


@persistent("training.networks_stylegan2")
class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = (
            z_dim,
            c_dim,
            w_dim,
            num_ws,
            num_layers,
        )
        self.w_avg_beta = 0.998
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(
                self,
                f"fc{i}",
                FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=0.01),
            )
        self.register_buffer("w_avg", torch.zeros([w_dim]))


@persistent("training.networks_stylegan2")
class SynthesisLayer(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.resolution = (
            in_channels,
            out_channels,
            w_dim,
            resolution,
        )
        self.activation = "lrelu"
        self.conv_clamp = None
        self.act_gain = np.sqrt(2)  # numpy float64, as in the originals
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", _resample_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))


@persistent("training.networks_stylegan2")
class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size**2)


@persistent("training.networks_stylegan2")
class SynthesisBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        const_shape_prefix: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.img_channels, self.is_last = resolution, img_channels, is_last
        self.architecture = "skip"
        self.use_fp16 = False
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(
                torch.randn([*const_shape_prefix, out_channels, resolution, resolution])
            )
        self.register_buffer("resample_filter", _resample_filter())
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)
        self.num_torgb += 1


@persistent("training.networks_stylegan2")
class Aware3DBlock(nn.Module):
    def __init__(self, channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.block = SynthesisBlock(channels, channels, w_dim, resolution * 2, channels, is_last=False)


@persistent("training.networks_stylegan2")
class SynthesisNetwork(nn.Module):
    def __init__(
        self, w_dim: int, img_resolution: int, img_channels: int, channels: int = 8, mimic3d: bool = False
    ) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, int(np.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = 0 if res == 4 else channels
            block = SynthesisBlock(
                in_channels,
                channels,
                w_dim,
                res,
                img_channels,
                res == img_resolution,
                const_shape_prefix=(1,) if mimic3d else (),
            )
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
            if mimic3d:
                setattr(self, f"b3d{res}", Aware3DBlock(4, w_dim, res))
        self.num_ws += 1


@persistent("training.networks_stylegan2")
class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: Mapping[str, Any] | None = None,
        **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))


@persistent("training.superresolution")
class SuperresolutionHybrid8XDC(nn.Module):
    def __init__(
        self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool, w_dim: int = 16
    ) -> None:
        super().__init__()
        self.input_resolution = img_resolution // 4
        self.sr_antialias = sr_antialias
        self.block0 = SynthesisBlock(channels, 8, w_dim, img_resolution // 2, 3, is_last=False)
        self.block1 = SynthesisBlock(8, 4, w_dim, img_resolution, 3, is_last=True)


@non_persistent("training.triplane")
class OSGDecoder(nn.Module):
    def __init__(self, n_features: int, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.hidden_dim = 8
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=options["decoder_lr_mul"]),
            nn.Softplus(),
            FullyConnectedLayer(
                self.hidden_dim, 1 + options["decoder_output_dim"], lr_multiplier=options["decoder_lr_mul"]
            ),
        )


@non_persistent("training.volumetric_rendering.ray_marcher")
class MipRayMarcher2(nn.Module):
    pass


@non_persistent("training.volumetric_rendering.renderer")
class ImportanceRenderer(nn.Module):
    def __init__(self, plane_axes: Any = None) -> None:
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        # A plain tensor attribute, not a buffer (spec §1.2).
        self.plane_axes = torch.tensor(
            EG3D_PLANE_AXES if plane_axes is None else plane_axes, dtype=torch.float32
        )


@non_persistent("training.volumetric_rendering.ray_sampler")
class RaySampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ray_origins_h, self.ray_directions, self.depths = None, None, None
        self.image_coords, self.rendering_options = None, None


class _TriPlaneBase(nn.Module):
    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        sr_num_fp16_res: int = 0,
        mapping_kwargs: Mapping[str, Any] | None = None,
        rendering_kwargs: Mapping[str, Any] | None = None,
        sr_kwargs: Mapping[str, Any] | None = None,
        **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        rendering_kwargs = dict(rendering_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = Generator(
            z_dim,
            c_dim,
            w_dim,
            img_resolution=8,
            img_channels=12,
            mapping_kwargs=mapping_kwargs,
            **synthesis_kwargs,
        )
        self.superresolution = SuperresolutionHybrid8XDC(
            channels=4,
            img_resolution=img_resolution,
            sr_num_fp16_res=sr_num_fp16_res,
            sr_antialias=rendering_kwargs.get("sr_antialias", True),
            w_dim=w_dim,
            **(sr_kwargs or {}),
        )
        self.decoder = OSGDecoder(
            4, {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1), "decoder_output_dim": 4}
        )
        self.neural_rendering_resolution = 8
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None


@persistent("training.triplane")
class TriPlaneGenerator(_TriPlaneBase):
    pass


@persistent("training.dual_triplane")
class DualTriPlaneGenerator(_TriPlaneBase):
    pass


@persistent("training.networks_stylegan2")
class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int) -> None:
        super().__init__()
        self.in_channels, self.cmap_dim = in_channels, cmap_dim
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim)


@persistent("training.dual_discriminator")
class DualDiscriminator(nn.Module):
    def __init__(self, c_dim: int = 25, img_resolution: int = 32, img_channels: int = 3) -> None:
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels * 2
        self.b4 = DiscriminatorEpilogue(4, 8)
        self.mapping = MappingNetwork(0, c_dim, 8, None, num_layers=1)  # type: ignore[arg-type]
        self.register_buffer("resample_filter", _resample_filter())


@persistent("training.dual_discriminator")
class SingleDiscriminator(nn.Module):
    def __init__(self, c_dim: int = 0, img_resolution: int = 64, img_channels: int = 3) -> None:
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.b4 = DiscriminatorEpilogue(4, 1)


@persistent("training.augment")
class AugmentPipe(nn.Module):
    def __init__(self, xflip: float = 1.0, rotate90: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("p", torch.zeros([]))
        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)


def make_tiny_triplane_generator(*, seed: int = 0, mimic3d: bool = False) -> nn.Module:
    """A small (~20 k parameters) generator tree with the official class names and attribute layout."""
    torch.manual_seed(seed)
    cls = DualTriPlaneGenerator if mimic3d else TriPlaneGenerator
    rendering_kwargs = dict(FFHQ_RENDERING_KWARGS, image_resolution=32)
    generator = cls(
        z_dim=16,
        c_dim=25,
        w_dim=16,
        img_resolution=32,
        img_channels=3,
        sr_num_fp16_res=4,
        mapping_kwargs=EasyDict(num_layers=2),
        rendering_kwargs=rendering_kwargs,
        sr_kwargs=EasyDict(),
        channels=8,
        mimic3d=mimic3d,
    )
    generator.register_buffer("dataset_label_std", torch.rand([25]))
    return generator


def make_tiny_discriminator(*, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return DualDiscriminator(c_dim=25, img_resolution=32, img_channels=3)


# --------------------------------------------------------------------------------------------------------
# A module tree from a flat state dict

_CLASS_RULES: list[tuple[str, str]] = [
    (r"^backbone$", "Generator"),
    (r"(^|\.)mapping$", "MappingNetwork"),
    (r"(^|\.)synthesis$", "SynthesisNetwork"),
    (r"(^|\.)b3d\d+$", "Aware3DBlock"),
    (r"(^|\.)b\d+$", "SynthesisBlock"),
    (r"\.block\d*$", "SynthesisBlock"),
    (r"(^|\.)conv\d+$", "SynthesisLayer"),
    (r"(^|\.)torgb$", "ToRGBLayer"),
    (r"(^|\.)(affine|embed|fc\d+)$", "FullyConnectedLayer"),
    (r"^superresolution$", "SuperresolutionHybrid8XDC"),
    (r"^decoder$", "OSGDecoder"),
    (r"^decoder\.net$", "Sequential"),
    (r"^decoder\.net\.\d+$", "FullyConnectedLayer"),
]


@functools.cache
def official_class(
    name: str, module: str | None = None, is_persistent: bool | None = None
) -> type[nn.Module]:
    """An empty nn.Module class that pickles like the official class ``name`` (torch.nn names are real)."""
    if name == "Sequential":
        return nn.Sequential
    if name == "Softplus":
        return nn.Softplus
    known_module, known_persistent = OFFICIAL_CLASSES.get(name, ("training.networks_stylegan2", True))
    module = module or known_module
    is_persistent = known_persistent if is_persistent is None else is_persistent
    cls = type(name, (nn.Module,), {"__module__": __name__, "__qualname__": name})
    return (persistent if is_persistent else non_persistent)(module)(cls)


def _class_for_path(path: str, class_names: Mapping[str, str]) -> type[nn.Module]:
    name = class_names.get(path)
    if name is None:
        for pattern, candidate in _CLASS_RULES:
            if re.search(pattern, path):
                name = candidate
                break
    if name is None:
        raise ValueError(
            f"no official class known for module {path!r}; pass class_names={{{path!r}: 'ClassName'}}"
        )
    module, _, short = name.rpartition(".")
    return official_class(short, module or None)


def _standard_attributes(module: nn.Module) -> None:
    """Plain attributes the official classes keep next to their tensors (numpy float64 gains).

    The gains assume lr_multiplier 1 (the state dict does not say otherwise); pass ``attributes`` to
    :func:`build_from_state_dict` for exact values such as the mapping network's 0.01 multiplier.
    """
    name = type(module).__name__
    weight = module._parameters.get("weight")
    if name == "FullyConnectedLayer" and weight is not None and weight.ndim == 2:
        module.in_features, module.out_features = int(weight.shape[1]), int(weight.shape[0])
        module.weight_gain = 1 / np.sqrt(weight.shape[1])
        module.bias_gain = 1
    elif name == "SynthesisLayer":
        module.activation = "lrelu"
        module.act_gain = np.sqrt(2)
    elif name == "ToRGBLayer" and weight is not None and weight.ndim == 4:
        module.weight_gain = 1 / np.sqrt(weight.shape[1] * weight.shape[2] * weight.shape[3])


def build_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    init_kwargs: Mapping[str, Any],
    rendering_kwargs: Mapping[str, Any],
    class_name: str = "TriPlaneGenerator",
    *,
    init_args: Iterable[Any] = (),
    module_name: str | None = None,
    neural_rendering_resolution: int = 64,
    buffer_names: Iterable[str] = (),
    class_names: Mapping[str, str] | None = None,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    plane_axes: Any = None,
    add_renderer: bool = True,
) -> nn.Module:
    """A module tree whose ``state_dict()`` equals ``state_dict`` (names, order, tensors), ready to dump.

    Each dotted prefix becomes a module whose class is guessed from EG3D's naming (``backbone`` →
    Generator, ``b256`` → SynthesisBlock, ``conv0`` → SynthesisLayer, ``decoder`` → OSGDecoder, ...);
    ``class_names`` overrides a path's class (``'superresolution': 'SuperresolutionHybrid4X'``, or
    ``'module.Class'`` for another module). Leaves named in ``DEFAULT_BUFFER_NAMES`` or ``buffer_names``
    become buffers, all others parameters. A ``Sequential`` with numbered children gets parameter-free
    ``Softplus`` modules in the gaps (``decoder.net.1``). The generator also gets the official plain
    attributes (z_dim, ..., ``neural_rendering_resolution``, ``rendering_kwargs``, ``_init_args``,
    ``_init_kwargs`` — which also receives ``rendering_kwargs`` unless given) and, with ``add_renderer``,
    the parameter-free ``renderer`` (ImportanceRenderer with ``plane_axes``) and ``ray_sampler``.
    ``attributes`` maps a module path ('' for the root) to extra attributes set last.
    The given order is preserved as long as it is a valid state-dict order (within each module its
    parameters, then its buffers, then its sub-modules).
    """
    class_names = dict(class_names or {})
    buffers = DEFAULT_BUFFER_NAMES | frozenset(buffer_names)
    class_names.pop("", None)  # the root's class is ``class_name`` (in ``module_name`` if given)
    root_cls = official_class(class_name, module_name)
    root = root_cls()
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if key in init_kwargs:
            setattr(root, key, init_kwargs[key])
    if add_renderer:
        root.renderer = ImportanceRenderer(plane_axes)
        root.ray_sampler = RaySampler()

    modules: dict[str, nn.Module] = {"": root}
    for key, tensor in state_dict.items():
        *parts, leaf = key.split(".")
        parent = root
        for i in range(len(parts)):
            path = ".".join(parts[: i + 1])
            child = modules.get(path)
            if child is None:
                child = _class_for_path(path, class_names)()
                parent.add_module(parts[i], child)
                modules[path] = child
            parent = child
        if leaf in buffers:
            parent.register_buffer(leaf, tensor)
        else:
            parent.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))

    for module in list(modules.values()):
        if (
            isinstance(module, nn.Sequential)
            and module._modules
            and all(k.isdigit() for k in module._modules)
        ):
            existing = dict(module._modules)
            module._modules.clear()
            for index in range(max(int(k) for k in existing) + 1):
                module._modules[str(index)] = existing.get(str(index)) or nn.Softplus()
        _standard_attributes(module)

    root.neural_rendering_resolution = neural_rendering_resolution
    root.rendering_kwargs = dict(rendering_kwargs)
    root._last_planes = None
    kwargs = copy.deepcopy(dict(init_kwargs))
    kwargs.setdefault("rendering_kwargs", copy.deepcopy(dict(rendering_kwargs)))
    root._init_args = tuple(init_args)
    root._init_kwargs = kwargs
    for path, extra in (attributes or {}).items():
        target = modules.get(path)
        if target is None:
            raise ValueError(f"attributes given for unknown module path {path!r}")
        for name, value in extra.items():
            setattr(target, name, value)
    for module in modules.values():
        _move_init_record_last(module)
    return root


def _move_init_record_last(module: nn.Module) -> None:
    """The official decorator stores ``_init_args`` / ``_init_kwargs`` after everything else."""
    for name in ("_init_args", "_init_kwargs"):
        if name in module.__dict__:
            module.__dict__[name] = module.__dict__.pop(name)


# --------------------------------------------------------------------------------------------------------
# Legacy storage blobs and the pickler


def legacy_storage_blob(
    flat: torch.Tensor,
    *,
    key: str = "0",
    location: str = "cpu",
    storage_type: str | None = None,
    count: int | None = None,
    object_pickle: bytes | None = None,
    view: tuple[str, int, int] | None = None,
    protocol: int = 2,
) -> bytes:
    """A legacy (non-zip) ``torch.save`` blob of one storage, as ``torch.storage._load_from_bytes`` takes.

    ``flat`` gives the elements. ``count`` overrides the 8-byte element count and ``object_pickle`` the
    storage-record pickle (for corrupt / hostile blobs).
    """
    flat = flat.detach().reshape(-1).contiguous()
    type_name = storage_type or STORAGE_TYPE_NAMES[flat.dtype]
    out = io.BytesIO()
    pickle.dump(LEGACY_MAGIC_NUMBER, out, protocol=protocol)
    pickle.dump(LEGACY_PROTOCOL_VERSION, out, protocol=protocol)
    sys_info = {
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    pickle.dump(sys_info, out, protocol=protocol)
    if object_pickle is None:
        marker = object()
        record = ("storage", global_function("torch", type_name), key, location, flat.numel(), view)
        pickler = _SnapshotPickler(out, protocol)
        pickler.persistent_id = lambda obj: record if obj is marker else None  # type: ignore[method-assign]
        pickler.dump(marker)
    else:
        out.write(object_pickle)
    pickle.dump([key], out, protocol=protocol)
    out.write(struct.pack("<q", flat.numel() if count is None else count))
    out.write(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return out.getvalue()


class _LegacyStorage:
    """One storage written as ``torch.storage._load_from_bytes(blob)``; memoised, so views share it."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob


class _SnapshotPickler(pickle._Pickler):  # the pure-Python pickler, for its overridable save_global
    def __init__(
        self,
        file: Any,
        protocol: int,
        *,
        tensor_encoding: str = "torch",
        module_src: Mapping[str, str] | None = None,
        non_persistent_via: str = "newobj",
    ) -> None:
        super().__init__(file, protocol)
        if tensor_encoding not in ("torch", "legacy"):
            raise ValueError("tensor_encoding must be 'torch' or 'legacy'")
        if non_persistent_via not in ("newobj", "reconstructor"):
            raise ValueError("non_persistent_via must be 'newobj' or 'reconstructor'")
        self.tensor_encoding = tensor_encoding
        self.module_src = dict(module_src or {})
        self.non_persistent_via = non_persistent_via
        self._storages: dict[tuple[int, torch.dtype], _LegacyStorage] = {}

    def save_global(self, obj: Any, name: str | None = None) -> None:
        ref = _global_ref(obj)
        if ref is None:
            super().save_global(obj, name)
            return
        module, qualname = ref
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode("utf-8") + b"\n" + qualname.encode("utf-8") + b"\n")
        self.memoize(obj)

    def reducer_override(self, obj: Any) -> Any:
        if (
            _global_ref(obj) is not None
            and (isinstance(obj, type) or callable(obj))
            and not isinstance(obj, Call)
        ):
            return "placeholder"  # a string means: save_global(obj)
        if isinstance(obj, Call):
            return obj.reduce()
        if isinstance(obj, _LegacyStorage):
            return (torch.storage._load_from_bytes, (obj.blob,))
        if isinstance(obj, torch.Tensor) and self.tensor_encoding == "legacy":
            return self._reduce_tensor_legacy(obj)
        if isinstance(obj, nn.Module):
            spec = _official_spec(type(obj))
            if spec is None:
                return NotImplemented
            module, is_persistent = spec
            state = obj.__getstate__()
            if is_persistent:
                state.setdefault("_init_args", ())
                state.setdefault("_init_kwargs", {})
                class_name = type(obj).__name__
                meta = {
                    "type": "class",
                    "version": 6,
                    "module_src": self._module_src(class_name, module),
                    "class_name": class_name,
                    "state": state,
                }
                return (_RECONSTRUCT_PERSISTENT, (meta,))
            cls = type(obj)
            if _global_ref(cls) is None:
                cls._a3d_global = (module, cls.__name__)  # type: ignore[attr-defined]
            if self.non_persistent_via == "reconstructor":
                return (copyreg._reconstructor, (cls, object, None), state)  # type: ignore[attr-defined]
            return (copyreg.__newobj__, (cls,), state)
        return NotImplemented

    def _module_src(self, class_name: str, module: str) -> str:
        if class_name in self.module_src:
            return self.module_src[class_name]
        if module in self.module_src:
            return self.module_src[module]
        return (
            f'"""Stand-in for the source of {module}, written by tests/official_pickle_builder.py."""\n'
            "# The official loader would execute this text; Aware3D only hashes it.\n"
        )

    def _reduce_tensor_legacy(self, tensor: torch.Tensor) -> tuple[Any, ...]:
        if isinstance(tensor, nn.Parameter):
            return (torch._utils._rebuild_parameter, (tensor.detach(), tensor.requires_grad, OrderedDict()))
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.dtype)
        holder = self._storages.get(key)
        if holder is None:
            numel = storage.nbytes() // tensor.element_size()
            flat = torch.empty(0, dtype=tensor.dtype).set_(storage, 0, (numel,), (1,))
            holder = _LegacyStorage(legacy_storage_blob(flat, key=str(len(self._storages))))
            self._storages[key] = holder
        args = (
            holder,
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.requires_grad,
            OrderedDict(),
        )
        return (torch._utils._rebuild_tensor_v2, args)


def dumps(
    obj: Any,
    *,
    protocol: int = 4,
    tensor_encoding: str = "torch",
    module_src: Mapping[str, str] | None = None,
    non_persistent_via: str = "newobj",
) -> bytes:
    """Pickle any object with the official-layout rules (modules, EasyDict, :class:`Call`, tensors)."""
    out = io.BytesIO()
    _SnapshotPickler(
        out,
        protocol,
        tensor_encoding=tensor_encoding,
        module_src=module_src,
        non_persistent_via=non_persistent_via,
    ).dump(obj)
    return out.getvalue()


def _prepare(module: nn.Module | None) -> nn.Module | None:
    """What the training loop does before saving: a deep copy in eval mode, no gradients, on the CPU."""
    if module is None:
        return None
    return copy.deepcopy(module).eval().requires_grad_(False).cpu()


def snapshot_dict(
    G_ema: nn.Module,
    *,
    G: nn.Module | None = None,
    D: nn.Module | None = None,
    D_patch: nn.Module | None = None,
    augment_pipe: nn.Module | None = None,
    training_set_kwargs: Mapping[str, Any] | None = None,
    prepare: bool = True,
) -> dict[str, Any]:
    """The snapshot dict in the official key order (Mimic3D's ``D_patch`` right after ``G_ema``)."""
    prep = _prepare if prepare else (lambda m: m)
    data: dict[str, Any] = {
        "training_set_kwargs": dict(
            DEFAULT_TRAINING_SET_KWARGS if training_set_kwargs is None else training_set_kwargs
        ),
        # G and G_ema are distinct objects in a real snapshot (G_ema is a deep copy of G).
        "G": prep(G) if G is not None else (prep(G_ema) if prepare else copy.deepcopy(G_ema)),
        "D": prep(D if D is not None else make_tiny_discriminator()),
        "G_ema": prep(G_ema),
    }
    if D_patch is not None:
        data["D_patch"] = prep(D_patch)
    data["augment_pipe"] = prep(augment_pipe) if augment_pipe is not None else None
    return data


def dumps_snapshot(
    G_ema: nn.Module,
    *,
    G: nn.Module | None = None,
    D: nn.Module | None = None,
    D_patch: nn.Module | None = None,
    augment_pipe: nn.Module | None = None,
    training_set_kwargs: Mapping[str, Any] | None = None,
    prepare: bool = True,
    protocol: int = 4,
    tensor_encoding: str = "torch",
    module_src: Mapping[str, str] | None = None,
    non_persistent_via: str = "newobj",
) -> bytes:
    """Bytes of a snapshot in the official layout (G defaults to a copy of G_ema, D to a tiny discriminator).

    ``module_src`` maps a class name or module name to the source text stored in its persistence records.
    """
    data = snapshot_dict(
        G_ema,
        G=G,
        D=D,
        D_patch=D_patch,
        augment_pipe=augment_pipe,
        training_set_kwargs=training_set_kwargs,
        prepare=prepare,
    )
    return dumps(
        data,
        protocol=protocol,
        tensor_encoding=tensor_encoding,
        module_src=module_src,
        non_persistent_via=non_persistent_via,
    )


def write_snapshot(path: str | Path, G_ema: nn.Module, **kwargs: Any) -> Path:
    """Write :func:`dumps_snapshot` output to ``path`` and return the path."""
    path = Path(path)
    path.write_bytes(dumps_snapshot(G_ema, **kwargs))
    return path
