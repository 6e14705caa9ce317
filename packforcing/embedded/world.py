"""The embedded model's procedural world: flat coloured shapes on a dark, wrapping
panorama, seen through a 64x64 camera that pans across it at 16 FPS.

Geometry:
- The panorama is `scene_width(spec)` = pan speed x LOOP_FRAMES pixels wide (2, 4 or 6
  view widths for slow / medium / fast) and wraps around, so the camera comes back to
  the same place every LOOP_SECONDS = 8 s (128 frames, 8 generation blocks) whatever
  the speed: frame f and frame f + LOOP_FRAMES show the same place. A training clip
  holds about one loop; generation runs many.
- Objects (the prompt's (colour, shape) pairs, each placed at least once, repeated to
  fill the panorama) are ~22 px, flat colours, anti-aliased. With "bouncing" each one
  hops with period BOUNCE_FRAMES = 16 (1 s, which divides the loop, so revisits still
  match exactly). The background is a dark vertical gradient with a periodic ridge
  silhouette, posts and stars (all dim and unsaturated) so a place is recognisable.
- The seed chooses the layout (object order and positions, landmarks, start position).

Rendering is numpy: the background panorama and sprites are built once per spec
(cached), each frame is a crop plus a few sprite pastes.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np

from . import vocab

FPS = 16
VIEW = 64  # frames are VIEW x VIEW RGB
LOOP_SECONDS = 8  # revisit period: the camera is back where it was after this long
LOOP_FRAMES = LOOP_SECONDS * FPS  # 128
PAN_SPEED = {"slow": 1, "medium": 2, "fast": 3}  # pixels per frame; scene width = speed * LOOP_FRAMES
BOUNCE_FRAMES = 16  # one hop per second; divides LOOP_FRAMES
BOUNCE_HEIGHT = 8  # pixels

PALETTE = {  # flat object colours (RGB)
    "red": (225, 45, 45),
    "green": (50, 200, 70),
    "blue": (60, 100, 240),
    "yellow": (235, 215, 45),
    "white": (240, 240, 240),
}
# Backgrounds: (sky top, sky bottom, ridge, landmarks). All dim and unsaturated
# (max channel < 100), so no background pixel reads as an object colour.
BACKGROUND_COLOURS = {
    "night": ((8, 10, 24), (20, 24, 44), (30, 34, 54), (62, 66, 90)),
    "dusk": ((24, 10, 22), (46, 22, 38), (54, 30, 42), (90, 62, 70)),
    "forest": ((8, 18, 12), (18, 34, 24), (24, 46, 30), (58, 84, 62)),
}
OBJECT_SPACING = 48  # about one object per this many panorama pixels


@dataclass(frozen=True)
class WorldSpec:
    """What a prompt + seed determine. objects: tuple of (colour, shape)."""

    objects: tuple = (("red", "circle"),)
    pan: str = "right"
    speed: str = "medium"
    motion: str = "still"
    background: str = "night"
    seed: int = 0

    def __post_init__(self):
        objects = vocab.check_objects(self.objects)
        object.__setattr__(self, "objects", objects)
        if len(set(objects)) != len(objects):
            raise ValueError(f"objects={objects}: duplicates")
        for name, allowed in (("pan", vocab.PANS), ("speed", vocab.SPEEDS), ("motion", vocab.MOTIONS),
                              ("background", vocab.BACKGROUNDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} not allowed: one of {allowed}")
        object.__setattr__(self, "seed", int(self.seed))


def spec_from_prompt(prompt: str, seed: int = 0) -> WorldSpec:
    """Prompt words choose objects and motion, the seed the layout (validates the prompt)."""
    vocab.validate_prompt(prompt)
    fields, _ = vocab.parse_prompt(prompt)
    return WorldSpec(**fields, seed=seed)


def prompt_for(spec: WorldSpec) -> str:
    """A readable prompt that parses back to `spec` (minus the seed)."""
    things = " and ".join(f"a {c} {s}" for c, s in spec.objects)
    motion = ", bouncing" if spec.motion == "bouncing" else ", still"
    return f"{things}{motion}, camera panning {spec.pan}, {spec.speed} speed, at {spec.background}"


def sample_spec(rng: random.Random | int) -> WorldSpec:
    """A random spec for training (rng: random.Random or an int seed)."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    n = rng.choices([1, 2, 3, 4], weights=[3, 4, 3, 1])[0]
    pairs = [(c, s) for c in vocab.COLOURS for s in vocab.SHAPES]
    return WorldSpec(
        objects=tuple(rng.sample(pairs, n)),
        pan=rng.choice(vocab.PANS),
        speed=rng.choice(vocab.SPEEDS),
        motion=rng.choice(vocab.MOTIONS),
        background=rng.choice(vocab.BACKGROUNDS),
        seed=rng.randrange(2**31),
    )


