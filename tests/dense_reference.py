"""Test-only references, written apart from the package so they share none of its code:
RoPE as Wan's original complex multiply with diffusers' own frequencies, the selection
score as a literal double sum, and a cheap linear codec for fast streams."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from packforcing.backbone import Backbone
from packforcing.backbones.tiny import TINY_TRANSFORMER, HashTextEncoder


def wan_split(head_dim: int) -> tuple[int, int, int]:
    """Wan's temporal / height / width channel split (diffusers' WanRotaryPosEmbed)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def cis(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(S, head_dim/2) complex128 e^{i theta pos}, from diffusers' get_1d_rotary_pos_embed."""
    parts = [get_1d_rotary_pos_embed(d, p.double(), use_real=False, freqs_dtype=torch.float64)
             for d, p in zip(wan_split(head_dim), (t, h, w))]
    return torch.cat(parts, dim=1)


def rotate(x: torch.Tensor, t, h, w) -> torch.Tensor:
    """Wan's original rope_apply: channel pairs (x0 + i x1) times e^{i theta pos}; x (B, S, H, D)."""
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    out = z * cis(t, h, w, x.shape[-1])[None, :, None, :]
    return torch.view_as_real(out).flatten(-2).to(x.dtype)


def grid(frames: int, height: int, width: int, t0=0.0, span=(1.0, 1.0, 1.0), centre=(0.0, 0.0, 0.0)):
    """(t, h, w) float64 positions of a token grid in row-major order."""
    axes = [c + s * torch.arange(n, dtype=torch.float64) for n, s, c in zip((frames, height, width), span, centre)]
    t, h, w = torch.meshgrid(axes[0] + t0, axes[1], axes[2], indexing="ij")
    return t.reshape(-1), h.reshape(-1), w.reshape(-1)


def brute_force_scores(queries: torch.Tensor, keys: dict[int, torch.Tensor], scored_heads: int) -> dict[int, float]:
    """Every query-key dot product summed, / sqrt(d), mean over the first `scored_heads`
    heads and the batch: queries (B, Sq, H, D), keys[m] (B, Sk, H, D)."""
    head_dim = queries.shape[-1]
    q = queries[:, :, :scored_heads].double()
    pairs = {m: torch.einsum("bihd,bjhd->bhij", q, k[:, :, :scored_heads].double()) for m, k in keys.items()}
    return {m: float(p.sum(dim=(-1, -2)).mean() / math.sqrt(head_dim)) for m, p in pairs.items()}


def top_k_newest_wins(scores: dict[int, float], k: int) -> list[int]:
    """The k best blocks in temporal order; among equal scores the newer block wins."""
    ranked = sorted(scores, key=lambda m: (-scores[m], -m))
    return sorted(ranked[:k])


class FoldCodec:
    """A linear stand-in for the VAE (4 frames x 8 x 8 pixels -> one latent cell), so a
    stream's decode and LR re-encode cost microseconds instead of seconds."""

    latent_channels = 16
    spatial_factor = 8
    temporal_factor = 4
    first_frame_alone = False

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.enc = torch.randn(16, 3, generator=g)
        self.dec = torch.randn(3, 16, generator=g) / 8

    def encode(self, pixels):
        return torch.einsum("oc,bcthw->bothw", self.enc, F.avg_pool3d(pixels.float(), (4, 8, 8)))

    def decode(self, latent):
        px = torch.einsum("co,bothw->bcthw", self.dec, latent.float())
        return px.repeat_interleave(4, 2).repeat_interleave(8, 3).repeat_interleave(8, 4).clamp(-1, 1)

    def stream_decoder(self):
        return self

    def decode_next(self, latent):
        return self.decode(latent)


def fold_backbone(width: int = 128, height: int = 128, heads: int = 4, seed: int = 0) -> Backbone:
    """A random tiny Wan transformer (heads x 12 channels, 2 layers) behind the FoldCodec."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**{**TINY_TRANSFORMER, "num_attention_heads": heads}).eval()
    return Backbone(name="fold", transformer=transformer, codec=FoldCodec(seed), width=width, height=height,
                    encode_prompt=HashTextEncoder(transformer.config.text_dim, seed=seed))


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Tiny models run op by op: one thread is faster, and on a shared, loaded box two
    spinning threads per op are tens of times slower. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
