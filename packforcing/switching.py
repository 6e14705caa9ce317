"""Prompt switches: a schedule of prompts over the video's seconds, and which cached
blocks a switch re-writes (config.recache).

A switch applies at a block boundary: from the first block that starts at or after its
time. The block memory then re-writes the chosen blocks by replaying them
(block_memory.BlockMemory.recache).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .cache import KVCache

Schedule = Sequence[tuple[float, str]]


def as_schedule(prompt: str | Schedule) -> list[tuple[float, str]]:
    """A prompt or a schedule [(0, "A"), (8, "B"), ...] -> the schedule."""
    if isinstance(prompt, str):
        return [(0.0, prompt)]
    try:
        entries = [(t, p) for t, p in prompt]
    except (TypeError, ValueError):
        raise ValueError(f"prompt={prompt!r} is neither text nor a list of (seconds, prompt) pairs") from None
    if not entries:
        raise ValueError("the prompt schedule is empty; give at least (0, 'a prompt')")
    return entries


def schedule_blocks(schedule: Schedule, seconds: float, seconds_per_block: float,
                    num_blocks: int) -> tuple[str, dict[int, str]]:
    """Validate a schedule for a video of `seconds`: (the first prompt, {block: prompt} for
    each later switch). Raises ValueError naming the bad entry and what is allowed."""
    entries = as_schedule(schedule)
    blocks: dict[int, str] = {}
    previous = None
    for t, prompt in entries:
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            raise ValueError(f"switch time {t!r} is not a number of seconds")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"the prompt at {t:g} s is empty; type what the video should show from then on")
        if previous is None and t != 0:
            raise ValueError(f"the schedule starts at {t:g} s; its first prompt must start at 0 s")
        if previous is not None and t <= previous:
            raise ValueError(f"switch at {t:g} s comes after one at {previous:g} s; switch times must increase")
        if t >= seconds:
            raise ValueError(f"switch at {t:g} s is past the end of the {seconds:g}-s video; allowed 0 to {seconds:g} "
                             "s (exclusive)")
        block = math.ceil(t / seconds_per_block - 1e-9)
        if block >= num_blocks:
            raise ValueError(f"switch at {t:g} s would start at block {block}, after the video's last block "
                             f"({num_blocks - 1}); switch earlier")
        if block in blocks:
            raise ValueError(
                f"switches at {previous:g} s and {t:g} s fall on the same block boundary (block {block}, "
                f"{seconds_per_block:g} s per block); space them at least a block apart"
            )
        blocks[block] = prompt
        previous = t
    first = blocks.pop(0)
    return first, blocks


def recache_targets(cache: KVCache, mode: str) -> list[int]:
    """Blocks a switch re-writes under `mode`, in temporal order."""
    sink, mid, recent = list(cache.sink), list(cache.mid), list(cache.recent)
    chosen = {"none": [], "recent": recent, "sink+recent": sink + recent, "all": sink + mid + recent}
    if mode not in chosen:
        raise ValueError(f"recache={mode!r} is not allowed; choose one of {', '.join(chosen)}")
    return sorted(chosen[mode])