def scene_width(spec: WorldSpec) -> int:
    return PAN_SPEED[spec.speed] * LOOP_FRAMES


def camera_x(spec: WorldSpec, frame):
    """Panorama x of the view's left edge at `frame` (int or integer array), in [0, width)."""
    width = scene_width(spec)
    direction = 1 if spec.pan == "right" else -1
    start = scene_layout(spec).start
    return (start + direction * PAN_SPEED[spec.speed] * np.asarray(frame, dtype=np.int64)) % width


# ----------------------------------------------------------------------------- sprites


def _supersampled(inside, h: int, w: int, ss: int = 4) -> np.ndarray:
    ys = (np.arange(h * ss) + 0.5) / ss
    xs = (np.arange(w * ss) + 0.5) / ss
    m = inside(ys[:, None], xs[None, :]).astype(np.float32)
    return m.reshape(h, ss, w, ss).mean(axis=(1, 3))


@functools.cache
def sprite(shape: str) -> np.ndarray:
    """Anti-aliased coverage mask (h, w) float32 in [0, 1]."""
    if shape == "circle":
        d = 22
        return _supersampled(lambda y, x: (y - d / 2) ** 2 + (x - d / 2) ** 2 <= (d / 2) ** 2, d, d)
    if shape == "square":
        return np.ones((20, 20), np.float32)
    if shape == "triangle":  # apex up, base 24, height 21
        h, w = 21, 24
        return _supersampled(lambda y, x: np.abs(x - w / 2) <= (w / 2) * (y / h), h, w)
    raise ValueError(f"shape {shape!r}: one of {vocab.SHAPES}")


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Instance:
    colour: str
    shape: str
    x: int  # panorama x of the sprite's left edge
    y: int  # view y of the sprite's top edge (at rest)
    phase: float  # bounce phase in [0, 1)


@dataclass(frozen=True)
class SceneLayout:
    background: np.ndarray  # (VIEW, width + VIEW, 3) uint8, wrapped so any crop is contiguous
    instances: tuple
    start: int


def _periodic_noise(rng, width: int, terms: int, amp: float) -> np.ndarray:
    x = np.arange(width)
    out = np.zeros(width)
    for k in range(1, terms + 1):
        out += amp / k * np.sin(2 * np.pi * k * x / width + rng.uniform(0, 2 * np.pi))
    return out


