"""Ablation lab: the same prompts and seeds under every memory policy, scored from pixels.

    python -m packforcing ablate --seconds 32 --json

Metrics come from the generated frames only (packforcing.embedded.metrics): faithfulness to
the prompt, revisit consistency when the camera comes back, and drift over time. One
comes from the trace: how often a block attended its revisit source.
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np

from ..config import PackForcingConfig
from ..events import Block, Frames

DEFAULT_PROMPTS = (
    "a red circle and a blue square, camera pans right",
    "a yellow triangle and a green circle, slow pan left",
    "a white square, a red triangle and a blue circle",
)


def ablation_configs(base: PackForcingConfig) -> dict[str, PackForcingConfig]:
    return {
        "window": base.replace(policy="window"),
        "random": base.replace(policy="random"),
        "fifo": base.replace(policy="fifo"),
        "dynamic": base.replace(policy="dynamic"),
        "full": base.replace(policy="full"),
        "dynamic, no sink": base.replace(policy="dynamic", sink_frames=0),
        "dynamic, no RoPE repair": base.replace(policy="dynamic", rope_repair=False),
    }


def revisit_source_attended(blocks: list[Block], loop_blocks: int) -> float | None:
    """Of the blocks whose revisit source (the block one camera loop back) sits in the
    mid bank, the fraction that attended it; None when no block had one. Read from the
    trace, not the pixels: it says whether the selection looked in the right place, so
    the pixel metrics can say whether the model made use of it. `random`'s rate is chance."""
    eligible = [b for b in blocks if b.block - loop_blocks in b.mid_bank]
    if not eligible:
        return None
    return statistics.mean(float(b.block - loop_blocks in b.mid_selected) for b in eligible)


def run_one(pipe, prompt: str, seconds: float, seed: int, config: PackForcingConfig) -> dict:
    from .metrics import evaluate
    from .world import LOOP_FRAMES, spec_from_prompt

    frames, blocks = [], []
    for event in pipe.stream(prompt, seconds, seed, config):
        if isinstance(event, Frames):
            frames.append(event.frames)
        elif isinstance(event, Block):
            blocks.append(event)
    video = np.concatenate(frames)
    scores = evaluate(video, spec_from_prompt(prompt, seed))
    scores["revisit_source_attended"] = revisit_source_attended(blocks, LOOP_FRAMES // len(frames[0]))
    return {
        **{k: v for k, v in scores.items() if isinstance(v, (int, float))},
        "kv_bytes_last": blocks[-1].kv_bytes,
        "kv_bytes_first_full_bank": blocks[min(len(blocks) - 1, len(blocks) // 2)].kv_bytes,
        "seconds_per_block": statistics.mean(b.seconds for b in blocks),
        "video_seconds_per_second": blocks[-1].video_seconds / sum(b.seconds for b in blocks),
    }


# metrics whose spread over the runs is reported next to the mean, so a reader can tell
# a difference between configurations from run-to-run noise
SPREAD_KEYS = ("faithfulness", "revisit_consistency", "revisit_contrast", "pan_accuracy", "revisit_source_attended")


def ablate(pipe, seconds: float, seeds=(0, 1), prompts=DEFAULT_PROMPTS, progress=None, base: PackForcingConfig | None = None) -> dict[str, dict]:
    """Per configuration, the mean of every metric over prompts x seeds, plus `<metric>_sem`
    (standard error of that mean) for SPREAD_KEYS. Metrics a video is too short for
    (revisits need one camera loop) are left out. `base` (default: the model's own config)
    is what every configuration varies."""
    if not seeds or not prompts:
        raise ValueError(f"seeds={list(seeds)} and prompts={list(prompts)} must both be non-empty")
    table = {}
    for name, config in ablation_configs(base or pipe.default_config).items():
        rows = [run_one(pipe, p, seconds, s, config) for p in prompts for s in seeds]
        keys = [k for k in rows[0] if all(k in r for r in rows)]
        table[name] = {k: statistics.mean(r[k] for r in rows) for k in keys}
        for k in SPREAD_KEYS:
            if k in keys:
                table[name][f"{k}_sem"] = statistics.stdev(r[k] for r in rows) / len(rows) ** 0.5 if len(rows) > 1 else 0.0
        if progress:
            progress(name, table[name])
    return table


def main(args) -> int:
    from ..pipeline import PackForcingPipeline

    if args.seeds < 1:
        raise ValueError(f"seeds={args.seeds} is out of range; allowed 1 or more (seeds 0..N-1 are run)")
    pipe = PackForcingPipeline.from_name(args.model or "embedded")
    seeds = tuple(range(args.seeds))
    table = ablate(pipe, args.seconds, seeds, progress=lambda n, r: print(f"{n}: done", file=sys.stderr))
    if args.json:
        print(json.dumps({"model": pipe.name, "seconds": args.seconds, "seeds": list(seeds), "prompts": list(DEFAULT_PROMPTS), "table": table}, indent=1))
    else:
        keys = list(next(iter(table.values())))
        print("config".ljust(26) + "".join(k[:14].rjust(16) for k in keys))
        for name, row in table.items():
            print(name.ljust(26) + "".join(f"{row[k]:16.4g}" for k in keys))
    return 0
