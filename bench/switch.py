"""Prompt switching and selection stability on the embedded model, measured from the pixels.

    python -m bench.switch > bench/switch.json                 # the shipped weights
    python -m bench.switch --model NAME --seeds 2 --seconds 16  # other weights, a quicker run

Switch: red objects, then the same scene with green ones from 8 s. Per re-cache option,
and a control that never switches (the same frames measured):
green's share of frames before the switch (wanted < 20%), green's share from 3 s after it
(wanted >= 50%), red's share after / before (wanted < 30%), and the re-cache's cost. A
frame "has" a colour when the model's evaluator detects an object of that colour in it.
Stability: the same videos without a switch, selection hysteresis off and on: mean
selection change per block, frame-to-frame flicker (mean |frame - previous|, 0-255,
across block boundaries and inside blocks), and the evaluator's revisit metrics.
Prints JSON; every number is a mean over prompts x seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from packforcing import registry
from packforcing.config import RECACHE_MODES
from packforcing.events import Block, Frames, Switch
from packforcing.pipeline import PackForcingPipeline

SWITCHES = (
    ("a red circle, camera pans right", "a green circle, camera pans right"),
    ("a red square and a blue circle", "a green square and a blue circle"),
)
STABILITY_PROMPTS = ("a red circle and a blue square, camera pans right",
                     "a yellow triangle and a green circle, slow pan left")
WANTED = {"green_before": "< 0.2", "green_after": ">= 0.5", "red_after_over_before": "< 0.3"}


def run(pipe, prompt, seconds, seed, config):
    frames, blocks, switches = [], [], []
    for event in pipe.stream(prompt, seconds, seed, config):
        if isinstance(event, Frames):
            frames.append(event.frames)
        elif isinstance(event, Block):
            blocks.append(event)
        elif isinstance(event, Switch):
            switches.append(event)
    return np.concatenate(frames), blocks, switches


def colour_share(frames, colour: str) -> float | None:
    from packforcing.embedded.metrics import detect

    if len(frames) == 0:
        return None
    return float(np.mean([any(obj[0] == colour for obj in objs) for objs in detect(frames)]))


def _log(what: str, row: dict) -> dict:
    print(what, json.dumps(row), file=sys.stderr, flush=True)  # partial results while it runs
    return row


def switch_row(pipe, mode, at, seconds, seeds, pairs) -> dict:
    rows = []
    for before, after in pairs:
        for seed in range(seeds):
            schedule = [(0, before)] if mode == "no switch" else [(0, before), (at, after)]
            frames, blocks, switches = run(pipe, schedule, seconds, seed,
                                           pipe.default_config.replace(recache="none" if mode == "no switch" else mode))
            first = next(b.block for b in blocks if b.video_seconds > at)  # the first block at or after the switch
            start = {b.block: b.frames_total for b in blocks}.get(first - 1, 0)
            settled = start + 3 * pipe.fps
            red_before = colour_share(frames[:start], "red")
            red_after = colour_share(frames[settled:], "red")
            rows.append({
                "green_before": colour_share(frames[:start], "green"),
                "green_after": colour_share(frames[settled:], "green"),
                "red_before": red_before,
                "red_after": red_after,
                "red_after_over_before": None if not red_before else red_after / red_before,
                "recache_seconds": switches[0].seconds if switches else None,
                "recached_blocks": len(switches[0].recached) if switches else None,
            })
    return _log(f"recache={mode}", _mean(rows))


def flicker(frames, frames_total: list[int]) -> dict:
    diffs = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # diffs[t]: frame t+1 vs t
    boundary = np.zeros(len(diffs), bool)
    boundary[[t - 1 for t in frames_total[:-1]]] = True  # the first frame of each block vs the last of the one before
    return {"flicker": float(diffs.mean()), "flicker_at_block_boundaries": float(diffs[boundary].mean()),
            "flicker_inside_blocks": float(diffs[~boundary].mean())}


def stability_row(pipe, hysteresis, seconds, seeds, prompts) -> dict:
    evaluator = registry.get(pipe.name).evaluator
    rows = []
    for prompt in prompts:
        for seed in range(seeds):
            frames, blocks, _ = run(pipe, prompt, seconds, seed,
                                    pipe.default_config.replace(selection_hysteresis=hysteresis))
            changes = [b.selection_change for b in blocks if b.selection_change is not None]
            row = {"selection_change": statistics.mean(changes) if changes else None,
                   **flicker(frames, [b.frames_total for b in blocks])}
            if evaluator is not None:
                scores = evaluator.score(frames, blocks, prompt, seed)
                row.update({k: scores.get(k)
                            for k in ("revisit_consistency", "revisit_contrast", "revisit_source_attended",
                                      "faithfulness")})
            rows.append(row)
    return _log(f"hysteresis={hysteresis}", _mean(rows))


def _mean(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(statistics.mean(values), 4) if values else None
    out["runs"] = len(rows)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the switch videos")
    p.add_argument("--switch-at", type=float, default=8.0)
    p.add_argument("--stability-seconds", type=float, default=32.0)
    p.add_argument("--hysteresis", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    p.add_argument("--prompts", type=int, default=2, help="use the first N prompt pairs and stability prompts")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (the embedded model runs op by op: one is fastest)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs, prompts = SWITCHES[: args.prompts], STABILITY_PROMPTS[: args.prompts]
    pipe = PackForcingPipeline.from_name(args.model)
    started = time.perf_counter()
    out = {
        "model": args.model,
        "command": "python -m bench.switch " + " ".join(argv or []),
        "switch": {"prompts": pairs, "at_seconds": args.switch_at, "seconds": args.seconds, "seeds": args.seeds,
                   "wanted": WANTED,
                   "by_recache": {mode: switch_row(pipe, mode, args.switch_at, args.seconds, args.seeds, pairs)
                                  for mode in ("no switch", *RECACHE_MODES)}},
        "stability": {"prompts": prompts, "seconds": args.stability_seconds, "seeds": args.seeds,
                      "by_hysteresis": {str(h): stability_row(pipe, h, args.stability_seconds, args.seeds, prompts)
                                        for h in args.hysteresis}},
    }
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