@functools.lru_cache(maxsize=64)
def scene_layout(spec: WorldSpec) -> SceneLayout:
    rng = np.random.default_rng([spec.seed, 0x5EED])
    width = scene_width(spec)
    top, bottom, ridge_c, mark_c = (np.array(c, np.float32) for c in BACKGROUND_COLOURS[spec.background])

    # sky gradient
    t = (np.arange(VIEW, dtype=np.float32) / (VIEW - 1))[:, None, None]
    bg = np.broadcast_to(top * (1 - t) + bottom * t, (VIEW, width, 3)).copy()
    # stars: dim 2x2 dots in the upper half
    for _ in range(width // 24):
        sx, sy = rng.integers(0, width), rng.integers(2, 30)
        bg[sy : sy + 2, [sx, (sx + 1) % width]] = mark_c * rng.uniform(0.6, 1.0)
    # ridge silhouette (periodic in width), soft 1-px edge
    ridge = 46 + _periodic_noise(rng, width, terms=6 * width // 256 + 2, amp=5.0)
    ys = np.arange(VIEW)[:, None]
    cover = np.clip(ys - ridge[None, :] + 0.5, 0, 1)[..., None]
    bg = bg * (1 - cover) + ridge_c * cover
    # posts standing on the ridge
    for _ in range(max(2, width // 40)):
        px, ph, pw = rng.integers(0, width), rng.integers(8, 20), rng.integers(2, 4)
        base = int(ridge[px])
        cols = (px + np.arange(pw)) % width
        bg[max(0, base - ph) : base, cols] = mark_c
    bg = np.clip(np.round(bg), 0, 255).astype(np.uint8)
    bg = np.concatenate([bg, bg[:, :VIEW]], axis=1)

    # objects: every pair at least once, then random repeats, shuffled into evenly spaced slots
    n = max(len(spec.objects), width // OBJECT_SPACING)
    picks = list(spec.objects) + [spec.objects[i] for i in rng.integers(0, len(spec.objects), n - len(spec.objects))]
    order = rng.permutation(n)
    slot = width / n
    instances = []
    for i, k in enumerate(order):
        colour, shape = picks[k]
        h, w = sprite(shape).shape
        jitter = max(0.0, (slot - w - 8) / 2)
        cx = (i + 0.5) * slot + rng.uniform(-jitter, jitter)
        y = int(rng.integers(BOUNCE_HEIGHT + 3, VIEW - 3 - h + 1))
        instances.append(_Instance(colour, shape, int(round(cx - w / 2)) % width, y, float(rng.uniform())))
    start = int(rng.integers(0, width))
    return SceneLayout(bg, tuple(instances), start)


def _bounce(spec: WorldSpec, frame: int, phase: float) -> int:
    if spec.motion != "bouncing":
        return 0
    return -int(round(BOUNCE_HEIGHT * abs(math.sin(math.pi * (frame / BOUNCE_FRAMES + phase)))))


def _paste(img: np.ndarray, alpha: np.ndarray, colour, x: int, y: int) -> None:
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, VIEW), min(y + h, VIEW)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = img[y0:y1, x0:x1]
    region[:] = region * (1 - a) + np.asarray(colour, np.float32) * a


def visible_objects(spec: WorldSpec, frame: int) -> list[tuple[str, str, int, int]]:
    """Ground truth for one frame: (colour, shape, view x, view y) of every sprite that
    overlaps the view (x, y of the sprite's top-left corner; may be partly outside)."""
    lay, width = scene_layout(spec), scene_width(spec)
    cam = int(camera_x(spec, frame))
    out = []
    for inst in lay.instances:
        h, w = sprite(inst.shape).shape
        dx = (inst.x - cam) % width
        if dx > width - w:
            dx -= width
        if dx < VIEW:
            out.append((inst.colour, inst.shape, dx, inst.y + _bounce(spec, frame, inst.phase)))
    return out


def render_frame(spec: WorldSpec, frame: int) -> np.ndarray:
    lay = scene_layout(spec)
    cam = int(camera_x(spec, frame))
    img = lay.background[:, cam : cam + VIEW].astype(np.float32)
    for colour, shape, x, y in visible_objects(spec, frame):
        _paste(img, sprite(shape), PALETTE[colour], x, y)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_clip(spec: WorldSpec, start_frame: int = 0, num_frames: int = LOOP_FRAMES) -> np.ndarray:
    """Frames start_frame .. start_frame + num_frames - 1 as uint8 (T, 64, 64, 3). Deterministic."""
    if num_frames < 0:
        raise ValueError(f"num_frames={num_frames} must be >= 0")
    out = np.empty((num_frames, VIEW, VIEW, 3), np.uint8)
    for i in range(num_frames):
        out[i] = render_frame(spec, start_frame + i)
    return out


def panorama(spec: WorldSpec, frame: int = 0) -> np.ndarray:
    """The whole wrapped scene at `frame` as uint8 (64, scene_width, 3) (for visualisers)."""
    lay, width = scene_layout(spec), scene_width(spec)
    img = lay.background[:, :width].astype(np.float32)
    for inst in lay.instances:
        alpha = sprite(inst.shape)
        y = inst.y + _bounce(spec, frame, inst.phase)
        for shift in (0, -width):
            x = inst.x + shift
            h, w = alpha.shape
            x0, x1 = max(x, 0), min(x + w, width)
            if x0 < x1:
                a = alpha[:, x0 - x : x1 - x, None]
                img[y : y + h, x0:x1] = img[y : y + h, x0:x1] * (1 - a) + np.asarray(PALETTE[inst.colour],
                                                                                     np.float32) * a
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
