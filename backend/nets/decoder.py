"""The tri-plane feature decoder (EG3D's OSGDecoder): plane features → density and 32 colour features."""

from __future__ import annotations

import torch
from torch import nn

from backend.nets.layers import FullyConnectedLayer


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
