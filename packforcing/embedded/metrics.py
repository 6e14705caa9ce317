"""Metrics of a generated world video, computed from its frames alone (uint8 (T, H, W, 3))
plus the spec: which objects were asked for, and the deterministic camera model (the
camera shows the same place every LOOP_FRAMES frames, and pans at a known speed).
Nothing reads the generator's internals, and nothing needs the seed's layout, so the
metrics apply equally to ground-truth renders and to anything a model produced.

- faithfulness: objects are the connected components of the bright pixels (the
  background is dim by construction), each taking the palette colour (nearest
  chromaticity, rgb / max channel) of most of its pixels; a component fully inside the
  frame is classified by comparing its mask, resized over its bounding box, with the
  three shape templates. A (colour, shape) is present if seen in >= MIN_FRAMES frames.
  faithfulness = |asked & seen| / |asked | seen| (Jaccard: named present, others absent);
  word_accuracy = share of the 8 colour and shape words whose presence matches the prompt.
- revisit consistency: frame f against frame f - L (L = loop length: the camera shows the
  same place), on 4x4-pooled frames (the codec's resolution): per-frame mean absolute
  difference d (0..255) -> exp(-d / REVISIT_TAU), averaged. 1 = identical revisits.
  revisit_contrast = 1 - d(lag L) / d(lag L/2) guards against a frozen video (which
  would also "match" itself): ~1 when revisits match and other places differ, ~0 for a
  frozen or unrelated video. revisit_per_loop: the score per loop; revisit_first: every
  revisit against the first loop instead of the previous one (catches a switch to a
  different but then self-consistent scene).
- drift: faithfulness per time segment (default one loop each); drift_drop = first - last.
- pan: the horizontal shift between frames k apart estimated by search, compared with
  the camera model's (share of frame pairs within 1 px).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import vocab
from .world import LOOP_FRAMES, PALETTE, PAN_SPEED, sprite

SALIENT = 110  # a pixel is part of an object if its brightest channel is at least this
CHROMA_DIST = 0.35  # max distance to a palette colour's chromaticity (rgb / max channel)
MIN_AREA = 60  # pixels; smaller components are ignored
COLOUR_SHARE = 0.5  # an object's colour must be that of at least this share of its pixels
MIN_FRAMES = 3  # a (colour, shape) is present if detected whole in at least this many frames
SHAPE_DIST = 0.25  # max mean |mask - template| (both resized to TEMPLATE x TEMPLATE over the bounding box)
REVISIT_TAU = 6.0  # MAE (0..255, 4x4-pooled) at which a revisit scores 1/e
PAN_LAG = 4

_NAMES = list(vocab.COLOURS)
_CHROMA = np.stack([np.asarray(PALETTE[c], np.float32) / max(PALETTE[c]) for c in _NAMES])  # (5, 3)
TEMPLATE = 8  # component masks are compared with the shapes at this size


def _max3(x: np.ndarray, pad) -> np.ndarray:
    """3x3 maximum over the last two axes of (N, H, W), `pad` outside."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=pad)
    r = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.maximum(np.maximum(r[:, :, :-2], r[:, :, 1:-1]), r[:, :, 2:])


def _opened(masks: np.ndarray) -> np.ndarray:
    """Morphological opening (3x3) of (N, H, W) bool masks: removes 1-2 px spurs and specks
    (codec ringing) while keeping the objects' shapes."""
    eroded = ~_max3(~masks, False)
    return _max3(eroded, False)


def _resized(mask: np.ndarray) -> np.ndarray:
    """(h, w) mask -> (TEMPLATE, TEMPLATE) area average."""
    h, w = mask.shape
    up = np.repeat(np.repeat(mask.astype(np.float32), TEMPLATE, 0), TEMPLATE, 1)
    return up.reshape(TEMPLATE, h, TEMPLATE, w).mean(axis=(1, 3))


_TEMPLATES = {s: _resized(_opened((sprite(s) >= 0.5)[None])[0]) for s in vocab.SHAPES}


def _frames(frames) -> np.ndarray:
    x = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {x.dtype} {x.shape} (see to_uint8)")
    return x


# ----------------------------------------------------------------------------- detection


def colour_map(frames) -> np.ndarray:
    """(T, H, W) int: palette index (order of vocab.COLOURS) per pixel; -1 background
    (brightest channel < SALIENT); -2 bright but no palette colour."""
    x = _frames(frames)
    peak = x.max(axis=-1)
    out = np.full(peak.shape, -1, np.int64)
    bright = peak >= SALIENT
    px = x[bright].astype(np.float32)
    chroma = px / peak[bright].astype(np.float32)[:, None]
    d2 = ((chroma[:, None, :] - _CHROMA[None]) ** 2).sum(-1)  # (P, 5)
    idx = d2.argmin(axis=1)
    out[bright] = np.where(d2[np.arange(len(idx)), idx] <= CHROMA_DIST**2, idx, -2)
    return out


