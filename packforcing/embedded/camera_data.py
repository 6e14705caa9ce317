"""Training clips for the v11 embedded model: random layouts filmed along camera paths
that come back (loops, out-and-back, wandering), optionally with a prompt switch.

The clips of one batch share one camera path (relative to each clip's random start),
because the engine's cache is batched and shares one selection per block: with one path
the block that filmed a revisited place is the same for every clip.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import panorama as world
from . import vocab

FRAMES_PER_BLOCK = 16
NEAR = 48  # px between block centres: the earlier block filmed (most of) the same place


PATH_KINDS = ("loop", "outback", "wander")
V11_PATHS = {"loop": 2.0, "outback": 5.0, "wander": 3.0}


def sample_path(rng: random.Random, blocks: int, weights: dict[str, float] | None = None) -> list[str]:
    """One direction per block: a loop, an out-and-back, or a wander with stops, drawn
    with the given weights (default: v11's 2 / 5 / 3)."""
    weights = weights or V11_PATHS
    unknown = sorted(set(weights) - set(PATH_KINDS))
    if unknown:
        raise ValueError(f"path kinds {unknown} unknown; allowed: {PATH_KINDS}")
    kinds = [k for k in PATH_KINDS if weights.get(k, 0) > 0]
    kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
    d = rng.choice(["left", "right"])
    back = "left" if d == "right" else "right"
    if kind == "loop":
        return [d] * blocks
    if kind == "outback":
        k = rng.randint(4, max(4, blocks - 4))
        return ([d] * k + [back] * (blocks - k))[:blocks]  # a clip under 4 blocks only goes out
    out: list[str] = []
    while len(out) < blocks:
        out += [rng.choices(["left", "right", "still"], weights=[2, 2, 1])[0]] * rng.randint(1, 4)
    return out[:blocks]


def block_centres(xs: np.ndarray) -> np.ndarray:
    """Mean panorama x of each block's view centre (xs: per-frame camera x of a clip)."""
    return (xs.reshape(-1, FRAMES_PER_BLOCK).mean(1) + world.VIEW / 2) % world.PERIOD


def revisit_sources(xs: np.ndarray, sink_blocks: int = 2, recent_blocks: int = 1) -> list[dict]:
    """Per block: the earlier blocks that filmed its place, split into sink / recent / mid."""
    centres = block_centres(xs)
    rows = []
    for c, centre in enumerate(centres):
        near = [m for m in range(c) if world.circular_distance(centres[m], centre) < NEAR]
        rows.append(
            {
                "sink": [m for m in near if m < sink_blocks],
                "recent": [m for m in near if m >= c - recent_blocks],
                "mid": [m for m in near if sink_blocks <= m < c - recent_blocks],
            }
        )
    return rows


def is_mid_revisit(row: dict) -> bool:
    """A place only the mid bank still holds (the sink and the recent block did not film it)."""
    return bool(row["mid"]) and not row["sink"] and not row["recent"]


@dataclass
class Clips:
    prompts: list[list[str]]  # per block, per clip (the prompt in force)
    pixels: torch.Tensor  # (B, 3, T, 64, 64) in [-1, 1]
    latent: torch.Tensor  # (B, 16, T/4, 16, 16)
    xs: torch.Tensor  # (B, T) camera x per frame
    sources: list[dict]  # per block, from revisit_sources
    switch: int | None  # block from which the second prompt holds


def object_cover(pixels: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, 1, T/cell, H/cell, W/cell): the share of each
    cell's pixels that differ from the plain background (an object or its soft edge)."""
    background = torch.tensor(world.BACKGROUND, dtype=pixels.dtype).view(1, 3, 1, 1, 1) / 127.5 - 1.0
    shown = ((pixels - background).abs().amax(1, keepdim=True) > 0.5 / 127.5).to(pixels.dtype)
    return F.avg_pool3d(shown, cell)


def random_objects(rng: random.Random) -> tuple:
    n = rng.choices([1, 2, 3], weights=[2, 4, 3])[0]
    pairs = [(c, s) for c in vocab.COLOURS for s in vocab.SHAPES]
    return tuple(rng.sample(pairs, n))


def make_clips(rng: random.Random, batch: int, blocks: int, codec, switch_prob: float = 0.0,
               paths: dict[str, float] | None = None) -> Clips:
    path = sample_path(rng, blocks, paths)
    offsets = world.positions(path, 0.0, FRAMES_PER_BLOCK)
    switch = rng.randint(3, blocks - 3) if rng.random() < switch_prob else None
    frames, xs, prompts = [], [], [[] for _ in range(blocks)]
    for _ in range(batch):
        seed = rng.randrange(2**31)
        first = world.PanoramaSpec(random_objects(rng), rng.choice(vocab.PANS), seed)
        second = world.PanoramaSpec(random_objects(rng), first.pan, seed) if switch is not None else first
        x = offsets + rng.randrange(world.PERIOD)
        cut = (switch if switch is not None else blocks) * FRAMES_PER_BLOCK
        frames.append(np.concatenate([world.render(first, x[:cut]), world.render(second, x[cut:])]))
        xs.append(x)
        for c in range(blocks):
            prompts[c].append(world.prompt_for(first if switch is None or c < switch else second))
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        latent = codec.encode(pixels)
    return Clips(
        prompts, pixels, latent, torch.tensor(np.stack(xs), dtype=torch.float32), revisit_sources(offsets), switch
    )
