"""The v11 world: flat coloured objects on a plain, wrapping 1-D panorama, filmed by a
64x64 camera whose path is an input.

What v11 removed from the v1-v10 world, and why: textured backgrounds (ridge, posts,
stars), bouncing objects and the three pan speeds. None of them served the demo of
memory, and each cost model capacity. What is left is what only memory can tell: the
layout (which object stands where, chosen by the seed), revealed by a camera that pans
at one speed (STEP px per frame) left or right, or stands still, as its path says.

Geometry: the panorama is PERIOD = STEP x LOOP_FRAMES = 512 px wide and wraps, so a
camera panning one way is back where it was every LOOP_SECONDS = 8 s (8 blocks). A 1-s
block pans a whole view width (64 px), so the block filmed at a place is the one that
holds it: a revisit of a place filmed 3 blocks ago or more needs the mid bank.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import vocab
from .world import PALETTE, sprite

FPS = 16
VIEW = 64
STEP = 4  # px per frame while the camera moves
LOOP_SECONDS = 8
LOOP_FRAMES = LOOP_SECONDS * FPS
PERIOD = STEP * LOOP_FRAMES  # 512 px
SLOTS = 8  # objects on the panorama, one per PERIOD / SLOTS px
BACKGROUND = (14, 16, 30)
DIRECTION_SIGN = {"left": -1, "still": 0, "right": 1}


@dataclass(frozen=True)
class PanoramaSpec:
    objects: tuple = (("red", "circle"),)
    pan: str = "right"  # the prompt's direction, used when no camera path is given
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "objects", vocab.check_objects(self.objects))
        if self.pan not in vocab.PANS:
            raise ValueError(f"pan={self.pan!r} not allowed: one of {vocab.PANS}")


def spec_from_prompt(prompt: str, seed: int = 0) -> PanoramaSpec:
    """Objects and pan from the prompt (speed, motion and background words are understood
    but this world has one of each), layout from the seed."""
    vocab.validate_prompt(prompt)
    fields, _ = vocab.parse_prompt(prompt)
    return PanoramaSpec(objects=fields["objects"], pan=fields["pan"], seed=int(seed))


def prompt_for(spec: PanoramaSpec) -> str:
    return " and ".join(f"a {c} {s}" for c, s in spec.objects) + f", camera panning {spec.pan}"


def positions(directions: list[str], start: float = 0.0, frames_per_block: int = 16) -> np.ndarray:
    """Per-frame camera x (view's left edge, unwrapped px) for one direction per block."""
    steps = np.repeat([STEP * DIRECTION_SIGN[d] for d in directions], frames_per_block)
    return start + np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.float64)


@functools.lru_cache(maxsize=256)
def layout(spec: PanoramaSpec) -> tuple[tuple[str, str, int, int], ...]:
    """(colour, shape, panorama x, view y) of the SLOTS objects: every named object at
    least twice when it fits, the rest drawn from the named ones, shuffled, jittered."""
    rng = np.random.default_rng([spec.seed, 0x11])
    named = list(spec.objects)
    picks = (named * SLOTS)[: max(len(named), min(SLOTS, 2 * len(named)))]
    picks += [named[i] for i in rng.integers(0, len(named), SLOTS - len(picks))]
    order = rng.permutation(SLOTS)
    slot = PERIOD / SLOTS
    out = []
    for i, k in enumerate(order):
        colour, shape = picks[k]
        h, w = sprite(shape).shape
        cx = (i + 0.5) * slot + rng.uniform(-(slot - w - 8) / 2, (slot - w - 8) / 2)
        y = int(rng.integers(3, VIEW - 3 - h + 1))
        out.append((colour, shape, int(round(cx - w / 2)) % PERIOD, y))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def panorama(spec: PanoramaSpec) -> np.ndarray:
    """(VIEW, PERIOD + VIEW, 3) uint8, wrapped so any view is one contiguous crop."""
    img = np.empty((VIEW, PERIOD, 3), np.float32)
    img[:] = BACKGROUND
    for colour, shape, x, y in layout(spec):
        alpha = sprite(shape)
        h, w = alpha.shape
        cols = (x + np.arange(w)) % PERIOD
        a = alpha[:, :, None]
        img[y : y + h, cols] = img[y : y + h, cols] * (1 - a) + np.asarray(PALETTE[colour], np.float32) * a
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.concatenate([img, img[:, :VIEW]], axis=1)


def render(spec: PanoramaSpec, xs: np.ndarray) -> np.ndarray:
    """uint8 (T, 64, 64, 3): the view at each camera x."""
    pano = panorama(spec)
    out = np.empty((len(xs), VIEW, VIEW, 3), np.uint8)
    for i, x in enumerate(xs):
        left = int(round(x)) % PERIOD
        out[i] = pano[:, left : left + VIEW]
    return out


def circular_distance(a, b) -> np.ndarray:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % PERIOD
    return np.minimum(d, PERIOD - d)