def _components(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, H, W) int64 labels (8-connected; 0 = outside), unique overall."""
    n, h, w = masks.shape
    lab = np.arange(1, n * h * w + 1, dtype=np.int64).reshape(n, h, w) * masks
    for _ in range(h * w):
        new = _max3(lab, 0) * masks
        if np.array_equal(new, lab):
            break
        lab = new
    return lab


def detect(frames) -> list[list[tuple[str, str | None, int, tuple[int, int, int, int]]]]:
    """Per frame, every object found: (colour, shape or None, area, (x0, y0, x1, y1)).

    Objects are the 8-connected components (area >= MIN_AREA) of the bright pixels after
    a 3x3 opening -- the shape comes from brightness, which the codec keeps sharper than
    colour -- and take the palette colour most of their pixels have (>= COLOUR_SHARE of
    them, else they are skipped). shape is None for objects cut by the frame border or
    not close to any shape template."""
    cmap = colour_map(frames)
    t, h, w = cmap.shape
    out: list[list] = [[] for _ in range(t)]
    masks = cmap != -1
    which = np.nonzero(masks.reshape(t, -1).sum(1) >= MIN_AREA)[0]
    if len(which) == 0:
        return out
    n_col = len(_NAMES)
    lab = _components(_opened(masks[which]))
    f, y, x = np.nonzero(lab)
    uniq, inv = np.unique(lab[f, y, x], return_inverse=True)
    n = len(uniq)
    area = np.bincount(inv, minlength=n)
    x0 = np.full(n, w); y0 = np.full(n, h); x1 = np.full(n, -1); y1 = np.full(n, -1)
    np.minimum.at(x0, inv, x); np.minimum.at(y0, inv, y); np.maximum.at(x1, inv, x); np.maximum.at(y1, inv, y)
    owner = np.zeros(n, np.int64)
    owner[inv] = f
    colours = cmap[which][f, y, x]
    known = colours >= 0
    votes = np.bincount(inv[known] * n_col + colours[known], minlength=n * n_col).reshape(n, n_col)
    share = votes.max(axis=1) / area
    colour = votes.argmax(axis=1)
    for k in np.nonzero((area >= MIN_AREA) & (share >= COLOUR_SHARE))[0]:
        box = (int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k]))
        component = lab[owner[k], box[1] : box[3] + 1, box[0] : box[2] + 1] == uniq[k]
        shape, _ = _shape(component, box, h, w)
        out[int(which[owner[k]])].append((_NAMES[int(colour[k])], shape, int(area[k]), box))
    return out


def _shape(component: np.ndarray, box, h: int, w: int) -> tuple[str | None, float]:
    """(shape or None, distance to its template). None: cut by the frame border, not
    roughly as wide as tall, or not close to any template."""
    x0, y0, x1, y1 = box
    if x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1:
        return None, 1.0
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    if not 0.6 <= bw / bh <= 1.6:
        return None, 1.0
    crop = _resized(component)
    dist = {s: float(np.abs(crop - t).mean()) for s, t in _TEMPLATES.items()}
    best = min(dist, key=dist.get)
    return (best if dist[best] <= SHAPE_DIST else None), dist[best]


# ----------------------------------------------------------------------------- faithfulness


def _faithfulness_from(dets, asked: set, min_frames: int) -> dict:
    pair_frames: dict = {}
    colour_frames: dict = {}
    for frame in dets:
        for c in {d[0] for d in frame}:
            colour_frames[c] = colour_frames.get(c, 0) + 1
        for p in {(d[0], d[1]) for d in frame if d[1] is not None}:
            pair_frames[p] = pair_frames.get(p, 0) + 1
    seen = {p for p, n in pair_frames.items() if n >= min_frames}
    union = asked | seen
    asked_words = {w for p in asked for w in p}
    seen_words = {c for c, n in colour_frames.items() if n >= min_frames} | {s for _, s in seen}
    words = vocab.COLOURS + vocab.SHAPES
    return {
        "faithfulness": len(asked & seen) / len(union) if union else 1.0,
        "word_accuracy": sum((w in asked_words) == (w in seen_words) for w in words) / len(words),
        "detected": sorted(f"{c} {s}" for c, s in seen),
        "missing": sorted(f"{c} {s}" for c, s in asked - seen),
        "unexpected": sorted(f"{c} {s}" for c, s in seen - asked),
        "frames_seen": {f"{c} {s}": n for (c, s), n in sorted(pair_frames.items())},
    }


def faithfulness(frames, spec, min_frames: int = MIN_FRAMES, _dets=None) -> dict:
    """Are the asked-for (colour, shape) pairs present and no others? See module docstring."""
    dets = detect(frames) if _dets is None else _dets
    return _faithfulness_from(dets, set(spec.objects), min_frames)


# ----------------------------------------------------------------------------- revisits


def _pooled(frames) -> np.ndarray:
    """(T, H/4, W/4, 3) float32: 4x4 means (the codec's spatial resolution)."""
    x = _frames(frames).astype(np.float32)
    t, h, w, _ = x.shape
    return x[:, : h // 4 * 4, : w // 4 * 4].reshape(t, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4))


def _mae(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).mean(axis=(1, 2, 3))


def revisit_consistency(frames, spec) -> dict:
    """Frames at a camera position vs the previous time the camera was there (lag L = loop)."""
    L = LOOP_FRAMES
    pooled = _pooled(frames)
    t = len(pooled)
    if t <= L:
        return {"revisit_consistency": None, "revisit_mae": None, "revisit_contrast": None,
                "revisit_first": None, "revisit_per_loop": []}
    mae = _mae(pooled[L:], pooled[:-L])
    score = np.exp(-mae / REVISIT_TAU)
    first = np.exp(-_mae(pooled[L:], pooled[np.arange(L, t) % L]) / REVISIT_TAU)
    half = L // 2
    base = float(_mae(pooled[half:], pooled[:-half]).mean())
    contrast = max(0.0, 1.0 - float(mae.mean()) / base) if base >= 1.0 else 0.0
    per_loop = [round(float(score[i : i + L].mean()), 4) for i in range(0, len(score), L)]
    return {"revisit_consistency": float(score.mean()), "revisit_mae": float(mae.mean()),
            "revisit_contrast": contrast, "revisit_first": float(first.mean()), "revisit_per_loop": per_loop}


# ----------------------------------------------------------------------------- drift, pan


def _segments(t: int, spec, segments) -> list[tuple[int, int]]:
    if segments is None:
        size = LOOP_FRAMES
        bounds = [(s, min(s + size, t)) for s in range(0, t, size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size // 2:
            bounds[-2] = (bounds[-2][0], t)
            bounds.pop()
        return bounds
    if isinstance(segments, int):
        edges = np.linspace(0, t, segments + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return [(int(a), int(b)) for a, b in segments]


def drift(frames, spec, segments=None, _dets=None) -> dict:
    """Faithfulness per time segment (segments: None = one per loop, an int = that many
    equal segments, or a list of (start, end) frame ranges)."""
    dets = detect(frames) if _dets is None else _dets
    bounds = _segments(len(dets), spec, segments)
    asked = set(spec.objects)
    rows = [{"start": a, "end": b, **{k: v for k, v in _faithfulness_from(dets[a:b], asked, MIN_FRAMES).items()
                                      if k in ("faithfulness", "word_accuracy", "missing", "unexpected")}}
            for a, b in bounds]
    scores = [r["faithfulness"] for r in rows]
    return {"segments": rows, "first": scores[0] if scores else None, "last": scores[-1] if scores else None,
            "drop": (scores[0] - scores[-1]) if scores else None}


def pan_estimate(frames, lag: int = PAN_LAG, max_shift: int = 16, stride: int = 3) -> np.ndarray:
    """Per frame pair (f, f + lag), f = 0, stride, ...: the shift s (px) minimising
    |frame[f + lag][:, x] - frame[f][:, x + s]| (s > 0: content moved left = camera right)."""
    x = _frames(frames).astype(np.float32).mean(axis=-1)  # (T, H, W)
    t, h, w = x.shape
    x = x[:, : h // 4 * 4].reshape(t, h // 4, 4, w).mean(axis=2)  # rows averaged in fours: horizontal shifts are kept
    a, b = x[:-lag:stride], x[lag::stride]
    if len(a) == 0:
        return np.zeros(0, dtype=int)
    costs = []
    for s in range(-max_shift, max_shift + 1):
        if s >= 0:
            costs.append(np.abs(b[:, :, : w - s] - a[:, :, s:]).mean(axis=(1, 2)))
        else:
            costs.append(np.abs(b[:, :, -s:] - a[:, :, : w + s]).mean(axis=(1, 2)))
    return np.stack(costs, 1).argmin(1) - max_shift


def pan_accuracy(frames, spec, lag: int = PAN_LAG) -> dict:
    expected = PAN_SPEED[spec.speed] * lag * (1 if spec.pan == "right" else -1)
    est = pan_estimate(frames, lag)
    if len(est) == 0:
        return {"pan_accuracy": None, "pan_speed": None, "pan_expected": expected / lag}
    return {"pan_accuracy": float(np.mean(np.abs(est - expected) <= 1)),
            "pan_speed": float(np.median(est)) / lag, "pan_expected": expected / lag}


def evaluate(frames, spec, segments=None) -> dict:
    """All metrics of one video in a flat, JSON-friendly dict."""
    dets = detect(frames)
    out = {"frames": len(dets), "loops": len(dets) / LOOP_FRAMES}
    out.update(faithfulness(frames, spec, _dets=dets))
    out.update(revisit_consistency(frames, spec))
    d = drift(frames, spec, segments, _dets=dets)
    out.update({"drift": d["segments"], "drift_first": d["first"], "drift_last": d["last"], "drift_drop": d["drop"]})
    out.update(pan_accuracy(frames, spec))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
