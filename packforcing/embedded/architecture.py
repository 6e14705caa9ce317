"""What the embedded models share: the v10 transformer's shape, the HR compressor's widths
and the prompt encoder (v11's camera model is v10's transformer with 4x4 patches)."""

from __future__ import annotations

import torch

EMBEDDED_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    text_dim=64,
    freq_dim=64,
    ffn_dim=512,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
EMBEDDED_HR_WIDTHS = (32, 64, 128, 128)


class PromptEncoder:
    """prompt -> (1, L, text_dim) through the world's tokenizer and the trained encoder."""

    def __init__(self, text_encoder):
        self.text_encoder = text_encoder

    def __call__(self, prompt: str) -> torch.Tensor:
        from .vocab import tokenize

        ids = tokenize(prompt).reshape(1, -1).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(ids)
