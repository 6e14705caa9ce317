"""Training data: random clips of the procedural world, rendered and encoded, and clips
of the model's own rollouts."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..decoding import Decoded
from ..sampler import PackForcingSampler
from .world import prompt_for, render_clip, sample_spec


def world_batch(rng: random.Random, batch: int, blocks: int, codec):
    """Random world clips: (prompts, pixels (B,3,T,64,64) in [-1,1], latents (B,16,T/4,16,16))."""
    specs = [sample_spec(rng) for _ in range(batch)]
    frames = np.stack([render_clip(spec, 0, blocks * 16) for spec in specs])  # (B, T, 64, 64, 3) uint8
    pixels = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        latent = codec.encode(pixels)
    return [prompt_for(spec) for spec in specs], pixels, latent


@torch.no_grad()
def own_rollout(sampler: PackForcingSampler, text: torch.Tensor, blocks: int):
    """The model's own first `blocks` blocks of each clip, made exactly as sampling makes
    them (its Euler steps, guidance and selection): (latents (B,C,T,H,W), pixels)."""
    codec = sampler.backbone.codec
    latents, pixels = [], []
    try:
        for c in range(blocks):
            sampler.begin_block(c)
            x0 = sampler.denoise_block(c, text)
            px = codec.decode(x0)
            sampler.memory.admit(sampler.write_block(c, x0, text), x0, Decoded(pixels=px), text)
            latents.append(x0)
            pixels.append(px)
    finally:
        sampler.memory.reset()
    return torch.cat(latents, 2), torch.cat(pixels, 2)


def own_revisit_clip(sampler: PackForcingSampler, text: torch.Tensor, blocks: int, loop_blocks: int):
    """A clip whose first camera loop is the model's own rollout and whose later blocks
    are that rollout again, one loop on (the world repeats itself exactly every loop).

    Recall trained on ground truth (the revisit batch) did not carry over to sampling:
    there the past to recall is the model's own, which never looks like the ground truth
    and whose last block does not lead into its first, so no content cue says the camera
    is back (README, v9). With these clips the target of a revisit is whatever the model
    itself showed one loop before, found only in its cache (the camera clock says when)."""
    latent, pixels = own_rollout(sampler, text, loop_blocks)
    bf = sampler.config.block_frames
    frames_per_block = bf * sampler.backbone.codec.temporal_factor
    again = blocks - loop_blocks
    return torch.cat([latent, latent[:, :, : again * bf]],
                     2), torch.cat([pixels, pixels[:, :, : again * frames_per_block]], 2)
