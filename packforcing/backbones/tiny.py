"""`tiny-random`: a random-weight Wan transformer and Wan VAE built from kwargs.

Streams noise, but exercises every code path of the engine on a CPU in seconds; the
tests and the benchmark use it.
"""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn

from ..backbone import Backbone, WanVAECodec
from ..compression import HRCompressor
from ..registry import ModelEntry

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
TINY_VAE = dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_HR_WIDTHS = (16, 16, 32, 32)


class HashTextEncoder(nn.Module):
    """Words -> rows of a fixed random table (by CRC32), zero rows for padding."""

    def __init__(self, text_dim: int, max_len: int = 16, buckets: int = 4096, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(buckets, text_dim, generator=g), requires_grad=False)
        self.max_len = max_len

    def forward(self, prompt: str) -> torch.Tensor:
        words = re.findall(r"[a-z0-9']+", prompt.lower())[: self.max_len]
        out = torch.zeros(1, self.max_len, self.table.shape[1])
        for i, word in enumerate(words):
            out[0, i] = self.table[zlib.crc32(word.encode()) % self.table.shape[0]]
        return out


def build_tiny_random(seed: int = 0, width: int = 128, height: int = 128, transformer_kwargs=None,
                      vae_kwargs=None) -> Backbone:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**{**TINY_TRANSFORMER, **(transformer_kwargs or {})}).eval()
    vae = AutoencoderKLWan(**{**TINY_VAE, **(vae_kwargs or {})}).eval()
    cfg = transformer.config
    hr = HRCompressor(cfg.in_channels, cfg.num_attention_heads * cfg.attention_head_dim, TINY_HR_WIDTHS).eval()
    text = HashTextEncoder(cfg.text_dim, seed=seed)
    return Backbone(
        name="tiny-random",
        transformer=transformer,
        codec=WanVAECodec(vae),
        encode_prompt=text,
        width=width,
        height=height,
        fps=16,
        hr_compressor=hr,
    )


MODEL = ModelEntry(
    name="tiny-random",
    description="a tiny Wan transformer and VAE with random weights: exercises every part of the engine in seconds "
                "(its frames are noise)",
    load=lambda device=None, dtype=None: build_tiny_random().to(device, dtype),
    default_rank=2,
)
