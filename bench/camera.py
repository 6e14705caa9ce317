"""The v11 embedded model's camera and memory metrics, from pixels and the trace; prints JSON.

    OMP_NUM_THREADS=1 python -m bench.camera --weights assets/embedded --seeds 6 > bench/camera.json

Prompts and seeds are chosen apart from training (training draws layouts from random
2**31 seeds and random object sets). Per (prompt, seed), with the model's camera path:
- colours: every named colour's share of frames (>= MIN_PIXELS pixels of it) in each
  third of a 30-s looping pan; the worst share over colours and thirds (target >= 0.2).
- pan: share of frame pairs 2 apart whose horizontal shift, estimated from pixels, is the
  camera's within 1 px (the video moves the way the path says, and is not noise); also
  over blocks 0-7 alone and over the blocks that revisit a place only the mid bank holds.
- loop: blocks 10-15 of a looping pan against the frames one loop earlier (mean absolute
  difference of 4x4-pooled frames, 0-255), per memory policy.
- outback: `right:8,left:8`, blocks 12-13 against the earlier frames at the same camera
  position (blocks 4-2), per policy.
- source hit: share of blocks revisiting a place only the mid bank holds whose dynamic
  selection attended a block that filmed it.
- faithfulness: packforcing's Jaccard of asked and seen (colour, shape) pairs.
Means with standard errors over prompts x seeds; ratios of the means.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from packforcing.camera import CameraPath
from packforcing.embedded import camera_model, metrics
from packforcing.embedded import panorama as world
from packforcing.embedded.camera_data import is_mid_revisit, revisit_sources
from packforcing.events import Block, Frames
from packforcing.pipeline import PackForcingPipeline

PROMPTS = (
    "a red circle and a blue square",
    "a green triangle and a yellow circle",
    "a white square and a red triangle",
)
MIN_PIXELS = 40
FPB = 16


def generate(pipe, prompt: str, seconds: float, seed: int, camera: str, **config):
    cfg = pipe.default_config.replace(**config)
    frames, blocks = [], []
    for e in pipe.stream(prompt, seconds, seed, cfg, camera=camera):  # camera None: the prompt's pan
        if isinstance(e, Frames):
            frames.append(e.frames)
        elif isinstance(e, Block):
            blocks.append(e)
    return np.concatenate(frames), blocks


def pooled(frames: np.ndarray) -> np.ndarray:
    t, h, w, _ = frames.shape
    return frames.astype(np.float32).reshape(t, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4))


def revisit_mae(frames: np.ndarray, xs: np.ndarray, first: int, last: int, period: int = world.PERIOD) -> float:
    """Frames first..last-1 against the latest earlier frame with the same camera x."""
    p = pooled(frames)
    x = np.round(xs).astype(int) % period
    errs = []
    for f in range(first, last):
        earlier = np.nonzero(x[:f] == x[f])[0]
        if len(earlier):
            errs.append(np.abs(p[f] - p[earlier[-1]]).mean())
    return float(np.mean(errs))


def colour_worst_share(frames: np.ndarray, spec) -> float:
    cmap = metrics.colour_map(frames)
    thirds = np.array_split(np.arange(len(frames)), 3)
    shares = []
    for colour in {c for c, _ in spec.objects}:
        seen = (cmap == metrics.vocab.COLOURS.index(colour)).sum(axis=(1, 2)) >= MIN_PIXELS
        shares += [float(seen[t].mean()) for t in thirds]
    return min(shares)


def pan_hits(frames: np.ndarray, xs: np.ndarray, lag: int = 2) -> np.ndarray:
    """Per frame pair (f, f + lag): is the pixel shift the camera's within 1 px?"""
    est = metrics.pan_estimate(frames, lag=lag, max_shift=12, stride=1)
    want = (xs[lag:] - xs[:-lag])[: len(est)]
    return np.abs(est - want) <= 1


def pan_accuracy(frames: np.ndarray, xs: np.ndarray, lag: int = 2) -> float:
    return float(np.mean(pan_hits(frames, xs, lag)))


def pan_where(frames: np.ndarray, xs: np.ndarray) -> dict:
    """Pan accuracy over the whole video, over the first loop (before any revisit) and on
    blocks that revisit a place only the mid bank holds: reading the bank must not cost the
    motion."""
    hits = pan_hits(frames, xs)
    block = np.arange(len(hits)) // FPB
    rows = revisit_sources(xs)
    revisit = np.array([b < len(rows) and is_mid_revisit(rows[b]) for b in block])
    return {"pan_accuracy": float(hits.mean()),
            "pan_first_blocks": float(hits[block < world.LOOP_SECONDS].mean()),
            "pan_mid_revisits": float(hits[revisit].mean()) if revisit.any() else None}


def source_hit(blocks, xs: np.ndarray) -> list[float]:
    rows = revisit_sources(xs)
    return [
        float(bool(set(b.mid_selected) & set(rows[b.block]["mid"])))
        for b in blocks
        if b.block < len(rows) and is_mid_revisit(rows[b.block])
    ]


def source_chance(blocks, xs: np.ndarray) -> list[float]:
    """The same blocks' hit probability for a selection drawn at random from the bank."""
    rows = revisit_sources(xs)
    out = []
    for b in blocks:
        if b.block < len(rows) and is_mid_revisit(rows[b.block]):
            n, k = len(b.mid_bank), len(b.mid_selected)
            s = len(set(rows[b.block]["mid"]) & set(b.mid_bank))
            out.append(1.0 - math.comb(n - s, k) / math.comb(n, k) if n else 0.0)
    return out


