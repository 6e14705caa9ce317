"""Training data: random clips of the procedural world, rendered and encoded."""

from __future__ import annotations

import random

import numpy as np
import torch

from .world import prompt_for, render_clip, sample_spec


def world_batch(rng: random.Random, batch: int, blocks: int, codec):
    """Random world clips: (prompts, pixels (B,3,T,64,64) in [-1,1], latents (B,16,T/4,16,16))."""
    specs = [sample_spec(rng) for _ in range(batch)]
    frames = np.stack([render_clip(spec, 0, blocks * 16) for spec in specs])  # (B, T, 64, 64, 3) uint8
    pixels = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        latent = codec.encode(pixels)
    return [prompt_for(spec) for spec in specs], pixels, latent
