"""Compressing a block that leaves the recent window: 6,240 -> 182 tokens at 832x480.

HR branch: progressive Conv3D on the latent, kernel = stride (learned).
LR branch: decode -> average-pool 2x4x4 -> re-encode with the frozen codec -> the
backbone's own patch embedding (training-free).
Both land on the same (block_frames/2, h/8, w/8) token grid and are fused by sum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .memory import HR_STRIDES

# Paper's schedule: 16 -> 32 s(2,1,1) -> 128 s(1,2,2) -> 512 s(1,2,2) -> 2048 s(1,2,2) -> 1536 s1.
HR_WIDTHS = (32, 128, 512, 2048)
LR_POOL = (2, 4, 4)


def token_span(patch: tuple[int, int, int]) -> tuple[float, float, float]:
    """Full-resolution tokens one compressed token spans per axis (t, h, w): the HR
    branch's total stride (2, 8, 8 latent cells) over the patch. Wan's (1, 2, 2) patch:
    2 x 4 x 4 tokens; a (1, 4, 4) patch: 2 x 2 x 2."""
    total = [math.prod(stride[axis] for stride in HR_STRIDES) for axis in range(3)]
    return tuple(float(t / p) for t, p in zip(total, patch, strict=True))


class HRCompressor(nn.Module):
    def __init__(self, latent_channels: int = 16, inner_dim: int = 1536, widths: tuple[int, ...] = HR_WIDTHS):
        super().__init__()
        if len(widths) != len(HR_STRIDES):
            raise ValueError(f"widths={widths} must have {len(HR_STRIDES)} entries (one per strided conv)")
        layers, channels = [], latent_channels
        for width, stride in zip(widths, HR_STRIDES):
            layers += [nn.Conv3d(channels, width, kernel_size=stride, stride=stride), nn.SiLU()]
            channels = width
        layers.append(nn.Conv3d(channels, inner_dim, kernel_size=1))
        self.net = nn.Sequential(*layers)

    def restart(self) -> None:
        """Fresh weights with a zero output layer: the fused tokens start as the LR
        branch's alone, and the HR branch learns only what it adds to them."""
        for layer in self.net:
            if isinstance(layer, nn.Conv3d):
                layer.reset_parameters()
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) latent -> (B, inner_dim, F/2, H/8, W/8) token grid."""
        return self.net(latent)


def lr_latent(pixels: torch.Tensor, codec) -> torch.Tensor:
    """(B, 3, T, H, W) pixels in [-1, 1] -> the pooled clip re-encoded by the frozen codec."""
    pooled = F.avg_pool3d(pixels.float(), kernel_size=LR_POOL, stride=LR_POOL)
    with torch.no_grad():
        return codec.encode(pooled.to(pixels.dtype))


def fit_lr_to_grid(latent: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Crop (or zero-pad) the re-encoded LR latent so patch embedding yields exactly `grid`."""
    f, h, w = grid
    target = (f * patch[0], h * patch[1], w * patch[2])
    latent = latent[:, :, : target[0], : target[1], : target[2]]
    pad = [0, target[2] - latent.shape[4], 0, target[1] - latent.shape[3], 0, target[0] - latent.shape[2]]
    return F.pad(latent, pad) if any(pad) else latent
