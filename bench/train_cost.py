"""Training cost side by side: revisit blocks trained per CPU-minute under two recipes,
their steps interleaved in one process (so machine noise falls on both alike); prints JSON.

    OMP_NUM_THREADS=1 python -m bench.train_cost --steps 6 \\
        packforcing/embedded/recipes/v11.json packforcing/embedded/recipes/v12.json

A revisit block is one clip's block whose place only the mid bank holds (the blocks that
teach recall); a step trains `batch` clips. Steps from fresh weights, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile

import torch

from packforcing.embedded.camera_data import is_mid_revisit, revisit_sources, sample_path
from packforcing.embedded.panorama import positions
from packforcing.embedded.train import Run, TrainConfig


def expected_revisits(tc: TrainConfig, draws: int = 4000) -> float:
    """Mean revisit blocks per clip over the recipe's camera paths (many draws, no model)."""
    rng = random.Random(0)
    total = 0
    for _ in range(draws):
        total += sum(map(is_mid_revisit, revisit_sources(positions(sample_path(rng, tc.blocks, tc.paths)))))
    return total / draws


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="+")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    runs, rows = {}, {r: [] for r in args.recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for i, recipe in enumerate(args.recipes):
            runs[recipe] = Run(TrainConfig.from_file(recipe, threads=1), f"{tmp}/{i}")
        for _ in range(args.steps):
            for recipe, run in runs.items():
                rows[recipe].append(run.train_step())
    out = {}
    for recipe, rs in rows.items():
        cpu = sum(r["cpu_seconds"] for r in rs[1:])  # the first step warms caches
        revisits = sum(r["revisit_blocks"] for r in rs[1:])
        out[recipe] = {"steps": len(rs) - 1, "cpu_seconds_per_step": round(cpu / (len(rs) - 1), 2),
                       "revisit_blocks_per_step": revisits / (len(rs) - 1),
                       "trained_blocks_per_step": sum(r["trained_blocks"] for r in rs[1:]) / (len(rs) - 1),
                       "revisit_blocks_per_cpu_minute": round(60 * revisits / cpu, 1)}
        tc = runs[recipe].tc
        out[recipe]["expected_revisit_blocks_per_step"] = round(expected_revisits(tc) * tc.batch, 2)
        out[recipe]["expected_revisit_blocks_per_cpu_minute"] = round(
            60 * out[recipe]["expected_revisit_blocks_per_step"] / out[recipe]["cpu_seconds_per_step"], 1)
    for key in ("revisit_blocks_per_cpu_minute", "expected_revisit_blocks_per_cpu_minute"):
        first = out[args.recipes[0]][key]
        for row in out.values():
            row[key.replace("_per_cpu_minute", "_ratio_to_first")] = round(row[key] / first, 2) if first else None
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
