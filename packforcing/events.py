"""Typed trace events: the only link between the sampler, the figures and the app.

The sampler yields, in order: one RunStart, then per generated block one Frames
(pixels, never written to JSONL) and one Block, and finally one RunEnd. A prompt
switch yields one Switch just before the first block it applies to.
`write_jsonl` writes every event except Frames; `tracefile.read_trace` reads them back, checked.

Public field names of the "block" event (a stable interface, documented in README):
  block             index of the generated block (0-based)
  sink              block indices held in the sink partition (full resolution, never evicted)
  mid_bank          block indices archived in the compressed mid bank (temporal order)
  mid_selected      mid-bank blocks attended by this block, temporal order
  recent            full-resolution blocks attended beside the current one
  current           the block being generated (== block)
  selection_scores  {mid block index: score} for every mid-bank block scored
  rope_shift        {attended block index: temporal shift in latent frames applied to its keys}
  kv_bytes          bytes held by the cache's K/V tensors after this block, summed from the tensors
  full_cache_bytes  bytes a full cache of the same model would hold at this point
  context_tokens    tokens attended by the current block (its own tokens included)
  seconds           wall time spent generating this block (denoising + cache write + decode)
Extra fields (also stable): evicted, positions, tokens, video_seconds, frames_total, timings,
camera (models with a camera, else null: direction, x = the view's left edge at the block's
start and end = at its end, in the model's units, period = where x wraps, view = the view's
width in those units),
prompt (the prompt in force), selection_change (fraction of mid_selected that the previous
block did not select; null when either selected nothing).

The "switch" event: block (the first block under the new prompt), prompt, recache (the
config's option), recached (block indices whose K/V were re-written; empty for none),
seconds (wall time the re-cache cost).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class RunStart:
    prompt: str
    seed: int
    model: str
    config: dict  # PackForcingConfig.to_dict()
    geometry: dict  # tokens_per_latent_frame, tokens_per_block, compressed_tokens_per_block,
    #                 bytes_per_token, latent_shape, pixel_size (w, h), fps, frames_per_latent
    num_blocks: int
    understood_words: list[str] = field(default_factory=list)
    type: str = "run"


@dataclass
class Frames:
    block: int
    frames: np.ndarray  # (T, H, W, 3) uint8, the pixel frames this block decoded to
    fps: int
    type: str = "frames"


@dataclass
class Block:
    block: int
    sink: list[int]
    mid_bank: list[int]
    mid_selected: list[int]
    recent: list[int]
    current: int
    selection_scores: dict[int, float]
    rope_shift: dict[int, float]
    kv_bytes: int
    full_cache_bytes: int
    context_tokens: int
    seconds: float
    evicted: list[int] = field(default_factory=list)  # mid blocks evicted while making room this block
    positions: dict[int, float] = field(default_factory=dict)  # block -> original start latent frame
    tokens: dict[str, int] = field(default_factory=dict)  # sink, mid_selected, mid_archived, recent, current
    video_seconds: float = 0.0  # seconds of video generated so far
    frames_total: int = 0  # pixel frames emitted so far
    timings: dict[str, float] = field(default_factory=dict)  # seconds: transformer, decode, compress
    camera: dict | None = None  # models with a camera: where this block looked (see README)
    prompt: str = ""  # the prompt in force (empty in traces written before prompt switching)
    selection_change: float | None = None  # fraction of mid_selected new since the previous block
    type: str = "block"


@dataclass
class Switch:
    block: int  # the first block generated under the new prompt
    prompt: str
    recache: str  # the config's option: none | recent | sink+recent | all
    recached: list[int]  # blocks whose K/V were re-written under the new prompt
    seconds: float  # wall time of the text encoding and the re-cache
    type: str = "switch"


@dataclass
class RunEnd:
    blocks: int
    seconds: float
    stopped: bool = False
    error: str | None = None
    type: str = "end"


EVENT_TYPES = {"run": RunStart, "frames": Frames, "block": Block, "switch": Switch, "end": RunEnd}
_INT_KEYED = ("selection_scores", "rope_shift", "positions")


def event_to_dict(event) -> dict:
    if isinstance(event, Frames):
        raise TypeError("Frames events carry pixels and are not serialised")
    return asdict(event)


def event_from_dict(d: dict):
    if not isinstance(d, dict):
        raise ValueError(f"trace line must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind not in EVENT_TYPES or kind == "frames":
        raise ValueError(f"unknown trace event type {kind!r}; allowed: run, block, switch, end")
    cls = EVENT_TYPES[kind]
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f"{kind!r} event is missing fields {missing}")
    kwargs = {k: v for k, v in d.items() if k in names}
    if cls is Block:
        for key in _INT_KEYED:
            if key in kwargs:
                kwargs[key] = {int(k): float(v) for k, v in kwargs[key].items()}
    return cls(**kwargs)


class TraceWriter:
    """Appends events to a JSONL file as they arrive (so a stopped run keeps its trace)."""

    def __init__(self, path):
        self._file = open(path, "w", encoding="utf-8")

    def write(self, event) -> None:
        if isinstance(event, Frames):
            return
        self._file.write(json.dumps(event_to_dict(event)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_jsonl(events: Iterable, path) -> None:
    with TraceWriter(path) as trace:
        for event in events:
            trace.write(event)


def block_events(events: Iterable[Any]) -> list[Block]:
    return [e for e in events if isinstance(e, Block)]