def camera_xs(path: str, blocks: int) -> np.ndarray:
    return world.positions(CameraPath.parse(path).directions(blocks, 1.0))


def one(pipe, prompt: str, seed: int, ablations: bool) -> dict:
    spec = world.spec_from_prompt(prompt, seed)
    loop = f"{spec.pan}:30"
    frames, blocks = generate(pipe, prompt, 30, seed, loop)
    xs30 = camera_xs(loop, 30)
    row = {
        "colour_worst_share": colour_worst_share(frames, spec),
        **pan_where(frames, xs30),
        "faithfulness": metrics.faithfulness(frames, spec)["faithfulness"],
        "loop_dynamic": revisit_mae(frames, xs30, 10 * FPB, 16 * FPB),
        "hits": source_hit(blocks, xs30),
        "chance": source_chance(blocks, xs30),
    }
    policies = {"fifo": dict(policy="fifo"), "window": dict(policy="window")}
    if ablations:
        policies |= {
            "random": dict(policy="random"),
            "no_sink": dict(sink_frames=0),
            "no_rope_repair": dict(rope_repair=False),
        }
    xs16 = camera_xs(loop, 16)
    for name, cfg in policies.items():
        f, _ = generate(pipe, prompt, 16, seed, loop, **cfg)
        row[f"loop_{name}"] = revisit_mae(f, xs16, 10 * FPB, 16 * FPB)
    back = "right:8,left:8"
    xsb = camera_xs(back, 16)
    for name, cfg in {"dynamic": {}, "fifo": dict(policy="fifo"), "window": dict(policy="window")}.items():
        f, b = generate(pipe, prompt, 16, seed, back, **cfg)
        row[f"outback_{name}"] = revisit_mae(f, xsb, 12 * FPB, 14 * FPB)
        if name == "dynamic":
            row["hits"] += source_hit(b, xsb)
            row["chance"] += source_chance(b, xsb)
    return row


def baseline_v10(pipe, prompt: str, seed: int) -> dict:
    """The same measures for the v10 weights (no camera input: the prompt pans 2 px per
    frame, the world's loop is 256 px; faithfulness against the prompt's objects)."""
    from packforcing.embedded.world import spec_from_prompt

    spec = spec_from_prompt(prompt, seed)
    sign = 1 if spec.pan == "right" else -1
    frames, _ = generate(pipe, prompt, 30, seed, None)
    xs = sign * 2.0 * np.arange(len(frames))
    row = {
        "colour_worst_share": colour_worst_share(frames, spec),
        "pan_accuracy": pan_accuracy(frames, xs),
        "faithfulness": metrics.faithfulness(frames, spec)["faithfulness"],
        "loop_dynamic": revisit_mae(frames, xs, 10 * FPB, 16 * FPB, 256),
    }
    for name in ("fifo", "window"):
        f, _ = generate(pipe, prompt, 16, seed, None, policy=name)
        row[f"loop_{name}"] = revisit_mae(f, xs[: len(f)], 10 * FPB, 16 * FPB, 256)
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        if key in ("hits", "chance"):
            values = [np.mean(r[key]) for r in rows if r[key]]
        else:
            values = [r[key] for r in rows if key in r and r[key] is not None]
        if values:
            se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
            out[{"hits": "source_hit", "chance": "source_hit_chance"}.get(key, key)] = {
                "mean": round(float(np.mean(values)), 4),
                "se": se and round(se, 4),
                "n": len(values),
            }
    for kind in ("loop", "outback"):
        dyn = out.get(f"{kind}_dynamic", {}).get("mean")
        for other in ("fifo", "window"):
            if dyn is not None and f"{kind}_{other}" in out:
                out[f"{kind}_dynamic_over_{other}"] = round(dyn / out[f"{kind}_{other}"]["mean"], 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="assets/embedded")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument(
        "--baseline-v10", action="store_true", help="measure the v10 weights (no camera) at --weights instead"
    )
    ap.add_argument(
        "--ablation-seeds", type=int, default=2, help="seeds per prompt that also run random / no sink / no RoPE repair"
    )
    ap.add_argument("--config", default="{}", help='sampling config fields to change, as JSON: {"guidance_scale": 3}')
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.baseline_v10:
        from packforcing.embedded.model import load_embedded

        pipe = PackForcingPipeline(load_embedded(args.weights))
        rows = [baseline_v10(pipe, p, 1000 + s) for p in PROMPTS[: args.prompts] for s in range(args.seeds)]
    else:
        pipe = PackForcingPipeline(camera_model.load(args.weights))
        pipe.backbone.default_config = pipe.default_config.replace(**json.loads(args.config))
        rows = [
            one(pipe, p, 1000 + s, s < args.ablation_seeds) for p in PROMPTS[: args.prompts] for s in range(args.seeds)
        ]
    print(
        json.dumps(
            {
                "weights": args.weights,
                "config": json.loads(args.config),
                "prompts": PROMPTS[: args.prompts],
                "seeds": [1000 + s for s in range(args.seeds)],
                "summary": summary(rows),
                "runs": rows,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
