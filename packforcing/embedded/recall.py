"""Recall probe for the embedded model: teacher-forced flow losses per block under a
chosen selection of the mid bank, and samples from noise over a given past.
bench/recall.py runs it and explains the measurements."""

from __future__ import annotations

import statistics

import torch

from ..decoding import Decoded
from ..sampler import PackForcingSampler
from .model import EMBEDDED_CONFIG
from .world import LOOP_FRAMES

SELECTIONS = ("dynamic", "oracle", "anti", "window")


def with_foreign_sources(pixels, latent, loop_blocks: int, block_frames: int, frames_per_block: int):
    """The clips with their first `loop_blocks - 2` blocks (the sink and the sources of
    blocks loop..loop+5) taken from another clip of the batch (clip i gets clip i-1's,
    `roll(1)`); the blocks just before a revisit stay true."""
    n = loop_blocks - 2
    latent, pixels = latent.clone(), pixels.clone()
    latent[:, :, : n * block_frames] = latent[:, :, : n * block_frames].roll(1, dims=0)
    pixels[:, :, : n * frames_per_block] = pixels[:, :, : n * frames_per_block].roll(1, dims=0)
    return pixels, latent


@torch.no_grad()
def probe(backbone, text, pixels, latent, selection: str, sigma: float, seed: int, cfg=EMBEDDED_CONFIG, truth=None,
          sample_from: int | None = None,
          samples: dict | None = None):
    """Per-block losses and, per block, whether the revisit source was attended (None: not in the bank).

    The cache is written from `latent` / `pixels`; losses are against `truth` (default:
    `latent`). From block `sample_from` on, each block is sampled from noise with the
    sampler (the history stays the given one) and its squared error against the truth is
    reported instead of a flow loss (`samples`, when given, collects them by block)."""
    truth = latent if truth is None else truth
    sampler = PackForcingSampler(backbone, cfg, seed=seed)
    cache = sampler.memory.cache
    gen = torch.Generator().manual_seed(seed)
    bf = cfg.block_frames
    frames_per_block = bf * backbone.codec.temporal_factor
    loop = LOOP_FRAMES // frames_per_block
    losses, hits = [], []
    for c in range(latent.shape[2] // bf):
        x0, target = latent[:, :, c * bf : (c + 1) * bf], truth[:, :, c * bf : (c + 1) * bf]
        bank, source = list(cache.mid), c - loop
        sampler.begin_block(c, selection=_override(selection, bank, source, cfg.top_k))
        if sample_from is not None and c >= sample_from:
            sample = sampler.denoise_block(c, text)
            losses.append(sample_error(sample, truth, c, bf))
            if samples is not None:
                samples[c] = sample
        else:
            noise = torch.randn(x0.shape, generator=gen)
            x_t = (1 - sigma) * target + sigma * noise
            v = sampler.forward(x_t, torch.full((x0.shape[0],), sigma * cfg.num_train_timesteps), text)
            losses.append(((v - (noise - target)) ** 2).mean().item())
        hits.append(source in cache.selected if source in bank else None)
        sampler.memory.admit(sampler.write_block(c, x0, text), x0,
                             Decoded(pixels=pixels[:, :, c * frames_per_block : (c + 1) * frames_per_block]), text)
    sampler.memory.reset()
    return losses, hits


def _override(selection: str, bank: list[int], source: int, top_k: int) -> list[int] | None:
    """The mid blocks a probe's selection attends, or None for the model's own (dynamic)."""
    if selection == "oracle" and source in bank:
        return sorted([m for m in bank if m != source][-(top_k - 1):] + [source])
    if selection == "anti" and source in bank:
        return [m for m in bank if m != source][-top_k:]
    if selection == "window" and bank:
        return []
    return None


def sample_error(sample, clips, block: int, block_frames: int) -> float:
    """Mean squared error of a sampled block against block `block` of `clips`."""
    return ((sample - clips[:, :, block * block_frames : (block + 1) * block_frames]) ** 2).mean().item()


def ranges(per_block):
    return {
        "new_1_7": round(statistics.mean(per_block[1:8]), 4),
        "sink_revisit_8_9": round(statistics.mean(per_block[8:10]), 4),
        "mid_revisit_10_13": round(statistics.mean(per_block[10:14]), 4),
    }
