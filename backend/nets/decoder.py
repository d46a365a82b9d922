"""The tri-plane feature decoder (EG3D's OSGDecoder): plane features → density and 32 colour features."""

from __future__ import annotations

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

    def density_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Only the raw ``sigma`` (column 0 of :meth:`decode_into`) into ``out`` [P, 1]: a mesh grid needs
        nothing else, and the 32 colour outputs and their squash are half of the decoder's work."""
        fc1, act, fc2 = self.net
        assert isinstance(fc1, FullyConnectedLayer) and isinstance(fc2, FullyConnectedLayer)
        h = act(fc1(x))
        w2 = fc2.weight[:1].to(x.dtype) * fc2.weight_gain
        if fc2.bias is None:
            return torch.mm(h, w2.t(), out=out)
        b2 = fc2.bias[:1].to(x.dtype)
        b2 = b2 * fc2.bias_gain if fc2.bias_gain != 1 else b2
        return torch.addmm(b2.unsqueeze(0), h, w2.t(), out=out)

    def decode_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The decoder on plane-mean features ``x`` [P, C], written into ``out`` [P, 1 + output_dim].

        The fast kernels' form of :meth:`forward` (no autograd: callers use it under no-grad only): the input
        is already the mean over planes (``sample_rows`` folds it into its weights), the second layer writes
        into the caller's buffer (no per-chunk output allocation, no split copies), and the colour squash runs
        in place on ``out[:, 1:]``. Column 0 is the raw ``sigma``, columns 1: the features, as in ``forward``.
        """
        fc1, act, fc2 = self.net
        assert isinstance(fc1, FullyConnectedLayer) and isinstance(fc2, FullyConnectedLayer)
        h = act(fc1(x))
        w2 = fc2.weight.to(x.dtype) * fc2.weight_gain
        b2 = fc2.bias
        if b2 is None:
            torch.mm(h, w2.t(), out=out)
        else:
            b2 = b2.to(x.dtype) * fc2.bias_gain if fc2.bias_gain != 1 else b2.to(x.dtype)
            torch.addmm(b2.unsqueeze(0), h, w2.t(), out=out)
        out[:, 1:].sigmoid_().mul_(1 + 2 * 0.001).sub_(0.001)
        return out


def fast_block(device: torch.device) -> int:
    """Points per fast-query block: on CPU small enough that the block's temporaries (indices, weights,
    hidden activations: ~1 KiB a point) stay in cache and malloc's heap instead of fresh page-faulted memory;
    on GPUs large, so that a block is enough work for a launch."""
    return 32768 if device.type == "cpu" else 1 << 20


def query_rows(
    decoder: Decoder, table: PlaneRows, coords: torch.Tensor, projection: str, box_warp: float,
    block: int | None = None, density_only: bool = False,
) -> dict[str, torch.Tensor]:
    """``G.query``'s fast kernels: tri-plane sampling (:func:`sample_rows`) + :meth:`Decoder.decode_into`.

    ``coords`` [N, M, 3] with N equal to the table's batch. Returns the same dict as the reference path, as
    views of one [N, M, 1 + output_dim] buffer; ``density_only``: only 'sigma' (mesh grids). No autograd
    (callers check).
    """
    n, m, _ = coords.shape
    if n != table.batch:
        raise ValueError(f"{n} coordinate sets for planes of batch {table.batch}")
    width = 1 if density_only else 1 + decoder.output_dim
    out = torch.empty(n, m, width, dtype=table.rows.dtype, device=coords.device)
    decode = decoder.density_into if density_only else decoder.decode_into
    block = block or fast_block(coords.device)
    axes = torch.tensor([a for pair in PLANE_AXES[projection] for a in pair], device=coords.device)
    with torch.no_grad():
        for b in range(n):
            for s in range(0, m, block):
                e = min(s + block, m)
                feats = sample_rows(table, coords[b, s:e], b, projection, box_warp, axes)
                decode(feats, out[b, s:e])
    return {"sigma": out} if density_only else {"sigma": out[..., :1], "rgb": out[..., 1:]}


def records_grad(decoder: Decoder, planes: list[torch.Tensor], coords: torch.Tensor) -> bool:
    """Whether autograd would record a query: then the reference path runs (the fast one is inference-only)."""
    if not torch.is_grad_enabled():
        return False
    return coords.requires_grad or any(p.requires_grad for p in planes) or any(
        q.requires_grad for q in decoder.parameters())
