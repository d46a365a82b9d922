"""Configuration dataclasses for the tri-plane generator family.

One ``GeneratorConfig`` describes every model Aware3D builds: the official EG3D checkpoints, both Mimic3D
stages, our bundled small models and the tiny test model. The network is built only from this object, so
a config stored in a checkpoint's header is enough to rebuild the module tree with the exact state-dict
keys and shapes of the official code (see ``backend.configs`` for the named configs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from backend.config_fields import UnknownFieldsError, check_fields

SuperResolutionKind = Literal["none", "hybrid8xdc", "hybrid4x", "hybrid2x"]
Projection = Literal["eg3d", "corrected"]
Family = Literal["eg3d", "mimic3d"]

# Input resolution of each super-resolution module and the output it produces (×8, ×4, ×2).
SR_INPUT_RESOLUTION: dict[str, int] = {"hybrid8xdc": 128, "hybrid4x": 128, "hybrid2x": 64}
# Channels of the two SR blocks.
SR_BLOCK_CHANNELS: dict[str, tuple[int, int]] = {
    "hybrid8xdc": (256, 128),
    "hybrid4x": (128, 64),
    "hybrid2x": (128, 64),
}


# Length of the synthetic heads' calibrated latent (train/synthetic/latent.py: one standard-normal coordinate
# per head or lighting parameter; tests/test_encoder.py checks that the two agree). It lives here so that the
# backend can tell which generators take it as z without importing the trainers.
HEAD_LATENT_DIMS = 67


# The Gaussian-bin edges of the head latent's discrete coordinates (train/synthetic/latent.py latent_bins();
# a test checks that the two agree): the distilled configs' ``z_bins``.
HEAD_LATENT_BINS: tuple[tuple[int, tuple[float, ...]], ...] = (
    (27, (-0.385320466, 0.125661347, 0.439913166, 0.738846849, 1.40507156)),
    (32, (-1.544575486, -1.399656648, -1.281551566, -1.180947041, -1.098219064, -1.092735829, -0.960705357,
         -0.841621234, -0.735481661, -0.638918708, -0.258633067, -0.063341023, 0.085363023, 0.125661347,
         0.277827498, 0.315377237, 0.477040428, 0.513154662, 0.692778057, 0.827130206, 0.941584851,
         0.960705357, 1.110771617, 1.270008415, 1.287213733, 1.377524426, 1.501085946, 1.511272827,
         1.649672679, 1.842791371)),
    (33, (-0.67448975, -0.100433721, 0.305480788, 0.495850347, 0.643345405, 0.994457883, 1.174986792,
         1.554773595, 1.880793608, 2.170090378)),
    (40, (0.772193214, 1.080319341, 1.554773595)),
    (41, (-0.67448975, 0.0, 0.67448975)),
    (45, (1.174986792, 1.554773595)),
    (49, (0.215984281, 0.552946566, 0.611301497, 0.880294115, 0.890774794, 0.98423496, 1.153512719,
         1.166406826, 1.206823821, 1.337682371, 1.397377771, 1.452905477, 1.527245403, 1.602704091,
         1.657096335, 1.742334099, 1.772569919, 1.924435646, 1.968156792, 2.135747505)),
    (63, (0.0,)),
)


def takes_head_latents(cfg: Any) -> bool:
    """Whether a generator config (or its dict) takes the synthetic heads' latent as z: a distilled model.

    Why it matters: such a z means the same head in every model that takes it (a fixed map to the head's
    parameters), so whatever predicts it from a photo - the encoder trained on data heads - fits every snapshot
    of every distilled model. Those configs keep z at its length (``normalize_z`` False; StyleGAN's
    normalisation would lose what the length says) and have room for all the coordinates (extra ones carry
    nothing). Both mapping-network families (eg3d, mimic3d) read z the same way, so the family does not matter.
    """
    get = cfg.get if isinstance(cfg, dict) else (lambda key, default=None: getattr(cfg, key, default))
    z_dim = get("z_dim", None)
    return isinstance(z_dim, int) and z_dim >= HEAD_LATENT_DIMS and get("normalize_z", True) is False


@dataclass(frozen=True)
class RenderingConfig:
    """Volume-rendering settings (the official ``rendering_kwargs`` that matter at inference)."""

    ray_start: float | Literal["auto"] = 2.25
    ray_end: float | Literal["auto"] = 3.3
    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    box_warp: float = 1.0
    white_back: bool = False
    clamp_mode: Literal["softplus"] = "softplus"
    disparity_space_sampling: bool = False
    avg_camera_radius: float = 2.7
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    focal: float = 4.2647
    c_gen_conditioning_zero: bool = False
    c_scale: float = 1.0
    superresolution_noise_mode: Literal["none", "const", "random"] = "none"
    sr_antialias: bool = True

    # Bounds of the numbers a model file may give (config_fields.check_fields); generous for any real model
    # (official: 48-64 samples per ray), tight enough that a config cannot ask for absurd sample counts.
    FIELD_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "ray_start": (0.0, 1e4), "ray_end": (0.0, 1e4), "depth_resolution": (1, 512),
        "depth_resolution_importance": (0, 512), "box_warp": (1e-6, 1e4), "avg_camera_radius": (1e-6, 1e4),
        "avg_camera_pivot": (-1e4, 1e4), "focal": (1e-6, 1e4), "c_scale": (-1e4, 1e4),
    }


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to build a tri-plane generator.

    ``family`` picks the backbone variant: ``eg3d`` (StyleGAN2 backbone whose 96-channel output image is the
    tri-plane) or ``mimic3d`` (the same 2D backbone plus 3D-aware convolution blocks ``b3d{r}`` whose output
    is the tri-plane, and optionally the 512² detail plane of the "3d" stage).
    """

    name: str = "custom"
    family: Family = "eg3d"
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    mapping_layers: int = 2
    # StyleGAN normalises z to unit second moment, which discards its length. Distilled models whose z is a
    # calibrated latent (each coordinate one head parameter, see train/synthetic/latent.py) keep it.
    normalize_z: bool = True
    # Fixed one-hot features of z for the mapping network: for each (coordinate, ascending bin edges), which
    # bin that coordinate falls in. A discrete choice of a calibrated latent is then linear in the input
    # instead of a step the network must learn (see train/synthetic/latent.py latent_bins). () for GANs.
    z_bins: tuple[tuple[int, tuple[float, ...]], ...] = ()
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    img_resolution: int = 512
    img_channels: int = 3
    triplane_resolution: int = 256
    triplane_channels: int = 96
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    superresolution: SuperResolutionKind = "hybrid8xdc"
    sr_fp16: bool = True
    # Overrides for small models; None keeps the official module's fixed sizes.
    sr_input: int | None = None
    sr_channels: tuple[int, int] | None = None
    decoder_hidden: int = 64
    decoder_output_dim: int = 32
    decoder_lr_mul: float = 1.0
    neural_rendering_resolution: int = 128
    projection: Projection = "eg3d"
    aware3d_res: tuple[int, ...] = ()
    detail_plane: bool = False
    # Aware3D's own models: 'gradient' learns a backdrop (a top and a bottom colour/feature vector per head,
    # blended by image row) composited behind the volume, so the tri-planes need not model the image
    # background as geometry. Official checkpoints use 'none'.
    background: Literal["none", "gradient"] = "none"
    # The density of the surface a mesh of this model is made at when the user names none. EG3D's convention
    # is 10; a distilled model's is measured against the true heads (``aware3d-train mesh-level --write``):
    # the level whose surface lies closest to the truth.
    mesh_level: float = 10.0
    rendering: RenderingConfig = field(default_factory=RenderingConfig)

    # Bounds of the numbers a model file may give (config_fields.check_fields). Every official and Aware3D
    # config fits well inside them (the largest official: 512² images, 256² (Mimic3D: 512²) tri-planes of 96
    # channels, 512 channels per layer); with them one layer of a network built from a file holds at most
    # 2048² · 3² weights, and one tri-plane at most 1024² · 384 values per sample. The tensors' shapes are
    # checked against the config (on the meta device) before anything is allocated.
    FIELD_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "z_dim": (1, 4096), "w_dim": (1, 4096), "c_dim": (0, 1024), "mapping_layers": (0, 64),
        "mapping_lr_multiplier": (1e-9, 1e3), "w_avg_beta": (0.0, 1.0), "img_resolution": (4, 2048),
        "img_channels": (1, 64), "triplane_resolution": (4, 1024), "triplane_channels": (3, 384),
        "channel_base": (1, 1 << 22), "channel_max": (1, 2048), "num_fp16_res": (0, 64),
        "conv_clamp": (0.0, 1e9), "sr_input": (4, 1024), "sr_channels": (1, 2048), "decoder_hidden": (1, 2048),
        "decoder_output_dim": (1, 2048), "decoder_lr_mul": (1e-9, 1e3), "neural_rendering_resolution": (4, 1024),
        "aware3d_res": (4, 1024), "z_bins": (-1e6, 1e6), "mesh_level": (1e-3, 1e3),
    }

    def __post_init__(self) -> None:
        res = self.triplane_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"triplane_resolution must be a power of two >= 4, got {res}")
        if self.triplane_channels % 3:
            raise ValueError("triplane_channels must be divisible by 3 (three planes)")
        for r in self.aware3d_res:
            if r not in self.block_resolutions:
                raise ValueError(f"aware3d resolution {r} is not a backbone block resolution")
        if self.family == "eg3d" and (self.aware3d_res or self.detail_plane):
            raise ValueError("aware3d_res and detail_plane need family='mimic3d'")
        if self.aware3d_res and list(self.aware3d_res) != self.block_resolutions[-len(self.aware3d_res):]:
            raise ValueError("aware3d_res must be consecutive block resolutions ending at the tri-plane "
                             f"resolution, got {list(self.aware3d_res)}")
        if self.detail_plane and not self.aware3d_res:
            raise ValueError("the detail plane needs 3D-aware blocks (aware3d_res)")
        if self.channel_base < self.triplane_resolution:  # block_channels would be 0 at the last block
            raise ValueError(f"channel_base ({self.channel_base}) must be at least the tri-plane resolution "
                             f"({self.triplane_resolution}): every block needs a channel")
        if len(self.z_bins) > self.z_dim:
            raise ValueError(f"z_bins lists {len(self.z_bins)} coordinates, z has {self.z_dim}")
        for index, edges in self.z_bins:
            if not isinstance(index, int) or not 0 <= index < self.z_dim:
                raise ValueError(f"z_bins coordinate {index!r} is outside z (0-{self.z_dim - 1})")
            if not 1 <= len(edges) <= 64 or any(not math.isfinite(e) for e in edges) or list(edges) != sorted(edges):
                raise ValueError(f"z_bins edges of coordinate {index} must be 1-64 ascending finite numbers")
        if self.superresolution != "none":
            assert self.sr_input_resolution is not None
            expected = self.sr_input_resolution * (4 if self.superresolution == "hybrid8xdc" else 2)
            if self.img_resolution != expected:
                raise ValueError(f"{self.superresolution} produces {expected}² images, "
                                 f"but img_resolution is {self.img_resolution}")

    # Derived quantities -------------------------------------------------------------------------------

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.triplane_resolution)) + 1)]

    def block_channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def z_bin_features(self) -> int:
        """Width of the one-hot bin features the mapping network adds to z."""
        return sum(len(edges) + 1 for _, edges in self.z_bins)

    @property
    def num_ws(self) -> int:
        """Number of w vectors: b4 has one conv, later blocks two, plus the last block's torgb."""
        return 1 + 2 * (len(self.block_resolutions) - 1) + 1

    @property
    def plane_channels(self) -> int:
        return self.triplane_channels // 3

    @property
    def sr_input_resolution(self) -> int | None:
        if self.superresolution == "none":
            return None
        return self.sr_input or SR_INPUT_RESOLUTION[self.superresolution]

    @property
    def sr_block_channels(self) -> tuple[int, int]:
        return self.sr_channels or SR_BLOCK_CHANNELS[self.superresolution]

    # Serialisation ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """A config from its stored form (lists for tuples). Unknown fields, wrong types and out-of-range
        numbers raise ``ValueError`` naming the field, so a file's header cannot reach the network's
        constructor with them."""
        if not isinstance(data, dict):
            raise ValueError(f"the generator config must be an object, got {type(data).__name__}")
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UnknownFieldsError(f"unknown generator config fields: {sorted(unknown)}")
        check_fields(cls, data, cls.FIELD_RANGES)
        rendering = dict(data.pop("rendering", {}) or {})  # a copy: the caller's dict stays as it was
        rknown = {f.name for f in dataclasses.fields(RenderingConfig)}
        runknown = set(rendering) - rknown
        if runknown:
            raise UnknownFieldsError(f"unknown rendering config fields: {sorted(runknown)}")
        if "avg_camera_pivot" in rendering:
            rendering["avg_camera_pivot"] = tuple(rendering["avg_camera_pivot"])
        for key in ("aware3d_res", "sr_channels"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if data.get("z_bins") is not None:
            try:
                data["z_bins"] = tuple((int(i), tuple(float(e) for e in edges)) for i, edges in data["z_bins"])
            except (TypeError, ValueError):
                raise ValueError("z_bins must be a list of [coordinate, [edges...]] pairs") from None
        return cls(rendering=RenderingConfig(**rendering), **data)

    def replace(self, **changes: Any) -> GeneratorConfig:
        return dataclasses.replace(self, **changes)
