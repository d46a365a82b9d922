"""Learned layers with StyleGAN2's equalised learning rate.

Parameters are stored unscaled and multiplied by a constant gain at run time, so the tensors in the state
dict have exactly the values (and names) of the official checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from backend.nets import fast_conv, ops


class FullyConnectedLayer(nn.Module):
    """Linear layer: effective weight ``W · lr_mul / sqrt(in)``, effective bias ``b · lr_mul``."""

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
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return ops.bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (and the camera label c) → w, broadcast to ``num_ws`` copies, with truncation towards ``w_avg``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
        embed_features: int | None = None,
        layer_features: int | None = None,
        normalize_z: bool = True,
        z_bins: tuple[tuple[int, tuple[float, ...]], ...] = (),
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.normalize_z = normalize_z
        # Fixed (not learned, not in the state dict) bin edges of z's discrete coordinates: their one-hot bins
        # follow z in the first layer's input.
        self.z_bins = tuple((int(i), tuple(float(e) for e in edges)) for i, edges in z_bins)
        bin_features = sum(len(edges) + 1 for _, edges in self.z_bins)
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim == 0:
            embed_features = 0
        features = [z_dim + bin_features + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            assert z is not None
            z = z.to(torch.float32)
            parts.append(ops.normalize_2nd_moment(z) if self.normalize_z else z)
            parts += self._bin_features(z)
        if self.c_dim > 0:
            assert c is not None
            parts.append(ops.normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = x.clone()
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


    def _bin_features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """One one-hot [N, len(edges) + 1] per binned coordinate of z."""
        out = []
        for index, edges in self.z_bins:
            bounds = torch.tensor(edges, dtype=z.dtype, device=z.device)
            k = torch.bucketize(z[:, index].contiguous(), bounds)
            out.append(torch.nn.functional.one_hot(k, len(edges) + 1).to(z.dtype))
        return out


def aware3d(x: torch.Tensor) -> torch.Tensor:
    """Mimic3D's 3D-aware feature exchange between the three planes.

    ``x`` is [B·3, C, S, S] (plane index fastest within each sample, planes P0=[y,x], P1=[z,y], P2=[x,z] in
    (row, column) order). Each plane gets 3C channels ordered by plane index: its own features in its slot,
    and in the other slots the other planes mean-pooled along the axis this plane lacks, broadcast over it.
    """
    bc, c, s, _ = x.shape
    p = x.reshape(-1, 3, c, s, s)
    p0, p1, p2 = p[:, 0], p[:, 1], p[:, 2]
    # Mean over rows (dim -2) gives a function of the column; over columns (dim -1) of the row.
    p0_rows, p0_cols = p0.mean(dim=-2), p0.mean(dim=-1)   # f(c) = mean_k P0(k,c); g(r) = mean_k P0(r,k)
    p1_rows, p1_cols = p1.mean(dim=-2), p1.mean(dim=-1)
    p2_rows, p2_cols = p2.mean(dim=-2), p2.mean(dim=-1)

    def along_rows(v: torch.Tensor) -> torch.Tensor:  # value depends on the row index r
        return v.unsqueeze(-1).expand(-1, -1, s, s)

    def along_cols(v: torch.Tensor) -> torch.Tensor:  # value depends on the column index c
        return v.unsqueeze(-2).expand(-1, -1, s, s)

    out0 = torch.cat([p0, along_rows(p1_rows), along_cols(p2_cols)], dim=1)
    out1 = torch.cat([along_cols(p0_cols), p1, along_rows(p2_rows)], dim=1)
    out2 = torch.cat([along_rows(p0_rows), along_cols(p1_cols), p2], dim=1)
    return torch.stack([out0, out1, out2], dim=1).reshape(bc, 3 * c, s, s)


def random_noise(
    count: int, resolution: int, device: torch.device, generator: torch.Generator | list[torch.Generator] | None
) -> torch.Tensor:
    """[count, 1, R, R] Gaussian noise. With one generator per sample, each sample's noise depends only on its
    own generator, so any split of a batch (chunks, data-parallel slices) draws the same values."""
    shape = [count, 1, resolution, resolution]
    if not isinstance(generator, list):
        return torch.randn(shape, device=device, generator=generator)
    per = count // len(generator)
    return torch.cat([torch.randn([per, 1, resolution, resolution], device=device, generator=g)
                      for g in generator])


class SynthesisLayer(nn.Module):
    """Modulated 3×3 convolution with optional ×2 up-sampling, noise, bias and leaky ReLU.

    ``roll_out`` selects Mimic3D's per-plane variants: ``'b'`` (styles per plane, the 3D-aware exchange, a
    weight shared by the planes over 3× the input channels) and ``'s'`` (styles per plane, no exchange).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
        roll_out: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.roll_out = roll_out
        self.padding = kernel_size // 2
        self.act_gain = ops.ACTIVATION_GAIN[activation]
        affine_scale = {None: 1, "b": 9, "s": 3}[roll_out]
        weight_in = in_channels * (3 if roll_out == "b" else 1)
        self.affine = FullyConnectedLayer(w_dim, in_channels * affine_scale, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, weight_in, kernel_size, kernel_size]))
        self.register_buffer("resample_filter", ops.setup_filter())
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused: bool = True,
        gain: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        kernels: str = "reference",
    ) -> torch.Tensor:
        styles = self.affine(w)
        if self.roll_out is not None:
            styles = styles.reshape(styles.shape[0] * 3, -1)
        if self.roll_out == "b":
            x = aware3d(x)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = random_noise(x.shape[0], self.resolution, x.device, generator) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if fast_conv.applies(kernels, fused, x):
            return fast_conv.synthesis_layer(x, self.weight, styles, self.bias, noise, self.up, self.padding,
                                             self.resample_filter, self.activation, self.act_gain * gain, clamp)
        x = ops.modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, fused=fused)
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 convolution without demodulation: features → image channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        roll_out: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.roll_out = roll_out
        affine_scale = {None: 1, "b": 9, "s": 3}[roll_out]
        weight_in = in_channels * (3 if roll_out == "b" else 1)
        self.affine = FullyConnectedLayer(w_dim, in_channels * affine_scale, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, weight_in, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # Mimic3D scales by the constructor's in_channels even though the 'b' conv sees 3× as many.
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True,
                kernels: str = "reference") -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if self.roll_out is not None:
            styles = styles.reshape(styles.shape[0] * 3, -1)
        if self.roll_out == "b":
            x = aware3d(x)
        if fast_conv.applies(kernels, fused, x):
            return fast_conv.to_rgb(x, self.weight, styles, self.bias, self.conv_clamp)
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)
