"""The tri-plane feature decoder (EG3D's OSGDecoder): plane features → density and 32 colour features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.nets.layers import FullyConnectedLayer
from backend.render.triplane import PLANE_AXES, PlaneRows, sample_rows


class Decoder(nn.Module):
    """Mean over planes → FC(C→hidden) → softplus → FC(hidden→1+out). View directions are ignored.

    ``sigma`` is the raw density (the renderer applies softplus(σ − 1)); the features are squashed into
    (−0.001, 1.001) so that the first three channels are a colour in about [0, 1].
    """

    def __init__(self, in_features: int, hidden: int = 64, output_dim: int = 32, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, hidden, lr_multiplier=lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + output_dim, lr_multiplier=lr_mul),
        )

    def forward(self, plane_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``plane_features`` [N, 3, M, C] → {'sigma': [N, M, 1], 'rgb': [N, M, output_dim]}."""
        x = plane_features.mean(dim=1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return {"sigma": x[..., 0:1], "rgb": rgb}

    def fast_weights(self, dtype: torch.dtype, density_only: bool = False) -> FastDecoderWeights:
        """The effective weights in the fast kernels' layout (see :class:`FastDecoderWeights`)."""
        fc1, _, fc2 = self.net
        assert isinstance(fc1, FullyConnectedLayer) and isinstance(fc2, FullyConnectedLayer)
        w1 = (fc1.weight.to(dtype) * fc1.weight_gain).t().contiguous()
        b1 = torch.zeros(fc1.out_features, dtype=dtype, device=w1.device) if fc1.bias is None else (
            fc1.bias.to(dtype) * fc1.bias_gain if fc1.bias_gain != 1 else fc1.bias.to(dtype))
        rows = slice(0, 1) if density_only else slice(None)
        w2 = fc2.weight[rows].to(dtype) * fc2.weight_gain
        b2 = torch.zeros(w2.shape[0], dtype=dtype, device=w2.device) if fc2.bias is None else (
            fc2.bias[rows].to(dtype) * fc2.bias_gain if fc2.bias_gain != 1 else fc2.bias[rows].to(dtype))
        return FastDecoderWeights(w1, b1.unsqueeze(0), torch.cat([w2.t(), b2.unsqueeze(0)]).contiguous(),
                                  density_only)


@dataclass(frozen=True)
class FastDecoderWeights:
    """The decoder's effective weights, prepared once per query for the fast kernels.

    ``w1`` [C, H] and ``b1`` [1, H]: the first layer (gains applied, transposed for ``addmm``). ``w2`` [H + 1,
    O]: the second layer with its bias as the last row, so that one plain ``mm`` of hidden activations
    carrying a constant-1 column computes it (no bias broadcast into every output block). ``O`` is 1 + the
    feature channels, or 1 (``density_only``: a mesh grid needs the density alone, and the colour outputs
    are half of the decoder's work).
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    density_only: bool

    def hidden_buffer(self, rows: int) -> torch.Tensor:
        """A reusable [rows, H + 1] work buffer whose last column is 1 (the second layer's bias input)."""
        h = torch.empty(rows, self.w2.shape[0], dtype=self.w1.dtype, device=self.w1.device)
        h[:, -1] = 1
        return h

    def decode_into(self, x: torch.Tensor, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The decoder on plane-mean features ``x`` [P, C] into ``out`` [P, O] (no autograd).

        The input is already the mean over planes (``sample_rows`` folds it into its weights); the hidden
        layer lives in ``hidden`` (from :meth:`hidden_buffer`, at least P rows) with softplus applied in
        place; the colour squash runs in place on ``out[:, 1:]``. Column 0 is the raw ``sigma``, columns 1:
        the features, as in :meth:`Decoder.forward`; equal to it within float rounding.
        """
        h = hidden[: x.shape[0]]
        pre = h[:, :-1]
        torch.addmm(self.b1, x, self.w1, out=pre)
        torch.ops.aten.softplus.out(pre, 1, 20, out=pre)  # nn.Softplus() (beta 1, threshold 20), in place
        torch.mm(h, self.w2, out=out)
        if not self.density_only:
            out[:, 1:].sigmoid_().mul_(1 + 2 * 0.001).sub_(0.001)
        return out


def fast_block(device: torch.device) -> int:
    """Points per fast-query block. CPU: 32 k points, whose temporaries (indices, weights, hidden activations:
    ~1 KiB a point) stay in malloc's heap instead of fresh page-faulted memory, and still few enough blocks
    that per-op overhead is small (8 k was slower, 64 k no faster). GPUs: 256 k points, enough work per
    launch while the hidden buffer stays ~70 MB."""
    return 32768 if device.type == "cpu" else 1 << 18


def query_rows(
    decoder: Decoder, table: PlaneRows, coords: torch.Tensor, projection: str, box_warp: float,
    block: int | None = None, density_only: bool = False,
) -> dict[str, torch.Tensor]:
    """``G.query``'s fast kernels: tri-plane sampling (:func:`sample_rows`) + the decoder
    (:meth:`FastDecoderWeights.decode_into`), block by block into one output buffer.

    ``coords`` [N, M, 3] with N equal to the table's batch. Returns the same dict as the reference path, as
    views of one [N, M, 1 + output_dim] buffer; ``density_only``: only 'sigma' (mesh grids). No autograd
    (callers check).
    """
    n, m, _ = coords.shape
    if n != table.batch:
        raise ValueError(f"{n} coordinate sets for planes of batch {table.batch}")
    width = 1 if density_only else 1 + decoder.output_dim
    out = torch.empty(n, m, width, dtype=table.rows.dtype, device=coords.device)
    block = block or fast_block(coords.device)
    axes = torch.tensor([a for pair in PLANE_AXES[projection] for a in pair], device=coords.device)
    with torch.no_grad():
        weights = decoder.fast_weights(table.rows.dtype, density_only)
        hidden = weights.hidden_buffer(min(block, m))
        for b in range(n):
            for s in range(0, m, block):
                e = min(s + block, m)
                feats = sample_rows(table, coords[b, s:e], b, projection, box_warp, axes)
                weights.decode_into(feats, hidden, out[b, s:e])
    return {"sigma": out} if density_only else {"sigma": out[..., :1], "rgb": out[..., 1:]}


def needs_reference(decoder: Decoder, planes: list[torch.Tensor], coords: torch.Tensor) -> bool:
    """Whether a query must take the reference path: the fast one is inference-only (autograd would record
    it), and autocast would run its exact-integer corner products in bfloat16 (wrong rows) and change its
    arithmetic (training with ``--amp`` renders through the reference path)."""
    if torch.is_autocast_enabled(coords.device.type):
        return True
    if not torch.is_grad_enabled():
        return False
    return coords.requires_grad or any(p.requires_grad for p in planes) or any(
        q.requires_grad for q in decoder.parameters())
