"""Ablation lab: the same prompts and seeds under every memory policy, each video scored
by its model's evaluator (packforcing.registry) plus the memory and speed of the run.

    python -m packforcing ablate --seconds 32 --json
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np

from .config import PackForcingConfig
from .events import Block, Frames
from .registry import Evaluator


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


def run_one(pipe, prompt: str, seconds: float, seed: int, config: PackForcingConfig,
            evaluator: Evaluator | None) -> dict:
    frames, blocks = [], []
    for event in pipe.stream(prompt, seconds, seed, config):
        if isinstance(event, Frames):
            frames.append(event.frames)
        elif isinstance(event, Block):
            blocks.append(event)
    scores = evaluator.score(np.concatenate(frames), blocks, prompt, seed) if evaluator else {}
    return {
        **{k: v for k, v in scores.items() if isinstance(v, (int, float))},
        "kv_bytes_last": blocks[-1].kv_bytes,
        "kv_bytes_first_full_bank": blocks[min(len(blocks) - 1, len(blocks) // 2)].kv_bytes,
        "seconds_per_block": statistics.mean(b.seconds for b in blocks),
        "video_seconds_per_second": blocks[-1].video_seconds / sum(b.seconds for b in blocks),
    }


def ablate(pipe, seconds: float, seeds=(0, 1), prompts=None, progress=None, base: PackForcingConfig | None = None,
           evaluator: Evaluator | None = None) -> dict[str, dict]:
    """Per configuration, the mean of every metric over prompts x seeds, plus `<metric>_sem`
    (standard error of that mean) for the evaluator's `spread` metrics. Metrics a video
    is too short for are left out. `base` (default: the model's own config) is what every
    configuration varies; `prompts` default to the evaluator's."""
    prompts = tuple(prompts or (evaluator.prompts if evaluator else ()))
    if not seeds or not prompts:
        raise ValueError(f"seeds={list(seeds)} and prompts={list(prompts)} must both be non-empty")
    spread = evaluator.spread if evaluator else ()
    table = {}
    for name, config in ablation_configs(base or pipe.default_config).items():
        rows = [run_one(pipe, p, seconds, s, config, evaluator) for p in prompts for s in seeds]
        keys = [k for k in rows[0] if all(k in r for r in rows)]
        table[name] = {k: statistics.mean(r[k] for r in rows) for k in keys}
        for k in spread:
            if k in keys:
                deviation = statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0
                table[name][f"{k}_sem"] = deviation / len(rows) ** 0.5
        if progress:
            progress(name, table[name])
    return table


def main(args) -> int:
    from . import registry
    from .pipeline import PackForcingPipeline

    if args.seeds < 1:
        raise ValueError(f"seeds={args.seeds} is out of range; allowed 1 or more (seeds 0..N-1 are run)")
    ready = (n for n, e in registry.entries().items() if e.evaluator and e.unavailable() is None)
    name = args.model or next(ready, None)
    if name is None:
        raise ValueError("no model with an evaluator can run here; pass --model")
    entry = registry.get(name)
    pipe = PackForcingPipeline.from_name(name)
    seeds = tuple(range(args.seeds))
    table = ablate(pipe, args.seconds, seeds, evaluator=entry.evaluator,
                   progress=lambda n, r: print(f"{n}: done", file=sys.stderr))
    prompts = list(entry.evaluator.prompts) if entry.evaluator else []
    if args.json:
        print(json.dumps({"model": pipe.name, "seconds": args.seconds, "seeds": list(seeds), "prompts": prompts,
                          "table": table}, indent=1))
    else:
        keys = list(next(iter(table.values())))
        print("config".ljust(26) + "".join(k[:14].rjust(16) for k in keys))
        for name, row in table.items():
            print(name.ljust(26) + "".join(f"{row[k]:16.4g}" for k in keys))
    return 0
