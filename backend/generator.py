"""The tri-plane generator: EG3D and Mimic3D in one module tree, weight-compatible with both.

Data flow: ``mapping(z, c) → ws → synthesize_planes(ws) → planes``; the planes are the hinge that rendering
(``render``), meshing (``query``) and texturing reuse, so they are computed once per latent. The state-dict
keys and shapes follow the official checkpoints exactly (tests encode the spec's tables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from backend.config import GeneratorConfig
from backend.nets.decoder import Decoder, needs_reference, query_rows
from backend.nets.layers import FullyConnectedLayer
from backend.nets.superresolution import SuperResolution
from backend.nets.synthesis import Backbone, BlockRuntime
from backend.render.rays import label_cameras, pixel_uv, rays_from_uv
from backend.render.renderer import ImportanceRenderer, Kernels, RenderResult, SamplingSettings
from backend.render.triplane import PlaneRows, plane_rows, sample_planes

NoiseMode = Literal["const", "random", "none"]
PlaneSet = Literal["all", "coarse", "detail"]
# What ``render`` returns as ``image_raw``: the volume render ("volume", always the default), or the tensor the
# official ``synthesis()`` returns under that name ("official"; see ``TriPlaneGenerator.render``).
RawMode = Literal["volume", "official"]


class TriPlaneGenerator(nn.Module):
    """A 3D-aware GAN generator built from a :class:`GeneratorConfig`.

    Construction is deterministic: parameters are drawn from ``seed`` without touching the global RNG.
    """

    def __init__(self, cfg: GeneratorConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # Registered by the official training loop before snapshots are written; kept for key parity.
            self.register_buffer("dataset_label_std", torch.ones([cfg.c_dim]))
            self.backbone = Backbone(cfg)
            self.superresolution = SuperResolution(cfg) if cfg.superresolution != "none" else None
            self.decoder = Decoder(cfg.plane_channels, cfg.decoder_hidden, cfg.decoder_output_dim,
                                   cfg.decoder_lr_mul)
            if cfg.background == "gradient":
                self.background = FullyConnectedLayer(cfg.w_dim, 2 * cfg.decoder_output_dim)
        self.renderer = ImportanceRenderer(cfg.rendering)

    # Latents -----------------------------------------------------------------------------------------

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def conditioning(self, c: torch.Tensor) -> torch.Tensor:
        r = self.cfg.rendering
        if r.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return c * r.c_scale

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z [N, z_dim] and conditioning camera labels c [N, 25] → ws [N, num_ws, w_dim]."""
        return self.backbone.mapping(z, self.conditioning(c), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    # Tri-planes --------------------------------------------------------------------------------------

    def synthesize_planes(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        generator: torch.Generator | list[torch.Generator] | None = None,
        fused: bool | None = None,
        kernels: Kernels = "fast",
    ) -> list[torch.Tensor]:
        """ws → list of plane sets [N, 3, C, S, S] (Mimic3D's 3d stage: coarse and detail planes).

        ``kernels='reference'`` runs the official arithmetic op for op (``--exact``); the default fast kernels
        compute the same planes within float rounding and only apply when no gradient is being recorded.
        """
        rt = BlockRuntime(noise_mode=noise_mode, fused=(not self.training) if fused is None else fused,
                          generator=generator, kernels=kernels)
        return self.backbone.synthesis(ws, rt)

    @staticmethod
    def _select(planes: list[torch.Tensor], plane_set: PlaneSet) -> list[torch.Tensor]:
        if plane_set == "all" or len(planes) == 1:
            return planes
        return [planes[0]] if plane_set == "coarse" else [planes[1]]

    def query(
        self, planes: list[torch.Tensor], coords: torch.Tensor, plane_set: PlaneSet = "all",
        kernels: Kernels = "fast", rows: PlaneRows | None = None, density_only: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Density and colour features at world points ``coords`` [N, M, 3].

        Returns {'sigma': [N, M, 1] raw density, 'rgb': [N, M, 32] features (first three: colour in about
        [0, 1])}. EG3D's meshes use the surface ``sigma = 10``.

        ``kernels='fast'`` samples channels-last texel rows with one fused gather and runs the decoder in
        cache-sized blocks (``backend.nets.decoder.query_rows``); it is the reference function within float
        rounding and applies only when autograd records nothing (else the reference runs). ``rows``: the
        selected planes already laid out by ``plane_rows`` (callers that query the same planes many times,
        a render's chunks or a mesh grid, build it once). ``density_only``: the caller reads 'sigma' only (a
        mesh grid); the fast kernels then skip the colour outputs and return no 'rgb'.
        """
        selected = self._select(planes, plane_set)
        if kernels == "fast" and not needs_reference(self.decoder, selected, coords):
            table = rows if rows is not None else plane_rows(selected)
            return query_rows(self.decoder, table, coords, self.cfg.projection, self.cfg.rendering.box_warp,
                              density_only=density_only)
        feats = sample_planes(selected, coords, self.cfg.projection, self.cfg.rendering.box_warp)
        return self.decoder(feats)

    # Rendering ---------------------------------------------------------------------------------------

    def backdrop(self, ws: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        """Background features in [0, 1] ([N, C, M]) at image rows ``v`` ([N, M] or [M], 0 = top)."""
        if self.cfg.background != "gradient":
            return None
        top_bottom = torch.sigmoid(self.background(ws[:, -1])) * (1 + 2 * 0.001) - 0.001
        top, bottom = top_bottom.reshape(ws.shape[0], 2, -1).unbind(1)
        v = v.expand(ws.shape[0], -1) if v.ndim == 1 else v
        t = v.clamp(0, 1).unsqueeze(1)
        return top.unsqueeze(-1) * (1 - t) + bottom.unsqueeze(-1) * t

    def render_rays(
        self,
        planes: list[torch.Tensor],
        c: torch.Tensor,
        uv: torch.Tensor,
        sampling: SamplingSettings | None = None,
        plane_set: PlaneSet = "all",
        on_progress: Callable[[int, int], None] | None = None,
        ws: torch.Tensor | None = None,
    ) -> RenderResult:
        """Volume-render the rays through normalised image points ``uv`` ([M, 2] or [N, M, 2]) of cameras c.

        Returns channels-first per-ray results: features [N, C, M], depth and opacity [N, 1, M].
        """
        selected = self._select(planes, plane_set)
        sampling = sampling or SamplingSettings()
        cam2world, intrinsics = label_cameras(c.to(torch.float32))
        origins, dirs = rays_from_uv(cam2world, intrinsics, uv)
        kernels: Kernels = "reference" if sampling.reference else "fast"
        if kernels == "fast" and needs_reference(self.decoder, selected, origins):
            kernels = "reference"  # training and inversion: the fast kernels are inference-only
        # The fast field reads the planes as texel rows, laid out once for all of this render's chunks.
        rows = plane_rows(selected) if kernels == "fast" else None
        result = self.renderer.render(
            lambda pts: self.query(selected, pts, kernels=kernels, rows=rows),
            origins, dirs, dataclasses.replace(sampling, kernels=kernels) if kernels != sampling.kernels
            else sampling,
            feature_channels=self.cfg.plane_channels * len(selected), hidden=self.cfg.decoder_hidden,
            out_channels=self.cfg.decoder_output_dim, on_chunk=on_progress)
        if self.cfg.background != "none":
            if ws is None:
                raise ValueError("this model composites a learned backdrop: pass ws to render_rays")
            back = self.backdrop(ws, uv[..., 1])
            assert back is not None
            # Features are 2·x − 1 of the accumulated colour x; adding (1 − α)·b behind gives + 2(1 − α)·b.
            result.features = result.features + 2 * (1 - result.weight_sum) * back
        return result

    def super_resolve(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                      fp16: bool = True, kernels: Kernels = "fast") -> torch.Tensor:
        """The final image from a render's colour ``rgb`` and ``features`` (what ``render`` runs)."""
        return self._super_resolve(rgb, features, ws, fp16, kernels)[0]

    def _super_resolve(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                       fp16: bool, kernels: Kernels = "fast") -> tuple[torch.Tensor, torch.Tensor]:
        """The final image and the SR's block0 skip image (``SuperResolution.forward_with_skip``)."""
        if self.superresolution is None:
            raise ValueError(f"model {self.cfg.name!r} has no super-resolution module")
        rt = BlockRuntime(noise_mode=self.cfg.rendering.superresolution_noise_mode, fused=not self.training,
                          force_fp32=not fp16, kernels=kernels)
        return self.superresolution.forward_with_skip(rgb, features, ws, rt)

    def render(
        self,
        planes: list[torch.Tensor],
        ws: torch.Tensor,
        c: torch.Tensor,
        resolution: int | None = None,
        sampling: SamplingSettings | None = None,
        run_sr: bool | Literal["auto"] = "auto",
        fp16_sr: bool = True,
        plane_set: PlaneSet = "all",
        on_progress: Callable[[int, int], None] | None = None,
        image_raw: RawMode = "volume",
    ) -> dict[str, torch.Tensor]:
        """Render the planes from cameras ``c`` [N, 25].

        Returns ``image`` (final, SR or direct), ``image_raw`` [N, 3, R, R], ``image_depth`` [N, 1, R, R]
        (distance along the unit ray, world units), ``feature_image`` [N, C, R, R] and ``image_alpha``
        (accumulated opacity), plus ``image_distortion`` when ``sampling.distortion`` asks for it. Images are in
        [−1, 1]. ``run_sr='auto'`` runs the super-resolution module
        for EG3D models and, as Mimic3D does, only for renders no larger than its input for Mimic3D.

        ``image_raw`` is the volume render by default: the colour that meshes, textures and inversion must
        agree with. ``image_raw='official'`` returns what the official ``synthesis()`` returns under that
        name instead. The two differ only when the SR input needs no resize and its first block does not
        up-sample (2X at a 64² render, 4X at 128²; see ``SuperResolution.adds_into_input``): the official SR
        then adds block0's ToRGB output into the returned tensor in place. The official dual discriminator was
        trained on that quantity, so fine-tuning such a checkpoint should show it to D; nothing else should
        use it. ``image`` is the same in both modes, and ``feature_image[:, :3]`` is always the volume render.
        """
        if image_raw not in ("volume", "official"):
            raise ValueError(f"image_raw must be 'volume' or 'official', got {image_raw!r}")
        res = resolution or self.cfg.neural_rendering_resolution
        uv = pixel_uv(res, c.device)
        result = self.render_rays(planes, c, uv, sampling, plane_set, on_progress, ws=ws)
        n = c.shape[0]
        feature_image = result.features.reshape(n, -1, res, res)
        depth_image = result.depth.reshape(n, 1, res, res)
        alpha_image = result.weight_sum.reshape(n, 1, res, res)
        rgb_image = feature_image[:, :3]
        sr = self.superresolution
        if run_sr == "auto":
            run_sr = sr is not None and (self.cfg.family == "eg3d" or res <= sr.input_resolution)
        raw = image = rgb_image
        if run_sr:
            kernels: Kernels = "reference" if sampling is not None and sampling.reference else "fast"
            image, skip = self._super_resolve(rgb_image, feature_image, ws, fp16_sr, kernels)
            if image_raw == "official" and sr is not None and sr.adds_into_input(res):
                raw = skip
        out = {"image": image, "image_raw": raw, "image_depth": depth_image,
               "feature_image": feature_image, "image_alpha": alpha_image}
        if result.distortion is not None:
            out["image_distortion"] = result.distortion.reshape(n, 1, res, res)
        return out

    def synthesis(
        self,
        ws: torch.Tensor,
        c: torch.Tensor,
        noise_mode: NoiseMode = "const",
        generator: torch.Generator | None = None,
        **render_kwargs: object,
    ) -> dict[str, torch.Tensor]:
        planes = self.synthesize_planes(ws, noise_mode=noise_mode, generator=generator)
        return self.render(planes, ws, c, **render_kwargs)  # type: ignore[arg-type]

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **kwargs: object,
    ) -> dict[str, torch.Tensor]:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **kwargs)  # type: ignore[arg-type]
